"""Sustained, paced load from one rig node: C clients x R signed echo tasks/s for S seconds.

Runs inside the sending node's namespace (the control API listens on that namespace's loopback)
and sends every task through ``POST /v1/task``, as ``kosmesh task send`` does.

Open loop: client ``c``'s task ``k`` is due ``k / rate`` seconds after the start (clients are
staggered within one period). A pool of workers per client takes the next due task, waits for
its time and sends it, so a slow reply shows up as latency, and once every worker is busy, as
tasks started late (counted) — never as a quietly lower offered load. Hard bounded: nothing new
starts after ``--seconds``; tasks still in flight get at most ``straggler_bound_s(timeout, retries)`` more
and are then counted lost.

Stdout, one JSON object a line: ``{"event": "ready", ...}`` once the ``--connect`` dials are
done (with ``--wait-go`` it then waits for a ``go`` line on stdin, so several hosts start
together), ``{"event": "progress", ...}`` every ``--progress-s``, and a final
``{"event": "summary", ...}``.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import secrets
import select
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kosmesh.cli.client import ClientError, NodeClient

RETRY_PAUSE_S = 0.5  # before retry n after a failed call: n x this
HTTP_MARGIN_S = 5.0  # the node answers within the task timeout; the HTTP call waits a little longer
MAX_ERROR_TEXT = 200
MAX_DISTINCT_ERRORS = 50


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100): always a value that was measured, None when empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError("a percentile is between 0 and 100")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Schedule:
    """When each of one client's tasks is due, relative to the common start.

    ``offset`` staggers clients so that C clients at R/s do not all fire at the same instant.
    """

    rate: float
    seconds: float
    offset: float = 0.0

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.seconds <= 0:
            raise ValueError("rate and seconds must be positive")

    @property
    def offered(self) -> int:
        """Tasks due inside the window: slots k with offset + k / rate < seconds."""
        span = self.seconds - self.offset
        if span <= 0:
            return 0
        return math.ceil(round(span * self.rate, 9))

    def due(self, slot: int) -> float:
        return self.offset + slot / self.rate


@dataclass
class Tally:
    """What one load process has seen so far; every field is updated under ``lock``."""

    late_after_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    offered: int = 0
    sent: int = 0
    unsent: int = 0  # due inside the window, but no worker was free before the window closed
    late: int = 0  # started more than late_after_s after its due time
    completed: int = 0
    failed: int = 0  # gave up after every retry
    retried: int = 0
    attempts: int = 0
    in_flight: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    # (seconds from the start when the task began, index of its target, latency ms) of completed tasks
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    start_lag_max_ms: float = 0.0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)

    def task_started(self, lag_s: float) -> None:
        with self.lock:
            self.sent += 1
            self.in_flight += 1
            if lag_s > self.late_after_s:
                self.late += 1
            self.start_lag_max_ms = max(self.start_lag_max_ms, lag_s * 1000)

    def attempt_failed(self, error: str) -> None:
        with self.lock:
            if error in self.errors or len(self.errors) < MAX_DISTINCT_ERRORS:
                self.errors[error] += 1
            else:
                self.errors["(other errors)"] += 1

    def task_finished(
        self, ok: bool, attempts: int, latency_s: float, *, began_s: float = 0.0, target: int = 0
    ) -> None:
        with self.lock:
            self.in_flight -= 1
            self.attempts += attempts
            if attempts > 1:
                self.retried += 1
            if ok:
                self.completed += 1
                self.latencies_ms.append(latency_s * 1000)
                self.samples.append((began_s, target, latency_s * 1000))
            else:
                self.failed += 1

    def progress(self, elapsed_s: float) -> dict[str, Any]:
        with self.lock:
            return {
                "event": "progress",
                "elapsed_s": round(elapsed_s, 3),
                "sent": self.sent,
                "completed": self.completed,
                "failed": self.failed,
                "in_flight": self.in_flight,
                "late": self.late,
                "errors": sum(self.errors.values()),
            }

    def summary(self, elapsed_s: float, *, raw_latencies: bool) -> dict[str, Any]:
        """The final line. ``lost`` = sent but never verified (failed, or still in flight at the end)."""
        with self.lock:
            latencies = list(self.latencies_ms)
            out: dict[str, Any] = {
                "event": "summary",
                "offered": self.offered,
                "sent": self.sent,
                "unsent": self.unsent,
                "late": self.late,
                "completed": self.completed,
                "retried": self.retried,
                "attempts": self.attempts,
                "failed": self.failed,
                "stragglers": self.in_flight,
                "lost": self.sent - self.completed,
                "errors": dict(self.errors.most_common()),
                "latency_ms": latency_stats(latencies),
                "start_lag_max_ms": round(self.start_lag_max_ms, 3),
                "throughput_per_s": round(self.completed / elapsed_s, 3) if elapsed_s > 0 else 0.0,
                "elapsed_s": round(elapsed_s, 3),
            }
        if raw_latencies:
            out["latencies_ms"] = [round(v, 2) for v in latencies]
            with self.lock:
                out["samples"] = [[round(t, 3), target, round(ms, 2)] for t, target, ms in self.samples]
        return out


def latency_stats(latencies_ms: list[float]) -> dict[str, float | None]:
    """p50/p99/max in ms, rounded for reading; None where nothing completed."""

    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "p50": rounded(percentile(latencies_ms, 50)),
        "p99": rounded(percentile(latencies_ms, 99)),
        "max": rounded(max(latencies_ms) if latencies_ms else None),
    }


def _short(text: str) -> str:
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def send_verified(
    client: NodeClient, target: str, payload: Any, *, timeout: float, retries: int, give_up_at: float, tally: Tally
) -> tuple[bool, int]:
    """One task, retried up to ``retries`` times; every failed attempt's error is tallied.

    Unlike ``tests.rig.drive.send_with_retries`` this keeps the errors of attempts that a retry
    later fixed (they are what the faults cost), honours a ``deferred`` reply's ``retry_after``,
    and never starts an attempt after ``give_up_at``.
    """
    attempt = 0
    while attempt <= retries and time.monotonic() < give_up_at:
        attempt += 1
        wait_before_retry = 0.0
        try:
            reply = client.call(
                "POST", "/v1/task", {"address": target, "data": payload, "timeout": timeout}, timeout + HTTP_MARGIN_S
            )
        except ClientError as exc:
            tally.attempt_failed(_short(str(exc)))
            # A refused dial or a restarting node fails at once: pause so the retries span the
            # seconds a restart takes instead of being spent in the same instant.
            time.sleep(max(0.0, min(RETRY_PAUSE_S * attempt, give_up_at - time.monotonic())))
            continue
        status = reply.get("status")
        if status == "processed" and reply.get("result") == payload:
            return True, attempt
        if status == "processed":
            tally.attempt_failed("echo returned a different payload")
        else:
            tally.attempt_failed(_short(f"{status}: {reply.get('reason')}"))
            retry_after = reply.get("retry_after")
            if status == "deferred" and isinstance(retry_after, (int, float)):
                wait_before_retry = float(retry_after)
        if wait_before_retry > 0:
            time.sleep(max(0.0, min(wait_before_retry, give_up_at - time.monotonic())))  # the node asked for it
    return False, attempt


def straggler_bound_s(timeout: float, retries: int) -> float:
    """The longest one task can take: every attempt timing out, and the pauses between them."""
    return float(timeout * (retries + 1) + RETRY_PAUSE_S * retries * (retries + 1) / 2)


@dataclass
class LoadPlan:
    home: Path
    targets: list[str]
    clients: int
    rate: float
    seconds: float
    timeout: float
    retries: int
    max_in_flight: int
    label: str

    @property
    def straggler_bound_s(self) -> float:
        """How long a task sent just before the window closes may still take."""
        return straggler_bound_s(self.timeout, self.retries)


class _ClientSlots:
    """Hands out one client's due slots to its workers, in order."""

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            if self._next >= self.schedule.offered:
                return None
            slot = self._next
            self._next += 1
            return slot


