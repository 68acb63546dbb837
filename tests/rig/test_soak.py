"""Sustained load with faults (issue 3, part 4): a short real soak on the rig, and its arithmetic without it."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from kosmesh.node.config import API_FILE, TOKEN_FILE
from tests.rig import faults
from tests.rig.attack_report import attack_phases, compare_runs
from tests.rig.load import LoadPlan, Schedule, Tally, percentile, run_load
from tests.rig.netns import RigUnavailable, check_available
from tests.rig.soak import KillChurn, PartitionChurn
from tests.rig.soak import main as soak_main
from tests.rig.soak_report import HostRun, assemble_report, read_rss_kib, render_report

ROOT = Path(__file__).resolve().parents[2]
SOAK_TIMEOUT_S = 120.0


# -- percentiles and the schedule -------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0  # a measured value, never an interpolation
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_schedule_counts_the_tasks_due_inside_the_window() -> None:
    assert Schedule(10, 10).offered == 100
    assert Schedule(3, 1).offered == 3
    assert Schedule(0.5, 3).offered == 2  # due at 0 and 2 s
    staggered = Schedule(10, 1, offset=0.05)
    assert staggered.offered == 10  # due at 0.05 … 0.95
    assert staggered.due(0) == pytest.approx(0.05)
    assert staggered.due(9) == pytest.approx(0.95)
    assert Schedule(10, 1, offset=2).offered == 0
    with pytest.raises(ValueError):
        Schedule(0, 1)


def test_tally_counts_late_starts_and_loses_what_never_completed() -> None:
    tally = Tally(late_after_s=0.1)
    tally.offered = 4
    for lag in (0.0, 0.05, 0.2, 0.3):
        tally.task_started(lag)
    tally.attempt_failed("boom")
    tally.task_finished(True, 2, 0.050)
    tally.task_finished(True, 1, 0.010)
    tally.task_finished(False, 4, 1.0)  # the fourth is still in flight: a straggler
    summary = tally.summary(2.0, raw_latencies=True)
    assert (summary["sent"], summary["late"], summary["completed"]) == (4, 2, 2)
    assert (summary["failed"], summary["stragglers"], summary["lost"], summary["retried"]) == (1, 1, 2, 2)
    assert summary["errors"] == {"boom": 1}
    assert summary["latency_ms"] == {"p50": 10.0, "p99": 50.0, "max": 50.0}
    assert summary["throughput_per_s"] == 1.0
    assert summary["latencies_ms"] == [50.0, 10.0]
    assert "latencies_ms" not in tally.summary(2.0, raw_latencies=False)


# -- the load client against a stand-in control API ---------------------------------------------------


class _FakeControlAPI(ThreadingHTTPServer):
    """Answers ``POST /v1/task`` like a node's echo agent would, after ``delay_s`` (or with a wrong echo)."""

    daemon_threads = True
    delay_s = 0.0
    corrupt = False


