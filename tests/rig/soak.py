"""``python -m tests.rig.soak``: sustained load across the rig with faults injected, then a report.

    python -m tests.rig.soak [--hosts 5] [--clients 2] [--rate 10] [--minutes 2] [--loss 5] [--delay-ms 20]
                             [--partition-every S --partition-s D] [--kill-every K] [--attacker]
                             [--json-out PATH]

Builds the rig, starts one node per host, has every node dial every other one, injects the
faults (loss and delay on every host's way out; optionally every S seconds one host in turn cut
off from all the others for D seconds, then healed; every K seconds one node in turn killed
with SIGKILL and restarted from its home), then runs ``tests.rig.load`` inside every
host's namespace, each sending to the echo agents of all the other nodes. Every node's RSS is
sampled at the start, every few seconds and at the end. The report (a table per node plus
totals; ``--json-out`` writes it all as JSON) says what was offered, sent, completed and lost.

With ``--attacker`` the soak runs twice on fresh rigs: once as it is, then again while a hostile
peer (``tests.rig.attacker``, in a namespace of its own) runs every attack in turn against h1.
An honest pinger (``tests.rig.pinger``, another namespace) pings h1 throughout both runs. The
report adds, per attack: what h1 paid (RSS, open fds, CPU), the honest ping RTT and the latency
of honest tasks to and from h1. It passes only if the attacked run lost nothing, its task p99 is
within ``--p99-ratio`` (2) of the run without the attacker, and every node stayed under
``--rss-bound-mb`` and ``--fd-bound``.

Bounded and self-stopping: a hard deadline (the load window plus a margin) tears everything
down and reports what it has. Ctrl-C/SIGTERM do the same. Exit codes: 0 nothing lost, every
node alive, nothing left behind; 1 otherwise; 2 the rig is unavailable here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import queue
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rich.console import Console

from kosmesh.cli.process import NodeProcess, NodeProcessError
from tests.rig import faults
from tests.rig.attack_report import add_probe, attack_phases, compare_runs, render_attacks, victim_task_samples
from tests.rig.load import straggler_bound_s
from tests.rig.netns import Host, Rig, RigError, RigUnavailable, check_available
from tests.rig.nodes import start_nodes
from tests.rig.soak_report import (
    HostRun,
    assemble_report,
    fmt_mb,
    fmt_ms,
    read_cpu_s,
    read_fds,
    read_rss_kib,
    render_report,
)

ROOT = Path(__file__).resolve().parents[2]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SETUP_ALLOWANCE_S = 120.0  # rig, nodes, dials, delayers: seconds on a busy 2-core machine
READY_TIMEOUT_S = 60.0
CLIENT_GRACE_S = 15.0  # after its own bound, a load client gets this long to print its summary
CLIENT_STOP_S = 5.0  # a load client told to stop early gets this long to print its summary
RSS_EVERY_S = 5.0
ATTACKER, PINGER = -1, -2  # event sources besides the load clients (which are 0..hosts-1)
USAGE_EVERY_S = 1.0  # with --attacker: every node's RSS, fds and CPU this often


class _Stop(Exception):
    """Raised by the signal handler: unwinds to the teardown from wherever the signal lands."""


class _Deadline(_Stop):
    """The hard deadline passed."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Deadline if signum == signal.SIGALRM else _Stop


@dataclass
class _Client:
    run: HostRun
    proc: subprocess.Popen[str]


def _pump(index: int, stream: IO[str], events: queue.Queue[tuple[int, str | None]]) -> None:
    for line in stream:
        events.put((index, line))
    events.put((index, None))


def _pump_stderr(run: HostRun, stream: IO[str]) -> None:
    for line in stream:
        run.client_stderr.append(line.rstrip())
        del run.client_stderr[:-50]


def _load_argv(args: argparse.Namespace, node: NodeProcess, peers: list[NodeProcess], label: str) -> list[str]:
    argv = [sys.executable, "-m", "tests.rig.load", "--home", str(node.home), "--label", label,
            "--clients", str(args.clients), "--rate", str(args.rate), "--seconds", str(args.seconds),
            "--timeout", str(args.timeout), "--retries", str(args.retries),
            "--wait-go", "--raw-latencies", "--progress-s", "2"]  # fmt: skip
    for peer in peers:
        argv += ["--target", f"klp://{peer.peer_id}/agents/echo", "--connect", peer.addrs[0]]
    return argv