def run_load(
    plan: LoadPlan, tally: Tally, *, progress_s: float, raw_latencies: bool, stopping: threading.Event | None = None
) -> dict[str, Any]:
    """Run the paced load; prints progress lines and returns the summary (also printed by the caller).

    Setting ``stopping`` ends the run early: nothing new is sent, tasks in flight count as stragglers,
    and the summary (``stopped_early``) still comes, so whoever stopped it sees what had happened.
    """
    stopping = stopping or threading.Event()
    client = NodeClient(plan.home)
    start = time.monotonic()
    window_end = start + plan.seconds
    give_up_at = window_end + plan.straggler_bound_s
    schedules = [Schedule(plan.rate, plan.seconds, offset=c / (plan.clients * plan.rate)) for c in range(plan.clients)]
    tally.offered = sum(s.offered for s in schedules)
    run_tag = secrets.token_hex(4)

    def worker(client_index: int, slots: _ClientSlots) -> None:
        while (slot := slots.take()) is not None:
            due = start + slots.schedule.due(slot)
            now = time.monotonic()
            if now >= window_end or stopping.is_set() or (due > now and stopping.wait(due - now)):
                with tally.lock:
                    tally.unsent += 1  # due inside the window, but every worker was busy until it closed (or stop)
                continue
            began = time.monotonic()
            tally.task_started(began - due)
            target_index = (client_index + slot) % len(plan.targets)
            target = plan.targets[target_index]
            payload = {"from": plan.label, "run": run_tag, "client": client_index, "seq": slot,
                       "nonce": secrets.token_hex(8)}  # fmt: skip
            ok, attempts = send_verified(
                client, target, payload, timeout=plan.timeout, retries=plan.retries, give_up_at=give_up_at, tally=tally
            )
            tally.task_finished(ok, attempts, time.monotonic() - began, began_s=began - start, target=target_index)

    threads = []
    for c, schedule in enumerate(schedules):
        slots = _ClientSlots(schedule)
        for _ in range(plan.max_in_flight):
            threads.append(threading.Thread(target=worker, args=(c, slots), daemon=True))
    for thread in threads:
        thread.start()
    next_progress = start + progress_s
    for thread in threads:
        while thread.is_alive():
            now = time.monotonic()
            if now >= give_up_at or stopping.is_set():
                break
            if now >= next_progress:
                _emit(tally.progress(now - start))
                next_progress += progress_s
            thread.join(timeout=max(0.01, min(next_progress, give_up_at, now + 0.2) - now))
    # Threads still alive are stragglers past the bound: they are daemons, counted lost, and left behind.
    summary = tally.summary(time.monotonic() - start, raw_latencies=raw_latencies)
    summary["stopped_early"] = stopping.is_set()
    return summary