class _Handler(BaseHTTPRequestHandler):
    server: _FakeControlAPI

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(self.server.delay_s)  # the reply time under test
        data = {"changed": True} if self.server.corrupt else body.get("data")
        reply = json.dumps({"status": "processed", "reason": None, "retry_after": None, "result": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_node(tmp_path: Path) -> Iterator[tuple[Path, _FakeControlAPI]]:
    server = _FakeControlAPI(("127.0.0.1", 0), _Handler)
    (tmp_path / API_FILE).write_text(json.dumps({"port": server.server_address[1]}))
    (tmp_path / TOKEN_FILE).write_text("token")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, server
    finally:
        server.shutdown()
        server.server_close()


def _plan(home: Path, **overrides: Any) -> LoadPlan:
    options: dict[str, Any] = {"clients": 2, "rate": 20.0, "seconds": 1.0, "timeout": 2.0, "retries": 1,
                               "max_in_flight": 4}  # fmt: skip
    options.update(overrides)
    return LoadPlan(home=home, targets=["klp://a/agents/echo", "klp://b/agents/echo"], label="test", **options)


def test_load_sends_every_offered_task_and_verifies_each_echo(fake_node: tuple[Path, _FakeControlAPI]) -> None:
    home, _ = fake_node
    summary = run_load(_plan(home), Tally(late_after_s=0.5), progress_s=10, raw_latencies=False)
    assert summary["offered"] == summary["sent"] == summary["completed"] == 40, summary
    assert (summary["lost"], summary["unsent"], summary["errors"]) == (0, 0, {}), summary
    assert summary["elapsed_s"] < 3.0, summary  # paced over the 1 s window, not bursting, not dawdling
    assert summary["elapsed_s"] >= 0.9, summary


def test_slow_replies_show_as_latency_late_starts_and_unsent_not_as_less_offered(
    fake_node: tuple[Path, _FakeControlAPI],
) -> None:
    home, server = fake_node
    server.delay_s = 0.25
    plan = _plan(home, clients=1, rate=10.0, max_in_flight=1)  # one worker: every reply holds up the next task
    summary = run_load(plan, Tally(late_after_s=0.1), progress_s=10, raw_latencies=False)
    assert summary["offered"] == 10, summary
    assert summary["sent"] + summary["unsent"] == 10, summary
    assert summary["unsent"] > 0 and summary["late"] > 0, summary
    assert summary["completed"] == summary["sent"] and summary["lost"] == 0, summary
    assert summary["latency_ms"]["p50"] >= 250, summary


def test_a_wrong_echo_is_an_error_and_the_task_is_lost(fake_node: tuple[Path, _FakeControlAPI]) -> None:
    home, server = fake_node
    server.corrupt = True
    summary = run_load(_plan(home, clients=1, rate=5.0, retries=1), Tally(0.5), progress_s=10, raw_latencies=False)
    assert summary["sent"] == summary["lost"] == summary["failed"] == 5, summary
    assert summary["errors"] == {"echo returned a different payload": 10}, summary  # two attempts each
    assert summary["retried"] == 5 and summary["completed"] == 0, summary


def test_stragglers_past_the_bound_are_counted_lost_and_the_run_still_ends(
    fake_node: tuple[Path, _FakeControlAPI],
) -> None:
    home, server = fake_node
    server.delay_s = 3.0
    plan = _plan(home, clients=1, rate=10.0, seconds=0.3, timeout=0.2, retries=0)
    started = time.monotonic()
    summary = run_load(plan, Tally(0.5), progress_s=10, raw_latencies=False)
    assert time.monotonic() - started < 1.5  # 0.3 s window + 0.2 s straggler bound, not the 3 s replies
    assert summary["sent"] == summary["stragglers"] == summary["lost"] == 3, summary


# -- the report -------------------------------------------------------------------------------------


def _summary(sent: int, completed: int, latencies: list[float], errors: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "event": "summary", "offered": sent, "sent": sent, "unsent": 0, "late": 0, "completed": completed,
        "retried": 1, "failed": sent - completed, "stragglers": 0, "lost": sent - completed,
        "errors": errors or {}, "throughput_per_s": completed / 10, "latencies_ms": latencies,
        "latency_ms": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99), "max": max(latencies)},
    }  # fmt: skip


CONFIG = {"hosts": 2, "clients": 1, "rate": 1.0, "seconds": 10.0, "loss": 5, "delay_ms": 20.0,
          "command": "python -m tests.rig.soak --hosts 2"}  # fmt: skip


def test_report_totals_merge_every_hosts_latencies_and_counts() -> None:
    runs = [
        HostRun("h1", summary=_summary(10, 10, [float(v) for v in range(1, 11)], {"x": 2}),
                rss_samples=[(0.0, 1000), (5.0, 1500), (10.0, 1200)], alive_at_end=True),
        HostRun("h2", summary=_summary(10, 10, [float(v) for v in range(91, 101)], {"x": 1, "y": 1}),
                rss_samples=[(0.0, 2000), (10.0, 2100)], alive_at_end=True),
    ]  # fmt: skip
    report = assemble_report(CONFIG, runs, setup_s=0.1, teardown_s=0.2, leftovers=[], deadline_hit=False,
                             stopped_by_signal=False)  # fmt: skip
    totals = report["totals"]
    assert (totals["sent"], totals["completed"], totals["lost"], totals["retried"]) == (20, 20, 0, 2)
    assert totals["latency_ms"] == {"p50": 10.0, "p99": 100.0, "max": 100.0}  # over all 20, not a mean of p50s
    assert totals["errors"] == {"x": 3, "y": 1}
    assert totals["throughput_per_s"] == 2.0 and totals["load_held"]
    assert report["nodes"][0]["rss"] == {"start_kib": 1000, "end_kib": 1200, "max_kib": 1500, "growth_kib": 200,
                                         "samples": 3}  # fmt: skip
    assert "latencies_ms" not in report["nodes"][0]["load"]  # the raw list only feeds the totals
    assert report["verdict"] == {"ok": True, "problems": []}
    json.dumps(report)  # --json-out writes exactly this
    out = io.StringIO()
    render_report(report, Console(file=out, width=160))
    assert "OK" in out.getvalue() and "left behind: nothing" in out.getvalue()


