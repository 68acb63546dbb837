"""What the attacker cost, for ``python -m tests.rig.soak --attacker``: per attack and in all.

Pure functions of what the soak recorded (the attacker's and the pinger's JSON lines, each node's
usage samples and the load clients' latency samples), so they are tested without a rig.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from tests.rig.load import percentile
from tests.rig.soak_report import KIB_PER_MB, HostRun, fmt_ms


def _window(samples: list[tuple[float, Any]], start: float, end: float) -> list[Any]:
    return [value for at, value in samples if start <= at <= end]


def _p(values: list[float], q: float) -> float | None:
    found = percentile(values, q)
    return None if found is None else round(found, 1)


def victim_task_samples(runs: list[HostRun]) -> list[tuple[float, float]]:
    """(seconds since go, ms) of every honest task to or from h1 (the victim, node 0)."""
    out = []
    for index, run in enumerate(runs):
        for at, target, ms in (run.summary or {}).get("samples", []):
            if index == 0 or target == 0:  # h1's own tasks, and everyone's tasks to h1 (first in their targets)
                out.append((float(at), float(ms)))
    return out


def attack_phases(
    attack_events: list[dict[str, Any]],
    ping_events: list[dict[str, Any]],
    victim: HostRun,
    tasks: list[tuple[float, float]],
) -> list[dict[str, Any]]:
    """Per attack (and before the first one, "none"): what it sent and got, and what it cost h1 and
    its honest peers: RSS and fds at most, CPU share, ping RTT, task latency."""
    starts = [(e["name"], float(e["at_s"])) for e in attack_events if e.get("event") == "attack"]
    done = {e["name"]: e for e in attack_events if e.get("event") == "attack_done"}
    pings = [(float(e["at_s"]), e.get("ms")) for e in ping_events if e.get("event") == "rtt"]
    usage = victim.usage
    phases = []
    for name, start in starts:
        end = float(done[name]["at_s"]) if name in done else (usage[-1][0] if usage else start)
        window = [u for u in usage if start <= u[0] <= end]
        cpu = [(at, c) for at, _, _, c in window if c is not None]
        rtts = [ms for ms in _window(pings, start, end) if ms is not None]
        latencies = _window(tasks, start, end)
        phases.append(
            {
                "attack": name,
                "start_s": round(start, 1),
                "end_s": round(end, 1),
                "stats": done.get(name, {}).get("stats", {}),
                "rss_max_mb": max((r / KIB_PER_MB for _, r, _, _ in window if r), default=None),
                "fds_max": max((f for _, _, f, _ in window if f is not None), default=None),
                "cpu_percent": round(100 * (cpu[-1][1] - cpu[0][1]) / (cpu[-1][0] - cpu[0][0]), 1)
                if len(cpu) > 1 and cpu[-1][0] > cpu[0][0]
                else None,
                "ping_ms": {"p50": _p(rtts, 50), "p99": _p(rtts, 99), "missed": sum(
                    1 for ms in _window(pings, start, end) if ms is None)},
                "tasks_ms": {"count": len(latencies), "p50": _p(latencies, 50), "p99": _p(latencies, 99)},
            }
        )
    return phases


def usage_problems(runs: list[HostRun], rss_bound_mb: float, fd_bound: int) -> list[str]:
    problems = []
    for run in runs:
        rss = max((r for _, r, _, _ in run.usage if r), default=0) / KIB_PER_MB
        fds = max((f for _, _, f, _ in run.usage if f is not None), default=0)
        if rss > rss_bound_mb:
            problems.append(f"{run.name}: RSS reached {rss:.0f} MB (bound {rss_bound_mb:g})")
        if fds > fd_bound:
            problems.append(f"{run.name}: {fds} open fds (bound {fd_bound})")
    return problems


def usage_view(runs: list[HostRun]) -> dict[str, dict[str, float | int | None]]:
    return {
        run.name: {
            "rss_max_mb": round(max((r for _, r, _, _ in run.usage if r), default=0) / KIB_PER_MB, 1),
            "fds_max": max((f for _, _, f, _ in run.usage if f is not None), default=None),
        }
        for run in runs
    }


def add_probe(
    report: dict[str, Any], runs: list[HostRun], ping_events: list[dict[str, Any]], *, rss_bound_mb: float,
    fd_bound: int,
) -> None:
    """Add what the pinger and the usage samples saw to ``report``; fail it past the RSS or fd bound."""
    pings = [e for e in ping_events if e.get("event") == "rtt"]
    rtts = [float(e["ms"]) for e in pings if e.get("ms") is not None]
    tasks = [ms for _, ms in victim_task_samples(runs)]
    report["probe"] = {
        "usage": usage_view(runs),
        "ping_ms": {"p50": _p(rtts, 50), "p99": _p(rtts, 99), "missed": len(pings) - len(rtts)},
        "victim_tasks_ms": {"p50": _p(tasks, 50), "p99": _p(tasks, 99)},
    }
    problems = usage_problems(runs, rss_bound_mb, fd_bound)
    report["verdict"]["problems"] += problems
    report["verdict"]["ok"] = report["verdict"]["ok"] and not problems


def render_attacks(report: dict[str, Any], console: Console) -> None:
    """The attacked run's cost, attack by attack, as the victim h1 and its honest peers saw it."""
    probe = report.get("probe") or {}
    table = Table(title="Attacks on h1, in turn (costs measured on h1; ping and tasks from honest peers)")
    for column in ("attack", "what the node answered", "RSS MB max", "fds max", "CPU %", "ping p50/p99 ms",
                   "missed pings", "honest tasks p99 ms"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("attack", "what the node answered") else "right")
    for phase in report.get("attacks", []):
        stats = ", ".join(f"{k} {v}" for k, v in sorted(phase["stats"].items(), key=lambda kv: -kv[1])[:4])
        ping, tasks = phase["ping_ms"], phase["tasks_ms"]
        table.add_row(
            phase["attack"], stats, fmt_ms(phase["rss_max_mb"]), str(phase["fds_max"] or "-"),
            fmt_ms(phase["cpu_percent"]), f"{fmt_ms(ping['p50'])}/{fmt_ms(ping['p99'])}", str(ping["missed"]),
            fmt_ms(tasks["p99"]),
        )  # fmt: skip
    if report.get("attacks"):
        console.print(table, markup=False)
    if probe:
        usage = ", ".join(f"{name} {u['rss_max_mb']} MB/{u['fds_max']} fds" for name, u in probe["usage"].items())
        console.print(f"node usage at most (RSS/fds): {usage}", highlight=False, markup=False)
        ping = probe["ping_ms"]
        console.print(f"honest ping of h1: p50 {fmt_ms(ping['p50'])} ms, p99 {fmt_ms(ping['p99'])} ms, "
                      f"{ping['missed']} missed", highlight=False)  # fmt: skip


