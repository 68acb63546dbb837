"""The soak's report: what each node and load client did, as JSON-ready data and as tables."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from tests.rig.load import latency_stats

KIB_PER_MB = 1024
COUNTS = ("offered", "sent", "unsent", "late", "completed", "retried", "failed", "stragglers", "lost")


def read_fds(pid: int) -> int | None:
    """Open file descriptors of a live process; None once it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def read_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a live process; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None


def read_rss_kib(pid: int) -> int | None:
    """VmRSS of a live process in KiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return None
    return None


@dataclass
class HostRun:
    """One host's node and load client, as the soak saw them."""

    name: str
    peer_id: str = ""
    node_pid: int | None = None
    rss_samples: list[tuple[float, int | None]] = field(default_factory=list)  # (seconds since go, KiB)
    alive_at_end: bool | None = None
    node_exit_code: int | None = None
    ready: dict[str, Any] | None = None
    progress: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    client_exit_code: int | None = None
    client_output_done: bool = False  # its stdout reached EOF: nothing more will come
    client_stderr: list[str] = field(default_factory=list)
    restarts: int = 0  # kill -9 and restart from its home; RSS samples then come from the new process
    # (seconds since go, RSS KiB, open fds, CPU seconds used), with --attacker: every VICTIM_EVERY_S
    usage: list[tuple[float, int | None, int | None, float | None]] = field(default_factory=list)


def _rss_view(samples: list[tuple[float, int | None]]) -> dict[str, Any]:
    values = [kib for _, kib in samples if kib is not None]
    if not values:
        return {"start_kib": None, "end_kib": None, "max_kib": None, "growth_kib": None, "samples": len(samples)}
    return {
        "start_kib": values[0],
        "end_kib": values[-1],
        "max_kib": max(values),
        "growth_kib": values[-1] - values[0],
        "samples": len(samples),
    }


def _host_problems(run: HostRun) -> list[str]:
    problems = []
    if run.alive_at_end is False:
        problems.append(f"{run.name}: node died (exit code {run.node_exit_code})")
    if run.summary is None:
        problems.append(f"{run.name}: load client gave no summary (exit code {run.client_exit_code})")
    else:
        if run.summary.get("stopped_early"):
            in_flight = run.summary["stragglers"]
            detail = f" ({in_flight} in flight, counted lost)" if in_flight else ""
            problems.append(f"{run.name}: load stopped early{detail}")
        if run.summary["lost"]:
            problems.append(f"{run.name}: {run.summary['lost']} tasks lost")
    if run.ready and run.ready.get("connect_errors"):
        problems.append(f"{run.name}: could not dial {len(run.ready['connect_errors'])} peers")
    return problems


def assemble_report(
    config: dict[str, Any],
    runs: list[HostRun],
    *,
    setup_s: float | None,
    teardown_s: float | None,
    stop_all_s: float | None = None,
    leftovers: list[str] | None,
    deadline_hit: bool,
    stopped_by_signal: bool,
    failure: str | None = None,
) -> dict[str, Any]:
    """The whole report as plain JSON-ready data; ``verdict.ok`` is what the exit code follows."""
    nodes = []
    latencies: list[float] = []
    totals: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    throughput = 0.0
    for run in runs:
        load = dict(run.summary) if run.summary is not None else None
        if load is not None:
            latencies.extend(load.pop("latencies_ms", []))
            load.pop("event", None)
            for key in COUNTS:
                totals[key] += int(load.get(key, 0))
            errors.update(load.get("errors", {}))
            throughput += float(load.get("throughput_per_s", 0.0))
        elif run.progress is not None:  # no summary: whatever was sent but not seen completing is lost
            totals["sent"] += int(run.progress.get("sent", 0))
            totals["completed"] += int(run.progress.get("completed", 0))
            totals["lost"] += int(run.progress.get("sent", 0)) - int(run.progress.get("completed", 0))
        nodes.append(
            {
                "host": run.name,
                "peer_id": run.peer_id,
                "alive_at_end": run.alive_at_end,
                "restarts": run.restarts,
                "node_exit_code": run.node_exit_code,
                "connect_errors": (run.ready or {}).get("connect_errors", []),
                "load": load,
                "last_progress": run.progress if load is None else None,
                "client_stderr_tail": run.client_stderr[-10:] if load is None else [],
                "rss": _rss_view(run.rss_samples),
                "rss_samples": [[round(t, 1), kib] for t, kib in run.rss_samples],
            }
        )
    problems = [problem for run in runs for problem in _host_problems(run)]
    if failure:
        problems.insert(0, failure)
    if deadline_hit:
        problems.append("the hard deadline passed before the load finished")
    if stopped_by_signal:
        problems.append("stopped by a signal before the load finished")
    if leftovers is None:
        problems.append("leftovers were not checked")
    elif leftovers:
        problems.append(f"left behind: {', '.join(leftovers)}")
    if not runs:
        problems.append("no load ran")
    return {
        "config": config,
        "rig": {
            "hosts": config.get("hosts"),
            "setup_s": setup_s,
            "teardown_s": teardown_s,
            "stop_all_s": stop_all_s,  # clients, delayers, nodes and the rig
            "leftovers": leftovers,
        },
        "nodes": nodes,
        "totals": {
            **{key: totals[key] for key in COUNTS},
            "load_held": bool(runs) and all(run.summary is not None for run in runs) and totals["unsent"] == 0,
            "errors": dict(errors.most_common()),
            "latency_ms": latency_stats(latencies),
            "throughput_per_s": round(throughput, 3),
        },
        "verdict": {"ok": not problems, "problems": problems},
    }