def test_report_fails_on_loss_a_dead_node_a_missing_summary_and_leftovers() -> None:
    runs = [
        HostRun("h1", summary=_summary(10, 9, [1.0] * 9), alive_at_end=False, node_exit_code=-9),
        HostRun("h2", progress={"sent": 7, "completed": 5}, client_exit_code=1, alive_at_end=True),
    ]
    report = assemble_report(CONFIG, runs, setup_s=0.1, teardown_s=0.2, leftovers=["krig-1-h1"], deadline_hit=True,
                             stopped_by_signal=False)  # fmt: skip
    assert report["totals"]["lost"] == 1 + 2
    problems = " | ".join(report["verdict"]["problems"])
    assert not report["verdict"]["ok"]
    for expected in ("h1: node died", "h1: 1 tasks lost", "h2: load client gave no summary", "deadline",
                     "left behind: krig-1-h1"):  # fmt: skip
        assert expected in problems, problems
    render_report(report, Console(file=io.StringIO(), width=160))


def test_without_the_rig_the_soak_says_why_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # as a normal user: nothing is built, nothing to tear down
    assert soak_main(["--hosts", "2", "--seconds", "1"]) == 2
    assert "rig unavailable: the rig needs root" in capsys.readouterr().err


def test_rss_is_read_from_proc() -> None:
    rss = read_rss_kib(os.getpid())
    assert rss is not None and rss > 1000
    assert read_rss_kib(2**22 + 1) is None  # above pid_max's default: no such process


# -- a short real soak ------------------------------------------------------------------------------


@pytest.mark.rig
@pytest.mark.multiprocess
def test_short_soak_loses_nothing_under_loss_delay_partitions_and_a_kill(tmp_path: Path) -> None:
    try:
        check_available()
        faults.check_available()
    except RigUnavailable as exc:
        pytest.skip(f"rig unavailable: {exc}")
    out = tmp_path / "soak.json"
    hosts, clients, rate, seconds = 3, 2, 5, 10
    argv = [sys.executable, "-m", "tests.rig.soak", "--hosts", str(hosts), "--clients", str(clients),
            "--rate", str(rate), "--seconds", str(seconds), "--loss", "5", "--delay-ms", "20",
            "--partition-every", "4", "--partition-s", "1", "--kill-every", "8", "--json-out", str(out)]  # fmt: skip
    soak = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = soak.communicate(timeout=SOAK_TIMEOUT_S)
    finally:
        if soak.poll() is None:
            soak.send_signal(signal.SIGTERM)  # the soak tears its rig down on SIGTERM
            output, _ = soak.communicate(timeout=60)
    print(output)
    report = json.loads(out.read_text())
    totals = report["totals"]
    assert soak.returncode == 0, report["verdict"]
    offered = hosts * clients * rate * seconds
    assert totals["offered"] == offered and totals["sent"] == totals["completed"] == offered, totals
    assert totals["lost"] == 0 and totals["load_held"], totals
    assert all(node["alive_at_end"] for node in report["nodes"]), report["nodes"]
    assert totals["throughput_per_s"] > 0
    # 20 ms held on the way out of each host: every round trip crosses two delayers.
    assert totals["latency_ms"]["p50"] >= 40, totals
    for node in report["nodes"]:
        assert node["rss"]["samples"] >= 2 and node["rss"]["start_kib"] and node["rss"]["end_kib"], node["rss"]
    cuts = report["config"]["partitions"]
    assert [c["host"] for c in cuts] == ["h1", "h2"] and all(c["healed_at_s"] for c in cuts), cuts
    kills = report["config"]["kills"]
    assert [k["host"] for k in kills] == ["h1"] and kills[0]["back_after_s"] is not None, kills  # at 4 s
    assert [n["restarts"] for n in report["nodes"]] == [1, 0, 0], report["nodes"]
    assert report["rig"]["leftovers"] == [] and report["verdict"]["ok"], report["verdict"]