def compare_runs(reports: list[dict[str, Any]], max_ratio: float) -> dict[str, Any]:
    """The --attacker verdict: both runs sound, and the attacked one's honest p99 within ``max_ratio``."""
    problems = []
    baseline = reports[0] if reports else None
    attacked = reports[1] if len(reports) > 1 else None
    if baseline is None or attacked is None:
        problems.append("the two runs did not both happen")
    base_p99 = baseline["totals"]["latency_ms"]["p99"] if baseline else None
    attacked_p99 = attacked["totals"]["latency_ms"]["p99"] if attacked else None
    ratio = round(attacked_p99 / base_p99, 2) if base_p99 and attacked_p99 is not None else None
    for name, report in (("without the attacker", baseline), ("with the attacker", attacked)):
        if report is not None and not report["verdict"]["ok"]:
            problems += [f"{name}: {p}" for p in report["verdict"]["problems"]]
    if ratio is None or ratio > max_ratio:
        problems.append(f"honest p99 {attacked_p99} ms with the attacker vs {base_p99} ms without (bound {max_ratio}x)")
    return {
        "baseline": baseline,
        "attacked": attacked,
        "comparison": {
            "baseline_p99_ms": base_p99, "attacked_p99_ms": attacked_p99, "ratio": ratio, "max_ratio": max_ratio
        },
        "verdict": {"ok": not problems, "problems": problems},
    }