def fmt_mb(kib: int | None) -> str:
    return "-" if kib is None else f"{kib / KIB_PER_MB:.1f}"


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render_report(report: dict[str, Any], console: Console) -> None:
    """A table per node plus totals, the errors, the rig's times and the verdict."""
    config = report["config"]
    table = Table(
        title=f"Soak: {config['hosts']} hosts x {config['clients']} clients x {config['rate']:g} tasks/s "
        f"for {config['seconds']:g} s, {config['loss']}% loss, {config['delay_ms']:g} ms delay"
        + (f", a {config['partition_s']:g} s cut every {config['partition_every_s']:g} s"
           if config.get("partition_every_s") else "")
        + (f", a kill -9 every {config['kill_every_s']:g} s" if config.get("kill_every_s") else "")
    )
    for column in ("node", "sent", "completed", "lost", "retried", "late", "p50 ms", "p99 ms", "max ms", "tasks/s",
                   "RSS MB start→end", "growth MB", "alive"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("node", "RSS MB start→end") else "right")
    for node in report["nodes"]:
        load = node["load"] or {}
        progress = node["last_progress"] or {}
        latency = load.get("latency_ms", {})
        rss = node["rss"]
        lost = load.get("lost", progress.get("sent", 0) - progress.get("completed", 0) if progress else "?")
        table.add_row(
            node["host"], str(load.get("sent", progress.get("sent", "?"))),
            str(load.get("completed", progress.get("completed", "?"))), str(lost), str(load.get("retried", "-")),
            str(load.get("late", "-")), fmt_ms(latency.get("p50")), fmt_ms(latency.get("p99")),
            fmt_ms(latency.get("max")),
            f"{load['throughput_per_s']:.1f}" if load else "-", f"{fmt_mb(rss['start_kib'])}→{fmt_mb(rss['end_kib'])}",
            fmt_mb(rss["growth_kib"]), {True: "yes", False: "[red]DIED[/]", None: "?"}[node["alive_at_end"]],
        )  # fmt: skip
    totals = report["totals"]
    latency = totals["latency_ms"]
    table.add_section()
    table.add_row(
        "total", str(totals["sent"]), str(totals["completed"]), str(totals["lost"]), str(totals["retried"]),
        str(totals["late"]), fmt_ms(latency["p50"]), fmt_ms(latency["p99"]), fmt_ms(latency["max"]),
        f"{totals['throughput_per_s']:.1f}", "", "", "",
    )  # fmt: skip
    console.print(table)
    held = "yes" if totals["load_held"] else f"NO ({totals['unsent']} of {totals['offered']} offered never sent)"
    console.print(f"offered {totals['offered']}, load held: {held}, started late: {totals['late']}", highlight=False)
    if config.get("kills"):
        kills = ", ".join(f"{k['host']} at {k['killed_at_s']:g} s (back in {k['back_after_s']} s)"
                          for k in config["kills"])  # fmt: skip
        console.print(f"kill -9 and restart: {kills}", highlight=False)
    if config.get("partitions"):
        cuts = ", ".join(f"{c['host']} {c['cut_at_s']:g} to {c['healed_at_s'] or '?'} s" for c in config["partitions"])
        console.print(f"partitions: {cuts}", highlight=False)
    if totals["errors"]:
        console.print("errors (failed attempts, including ones a retry then fixed):")
        for message, count in totals["errors"].items():
            console.print(f"  {count:>6} x {message}", highlight=False, markup=False)
    else:
        console.print("errors: none")
    rig = report["rig"]
    setup = "-" if rig["setup_s"] is None else f"{rig['setup_s']:.3f} s"
    teardown = "-" if rig["teardown_s"] is None else f"{rig['teardown_s']:.3f} s"
    stop_all = "-" if rig["stop_all_s"] is None else f"{rig['stop_all_s']:.3f} s"
    left = "not checked" if rig["leftovers"] is None else (", ".join(rig["leftovers"]) or "nothing")
    console.print(
        f"rig setup {setup}, teardown {teardown} (stopping everything: {stop_all}); left behind: {left}",
        highlight=False,
    )
    verdict = report["verdict"]
    if verdict["ok"]:
        console.print("[green]OK[/]: nothing lost, every node alive, nothing left behind")
    else:
        console.print("[red]FAILED[/]: " + "; ".join(verdict["problems"]), highlight=False)
    console.print(f"reproduce: {config['command']}", highlight=False, markup=False)