def test_partition_churn_cuts_each_host_in_turn_inside_the_window_and_always_heals() -> None:
    churn = PartitionChurn(hosts=3, every_s=10.0, cut_s=3.0, window_s=35.0)
    actions = [(t / 2, a) for t in range(0, 100) if (a := churn.step(t / 2)) is not None]
    assert actions == [(10.0, ("cut", 0)), (13.0, ("heal", 0)), (20.0, ("cut", 1)), (23.0, ("heal", 1)),
                       (30.0, ("cut", 2)), (33.0, ("heal", 2))]  # fmt: skip
    assert churn.next_wake() is None and churn.cut_host is None
    assert [c["host"] for c in churn.cuts] == ["h1", "h2", "h3"]
    assert all(c["healed_at_s"] - c["cut_at_s"] == 3.0 for c in churn.cuts)
    assert PartitionChurn(hosts=3, every_s=0.0, cut_s=3.0, window_s=35.0).next_wake() is None  # off


def test_kill_churn_kills_each_host_in_turn_half_a_period_in() -> None:
    killer = KillChurn(hosts=2, every_s=10.0, window_s=40.0)
    kills = [(t / 2, h) for t in range(0, 100) if (h := killer.step(t / 2)) is not None]
    assert kills == [(5.0, 0), (15.0, 1), (25.0, 0), (35.0, 1)]
    assert killer.next_kill is None and [k["host"] for k in killer.kills] == ["h1", "h2", "h1", "h2"]
    assert KillChurn(hosts=2, every_s=0.0, window_s=40.0).step(100.0) is None  # off


# -- the --attacker report ------------------------------------------------------------------------


def test_attack_phases_say_what_each_attack_cost_the_victim_and_its_honest_peers() -> None:
    victim = HostRun("h1", usage=[(0.0, 50_000, 20, 1.0), (5.0, 60_000, 30, 2.0), (10.0, 55_000, 25, 4.5)])
    events = [
        {"event": "attack", "name": "first", "at_s": 0.0},
        {"event": "attack_done", "name": "first", "at_s": 5.0, "stats": {"sent": 10}},
        {"event": "attack", "name": "second", "at_s": 5.0},
        {"event": "attack_done", "name": "second", "at_s": 10.0, "stats": {"sent": 3}},
    ]
    pings = [{"event": "rtt", "at_s": t, "ms": ms} for t, ms in ((1.0, 2.0), (2.0, 4.0), (6.0, None), (7.0, 9.0))]
    first, second = attack_phases(events, pings, victim, tasks=[(1.0, 10.0), (6.0, 30.0), (7.0, 20.0)])
    assert (first["attack"], first["stats"]) == ("first", {"sent": 10})
    assert (first["rss_max_mb"], first["fds_max"]) == (58.59375, 30)
    assert first["cpu_percent"] == 20.0 and second["cpu_percent"] == 50.0
    assert first["ping_ms"] == {"p50": 2.0, "p99": 4.0, "missed": 0}
    assert second["ping_ms"] == {"p50": 9.0, "p99": 9.0, "missed": 1}
    assert second["tasks_ms"] == {"count": 2, "p50": 20.0, "p99": 30.0}


def _verdict_report(p99: float, ok: bool = True) -> dict[str, Any]:
    return {"totals": {"latency_ms": {"p99": p99}}, "verdict": {"ok": ok, "problems": [] if ok else ["boom"]}}


def test_the_attacker_verdict_holds_the_honest_p99_to_its_ratio() -> None:
    assert compare_runs([_verdict_report(100.0), _verdict_report(190.0)], 2.0)["verdict"]["ok"]
    slow = compare_runs([_verdict_report(100.0), _verdict_report(250.0)], 2.0)
    assert not slow["verdict"]["ok"] and slow["comparison"]["ratio"] == 2.5
    lost = compare_runs([_verdict_report(100.0), _verdict_report(110.0, ok=False)], 2.0)
    assert lost["verdict"]["problems"] == ["with the attacker: boom"]
    assert not compare_runs([_verdict_report(100.0)], 2.0)["verdict"]["ok"]