@dataclass
class PartitionChurn:
    """Every ``every_s`` of the load window, the next host in turn is cut off from all the others
    for ``cut_s``, then healed: links that flap while tasks are in flight."""

    hosts: int
    every_s: float
    cut_s: float
    window_s: float
    cut_host: int | None = None
    heal_at: float | None = None
    cuts: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.next_cut: float | None = self.every_s if 0 < self.every_s < self.window_s else None

    def next_wake(self) -> float | None:
        times = [t for t in (self.next_cut, self.heal_at) if t is not None]
        return min(times) if times else None

    def step(self, elapsed: float) -> tuple[str, int] | None:
        """What to do now, if anything: ``("cut", host index)`` or ``("heal", host index)``."""
        if self.heal_at is not None and elapsed >= self.heal_at and self.cut_host is not None:
            host, self.cut_host, self.heal_at = self.cut_host, None, None
            self.cuts[-1]["healed_at_s"] = round(elapsed, 2)
            return "heal", host
        if self.cut_host is None and self.next_cut is not None and elapsed >= self.next_cut:
            host = len(self.cuts) % self.hosts
            self.cut_host, self.heal_at = host, elapsed + self.cut_s
            following = self.next_cut + self.every_s
            self.next_cut = following if following < self.window_s else None
            self.cuts.append({"host": f"h{host + 1}", "cut_at_s": round(elapsed, 2), "healed_at_s": None})
            return "cut", host
        return None


@dataclass
class KillChurn:
    """Every ``every_s`` of the load window (half a period after the cuts start), the next host in
    turn has its node killed with SIGKILL and restarted from its home at once."""

    hosts: int
    every_s: float
    window_s: float
    kills: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        first = self.every_s / 2
        self.next_kill: float | None = first if self.every_s > 0 and first < self.window_s else None

    def step(self, elapsed: float) -> int | None:
        """The index of the host whose node to kill now, if any."""
        if self.next_kill is None or elapsed < self.next_kill:
            return None
        host = len(self.kills) % self.hosts
        following = self.next_kill + self.every_s
        self.next_kill = following if following < self.window_s else None
        self.kills.append({"host": f"h{host + 1}", "killed_at_s": round(elapsed, 2), "back_after_s": None})
        return host