def connect_all(client: NodeClient, multiaddrs: list[str], deadline_s: float) -> list[str]:
    """Dial each peer through the node (retrying until the deadline); returns the errors of those that failed."""
    errors: list[str] = []
    give_up_at = time.monotonic() + deadline_s
    for addr in multiaddrs:
        last = ""
        while True:
            try:
                client.call("POST", "/v1/connect", {"multiaddr": addr}, timeout=max(1.0, give_up_at - time.monotonic()))
                break
            except ClientError as exc:
                last = str(exc)
            if time.monotonic() >= give_up_at:
                errors.append(f"{addr}: {_short(last)}")
                break
            time.sleep(0.2)  # a retry interval for a peer that is not listening yet, not a wait for a condition
    return errors


def wait_for_go(seconds: float) -> bool:
    """True once a ``go`` line arrives on stdin; False on EOF or after ``seconds``."""
    give_up_at = time.monotonic() + seconds
    while (remaining := give_up_at - time.monotonic()) > 0:
        readable, _, _ = select.select([sys.stdin], [], [], remaining)
        if not readable:
            return False
        line = sys.stdin.readline()
        if not line:
            return False
        if line.strip() == "go":
            return True
    return False


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="the sending node's home")
    parser.add_argument("--target", action="append", required=True, help="klp address (repeatable, round robin)")
    parser.add_argument("--connect", action="append", default=[], help="multiaddr to dial first (repeatable)")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--rate", type=float, default=10.0, help="tasks per second per client")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to send")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per attempt")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--max-in-flight", type=int, default=16, help="workers per client")
    parser.add_argument("--late-ms", type=float, default=100.0, help="a start this far behind schedule is late")
    parser.add_argument("--progress-s", type=float, default=2.0)
    parser.add_argument("--wait-go", action="store_true", help="after ready, wait for a `go` line on stdin")
    parser.add_argument("--go-timeout", type=float, default=120.0)
    parser.add_argument("--connect-timeout", type=float, default=30.0)
    parser.add_argument("--raw-latencies", action="store_true", help="include every latency in the summary")
    parser.add_argument("--label", default=os.uname().nodename)
    args = parser.parse_args(argv)
    if args.clients < 1 or args.rate <= 0 or args.seconds <= 0 or args.max_in_flight < 1 or args.retries < 0:
        parser.error("clients, rate, seconds and max-in-flight must be positive, retries not negative")
    try:
        client = NodeClient(args.home)
    except ClientError as exc:
        _emit({"event": "error", "error": str(exc)})
        return 1
    connect_errors = connect_all(client, args.connect, args.connect_timeout)
    _emit({"event": "ready", "connected": len(args.connect) - len(connect_errors), "connect_errors": connect_errors})
    if args.wait_go and not wait_for_go(args.go_timeout):
        _emit({"event": "error", "error": "no `go` on stdin"})
        return 1
    plan = LoadPlan(args.home, args.target, args.clients, args.rate, args.seconds, args.timeout, args.retries,
                    args.max_in_flight, args.label)  # fmt: skip
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.set())  # stop early, but still report
    tally = Tally(late_after_s=args.late_ms / 1000)
    summary = run_load(plan, tally, progress_s=args.progress_s, raw_latencies=args.raw_latencies, stopping=stopping)
    _emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