class Soak:
    """One soak run; ``run()`` always tears down, and everything seen is kept for the report.

    ``probe``: two more namespaces, an honest pinger of h1 in one, and every node's usage sampled
    each second; ``attacker``: the hostile peer runs from the other one during the load.
    """

    def __init__(
        self, args: argparse.Namespace, console: Console, *, probe: bool = False, attacker: bool = False
    ) -> None:
        self.args = args
        self.console = console
        self.probe = probe or attacker
        self.with_attacker = attacker
        self.rig = Rig(args.hosts + (2 if self.probe else 0))
        self.aux: dict[int, subprocess.Popen[str]] = {}
        self.aux_done: set[int] = set()
        self.attack_events: list[dict[str, Any]] = []
        self.ping_events: list[dict[str, Any]] = []
        self.nodes: list[NodeProcess] = []
        self.delayers: list[faults.Delayer] = []
        self.clients: list[_Client] = []
        self.runs: list[HostRun] = []
        self.events: queue.Queue[tuple[int, str | None]] = queue.Queue()
        self.go_at: float | None = None
        self.leftovers: list[str] | None = None
        self.stop_all_s: float | None = None
        self.deadline_hit = False
        self.stopped_by_signal = False
        self.failure: str | None = None
        self.churn = PartitionChurn(args.hosts, args.partition_every, args.partition_s, args.seconds)
        self.killer = KillChurn(args.hosts, args.kill_every, args.seconds)

    @property
    def straggler_bound_s(self) -> float:
        return straggler_bound_s(self.args.timeout, self.args.retries)

    def run(self, homes: Path) -> None:
        try:
            self._setup(homes)
            self._load()
        except _Deadline:
            self.deadline_hit = True
        except _Stop:
            self.stopped_by_signal = True
        except (RigError, NodeProcessError, OSError) as exc:
            self.failure = f"error: {exc}"
        finally:
            signal.alarm(0)
            for sig in (*STOP_SIGNALS, signal.SIGALRM):
                signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the teardown short
            self._teardown()

    def _say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)

    def _setup(self, homes: Path) -> None:
        args = self.args
        self.rig.up()
        self._say(f"rig {self.rig.suffix}: {args.hosts} hosts in {self.rig.setup_s:.3f} s")
        node_hosts = self.rig.hosts[: args.hosts]
        start_nodes(self.rig, homes, self.nodes, hosts=node_hosts)
        for host, node in zip(node_hosts, self.nodes, strict=True):
            assert node.proc is not None
            self.runs.append(HostRun(f"h{host.index}", peer_id=node.peer_id, node_pid=node.proc.pid))
        self._say(f"{len(self.nodes)} nodes running; dialling a full mesh")
        for index, (host, node) in enumerate(zip(node_hosts, self.nodes, strict=True)):
            peers = [peer for peer in self.nodes if peer is not node]
            self._start_client(index, host, _load_argv(args, node, peers, f"h{host.index}"))
        self._await_ready()
        if args.loss or args.delay_ms or args.partition_every:
            faults.prepare(self.rig)
            for host in self.rig.hosts:
                if args.loss:
                    faults.set_loss(self.rig, host, args.loss)
                if args.delay_ms:
                    self.delayers.append(faults.Delayer(self.rig, host, args.delay_ms).start())
        self._say(f"faults on every host's way out: {args.loss}% loss, {args.delay_ms:g} ms delay")
        if args.partition_every:
            self._say(f"every {args.partition_every:g} s one host is cut off from the rest for {args.partition_s:g} s")

    def _start_client(self, index: int, host: Host, argv: list[str]) -> None:
        proc = subprocess.Popen(
            host.exec_argv(argv), cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,  # Ctrl-C reaches the soak, which stops the clients itself
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        run = self.runs[index]
        threading.Thread(target=_pump, args=(index, proc.stdout, self.events), daemon=True).start()
        threading.Thread(target=_pump_stderr, args=(run, proc.stderr), daemon=True).start()
        self.clients.append(_Client(run, proc))

    def _handle(self, index: int, line: str | None) -> None:
        if index < 0:
            self._handle_aux(index, line)
            return
        run = self.runs[index]
        if line is None:
            run.client_output_done = True
            return
        try:
            event = json.loads(line)
        except ValueError:
            run.client_stderr.append(line.rstrip())
            return
        kind = event.get("event")
        if kind == "ready":
            run.ready = event
        elif kind == "progress":
            run.progress = event
        elif kind == "summary":
            run.summary = event
        elif kind == "error":
            run.client_stderr.append(str(event.get("error")))

    def _handle_aux(self, index: int, line: str | None) -> None:
        if line is None:
            self.aux_done.add(index)
            return
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            (self.attack_events if index == ATTACKER else self.ping_events).append(event)
            if event.get("event") == "attack":
                self._say(f"[{event['at_s']:6.1f} s] attack: {event['name']}")

    def _start_aux(self, index: int, host: Host, argv: list[str]) -> None:
        proc = subprocess.Popen(
            host.exec_argv(argv), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, start_new_session=True,
        )  # fmt: skip
        assert proc.stdout is not None
        threading.Thread(target=_pump, args=(index, proc.stdout, self.events), daemon=True).start()
        self.aux[index] = proc

    def _await_ready(self) -> None:
        give_up_at = time.monotonic() + READY_TIMEOUT_S
        while any(run.ready is None and not run.client_output_done for run in self.runs):
            remaining = give_up_at - time.monotonic()
            if remaining <= 0:
                raise RigError("load clients did not get ready (dialling their peers) in time")
            with contextlib.suppress(queue.Empty):
                self._handle(*self.events.get(timeout=remaining))
        dead = [run.name for run in self.runs if run.ready is None]
        if dead:
            raise RigError(f"load clients exited before they were ready: {', '.join(dead)}")
        failed = [err for run in self.runs for err in (run.ready or {}).get("connect_errors", [])]
        self._say(f"full mesh dialled ({len(failed)} dials failed)")

    def _sample_rss(self) -> None:
        at = 0.0 if self.go_at is None else time.monotonic() - self.go_at
        for run in self.runs:
            run.rss_samples.append((at, read_rss_kib(run.node_pid) if run.node_pid else None))

    def _sample_usage(self) -> None:
        at = 0.0 if self.go_at is None else time.monotonic() - self.go_at
        for run in self.runs:
            pid = run.node_pid
            run.usage.append(
                (at, read_rss_kib(pid), read_fds(pid), read_cpu_s(pid)) if pid else (at, None, None, None)
            )

    def _load(self) -> None:
        args = self.args
        self._sample_rss()
        self.go_at = time.monotonic()
        for client in self.clients:
            assert client.proc.stdin is not None
            client.proc.stdin.write("go\n")
            client.proc.stdin.flush()
        self._say(f"load: {args.hosts} hosts x {args.clients} clients x {args.rate:g} tasks/s for {args.seconds:g} s")
        if self.probe:
            victim = self.nodes[0].addrs[0]
            pinger = [sys.executable, "-m", "tests.rig.pinger", "--target", victim, "--seconds", str(args.seconds)]
            self._start_aux(PINGER, self.rig.hosts[args.hosts + 1], pinger)
            self._sample_usage()
        if self.with_attacker:
            # niced: on this one machine the attacker's own CPU must not starve the honest processes,
            # as it could not on a network, where it is another machine
            attacker = ["nice", "-n", "19", sys.executable, "-m", "tests.rig.attacker",
                        "--target", self.nodes[0].addrs[0], "--seconds", str(args.seconds)]  # fmt: skip
            self._start_aux(ATTACKER, self.rig.hosts[args.hosts], attacker)
            self._say(f"attacker: every attack in turn against h1 for {args.seconds:g} s")
        finish_by = self.go_at + args.seconds + self.straggler_bound_s + CLIENT_GRACE_S
        next_rss = self.go_at + RSS_EVERY_S
        next_usage = self.go_at + USAGE_EVERY_S if self.probe else math.inf
        next_progress = self.go_at + args.progress_s
        while any(run.summary is None and not run.client_output_done for run in self.runs):
            now = time.monotonic()
            if now >= finish_by:
                self.failure = "load clients did not finish within their own bound"
                break
            faults_at = [t for t in (self.churn.next_wake(), self.killer.next_kill) if t is not None]
            wake = min(next_rss, next_usage, next_progress, finish_by,
                       self.go_at + min(faults_at, default=math.inf))  # fmt: skip
            with contextlib.suppress(queue.Empty):
                self._handle(*self.events.get(timeout=max(0.01, wake - now)))
            now = time.monotonic()
            self._churn(now - self.go_at)
            self._kill(now - self.go_at)
            if now >= next_rss:
                self._sample_rss()
                next_rss += RSS_EVERY_S
            if now >= next_usage:
                self._sample_usage()
                next_usage += USAGE_EVERY_S
            if now >= next_progress:
                self._print_progress(now - self.go_at)
                next_progress += args.progress_s
        self._sample_rss()
        if self.probe:
            self._sample_usage()
        self._print_progress(time.monotonic() - self.go_at)

    def _kill(self, elapsed: float) -> None:
        index = self.killer.step(elapsed)
        if index is None:
            return
        node, run = self.nodes[index], self.runs[index]
        node.kill()  # SIGKILL, under load
        started = time.monotonic()
        node.start()  # from its home: same identity, same address, the tasks it kept
        self.killer.kills[-1]["back_after_s"] = round(time.monotonic() - started, 2)
        assert node.proc is not None
        run.node_pid = node.proc.pid
        run.restarts += 1
        back = self.killer.kills[-1]["back_after_s"]
        self._say(f"[{elapsed:6.1f} s] killed h{index + 1} (kill -9); back in {back} s")

    def _churn(self, elapsed: float) -> None:
        action = self.churn.step(elapsed)
        if action is None:
            return
        kind, index = action
        hosts = self.rig.hosts
        if kind == "cut":
            faults.partition(self.rig, [hosts[index]], [h for h in hosts if h is not hosts[index]])
        else:
            faults.heal(self.rig)
        self._say(f"[{elapsed:6.1f} s] {'cut off' if kind == 'cut' else 'healed'} h{index + 1}")

    def _print_progress(self, elapsed: float) -> None:
        seen = [run.summary or run.progress or {} for run in self.runs]
        completed = sum(int(s.get("completed", 0)) for s in seen)
        # Each client's own clock: the soak hears of progress up to 2 s late, which would drag a rate on its clock.
        rate = sum(int(s.get("completed", 0)) / s["elapsed_s"] for s in seen if s.get("elapsed_s"))
        errors = sum(
            sum(s["errors"].values()) if isinstance(s.get("errors"), dict) else int(s.get("errors", 0)) for s in seen
        )
        lost = sum(int(run.summary["lost"]) for run in self.runs if run.summary is not None)
        rss = [run.rss_samples[-1][1] for run in self.runs if run.rss_samples and run.rss_samples[-1][1]]
        self._say(
            f"[{elapsed:6.1f} s] completed {completed:>7}  {rate:7.1f}/s  "
            f"errors {errors:>5}  lost {lost:>4}  max RSS {fmt_mb(max(rss) if rss else None)} MB"
        )

    def _teardown(self) -> None:
        started = time.monotonic()
        for run, node in zip(self.runs, self.nodes, strict=False):
            if node.proc is not None:
                run.node_exit_code = node.proc.poll()
                run.alive_at_end = run.node_exit_code is None
        for proc in self.aux.values():
            if proc.poll() is None:
                proc.terminate()  # the attacker and the pinger stop on SIGTERM
        for client in self.clients:
            if client.proc.poll() is None:
                client.proc.terminate()  # a load client stops sending on SIGTERM and still prints its summary
        give_up_at = time.monotonic() + CLIENT_STOP_S
        while any(not client.run.client_output_done for client in self.clients) or set(self.aux) - self.aux_done:
            remaining = give_up_at - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(queue.Empty):
                self._handle(*self.events.get(timeout=remaining))
        for client in self.clients:
            if client.proc.poll() is None:
                client.proc.kill()  # `ip netns exec` execs python, so this is the client itself
            client.proc.wait()
            client.run.client_exit_code = client.proc.returncode
            if client.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    client.proc.stdin.close()
        for proc in self.aux.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        if self.churn.cut_host is not None:
            with contextlib.suppress(RigError):
                faults.heal(self.rig)  # so the nodes' own shutdown is not held up by the cut
        for delayer in self.delayers:
            delayer.stop()
        for node in self.nodes:
            node.stop(timeout=5)
        self.rig.down()
        self.leftovers = self.rig.leftovers()
        self.stop_all_s = time.monotonic() - started

    def report(self) -> dict[str, Any]:
        args = self.args
        config = {
            "hosts": args.hosts, "clients": args.clients, "rate": args.rate, "seconds": args.seconds,
            "loss": args.loss, "delay_ms": args.delay_ms, "timeout": args.timeout, "retries": args.retries,
            "partition_every_s": args.partition_every, "partition_s": args.partition_s, "partitions": self.churn.cuts,
            "kill_every_s": args.kill_every, "kills": self.killer.kills,
            "command": "python -m tests.rig.soak " + shlex.join(args.argv),
        }  # fmt: skip
        report = assemble_report(
            config, self.runs, setup_s=self.rig.setup_s, teardown_s=self.rig.teardown_s, stop_all_s=self.stop_all_s,
            leftovers=self.leftovers,
            deadline_hit=self.deadline_hit, stopped_by_signal=self.stopped_by_signal, failure=self.failure,
        )  # fmt: skip
        if self.probe:
            add_probe(report, self.runs, self.ping_events, rss_bound_mb=args.rss_bound_mb, fd_bound=args.fd_bound)
        if self.with_attacker and self.runs:
            report["attacks"] = attack_phases(
                self.attack_events, self.ping_events, self.runs[0], victim_task_samples(self.runs)
            )
        return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.rig.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--clients", type=int, default=2, help="load clients per host")
    parser.add_argument("--rate", type=float, default=10.0, help="tasks per second per client")
    parser.add_argument("--minutes", type=float, default=2.0, help="how long the load runs")
    parser.add_argument("--seconds", type=float, default=None, help="overrides --minutes (short runs)")
    parser.add_argument("--loss", type=int, default=5, help="percent of packets dropped on each host's way out")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="delay added on each host's way out")
    parser.add_argument("--partition-every", type=float, default=0.0,
                        help="cut one host (in turn) off from the others this often, in seconds (0: never)")
    parser.add_argument("--partition-s", type=float, default=3.0, help="how long each cut lasts")
    parser.add_argument("--kill-every", type=float, default=0.0,
                        help="kill -9 one node (in turn) this often, in seconds; it restarts from its home (0: never)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per task attempt")
    parser.add_argument("--retries", type=int, default=3, help="attempts after the first")
    parser.add_argument("--progress-s", type=float, default=10.0, help="seconds between progress lines")
    parser.add_argument("--attacker", action="store_true",
                        help="run twice: without, then with a hostile peer running every attack against h1")
    parser.add_argument("--p99-ratio", type=float, default=2.0,
                        help="with --attacker: the honest p99 may grow at most this much")
    parser.add_argument("--rss-bound-mb", type=float, default=200.0, help="with --attacker: no node's RSS above this")
    parser.add_argument("--fd-bound", type=int, default=512, help="with --attacker: no node's open fds above this")
    parser.add_argument("--json-out", type=Path, default=None, help="write the whole report here as JSON")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    args.seconds = args.seconds if args.seconds is not None else args.minutes * 60
    if args.hosts < 2:
        parser.error("a soak needs at least 2 hosts")
    if args.clients < 1 or args.rate <= 0 or args.seconds <= 0 or args.timeout <= 0 or args.retries < 0:
        parser.error("clients, rate, minutes and timeout must be positive, retries not negative")
    if args.kill_every < 0:
        parser.error("--kill-every must not be negative")
    cut_too_long = bool(args.partition_every) and args.partition_s >= args.partition_every
    if args.partition_every < 0 or args.partition_s <= 0 or cut_too_long:
        parser.error("partitions: --partition-s must be positive and shorter than --partition-every")
    if not 0 <= args.loss <= 100 or args.delay_ms < 0:
        parser.error("loss is a percentage and delay not negative")
    return args


def hard_deadline_s(args: argparse.Namespace) -> float:
    """Setup, the load window, its stragglers and the clients' grace: past this everything is torn down."""
    seconds: float = args.seconds
    return SETUP_ALLOWANCE_S + seconds + straggler_bound_s(args.timeout, args.retries) + CLIENT_GRACE_S


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console() if sys.stdout.isatty() else Console(width=160)  # piped: do not squeeze the table to 80
    try:
        check_available()
        if args.loss or args.delay_ms:
            faults.check_available()
    except RigUnavailable as exc:
        print(f"rig unavailable: {exc}", file=sys.stderr)
        return 2
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    signal.signal(signal.SIGALRM, _raise_stop)
    signal.alarm(max(1, round(hard_deadline_s(args) * (2 if args.attacker else 1))))
    if args.attacker:
        runs = [Soak(args, console, probe=True), Soak(args, console, attacker=True)]
    else:
        runs = [Soak(args, console)]
    reports = []
    try:
        for soak in runs:
            if args.attacker:
                console.print(f"== {'with the attacker' if soak.with_attacker else 'without the attacker'}")
            with tempfile.TemporaryDirectory(prefix="kosmesh-soak-") as tmp:
                try:
                    soak.run(Path(tmp))
                except RigUnavailable as exc:  # raised by rig.up / faults, after the checks above passed
                    print(f"rig unavailable: {exc}", file=sys.stderr)
                    return 2
            reports.append(soak.report())
            render_report(reports[-1], console)
            render_attacks(reports[-1], console)
            if soak.deadline_hit or soak.stopped_by_signal:
                break
    finally:
        signal.alarm(0)
    report = reports[-1] if not args.attacker else compare_runs(reports, args.p99_ratio)
    if args.attacker:
        console.print(
            f"honest task p99: {fmt_ms(report['comparison']['baseline_p99_ms'])} ms without the attacker, "
            f"{fmt_ms(report['comparison']['attacked_p99_ms'])} ms with it "
            f"(ratio {report['comparison']['ratio'] or '-'}, bound {args.p99_ratio:g})",
            highlight=False,
        )
        verdict = report["verdict"]
        console.print("[green]OK[/]" if verdict["ok"] else "[red]FAILED[/]: " + "; ".join(verdict["problems"]))
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"report written to {args.json_out}", highlight=False)
    return 0 if report["verdict"]["ok"] else 1




if __name__ == "__main__":
    sys.exit(main())
