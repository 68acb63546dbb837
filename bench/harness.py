"""Side-by-side benchmark runner: every system measured in one run, reported as ratios.

Each system is a script ``bench/systems/<name>.py`` (``-`` in the name becomes ``_``;
``tls`` is ``tls_echo.py``) that follows the protocol in ``bench/systems/_common.py``:

* ``python <script> server`` prints ``READY <host> <port> [extra ...]`` and serves until SIGTERM;
* ``python <script> client <host> <port> [extra ...] --duration S --bulk-mib N --json``
  prints one JSON object with the metrics (missing ones ``null``).

For every system (and every round) the harness starts the server in its own process
(and process group), waits for READY, lets it settle, samples its idle RSS from
``/proc/<pid>/status``, runs the client (with ``BENCH_SERVER_PID`` set so it can add the
server's CPU time to its own), then stops the server (SIGTERM, SIGKILL after 5 s).  A
failing system becomes an error row; the others still run.  Results go to rich tables
(figures, CPU per operation, ratios vs the TLS ceiling and vs py-libp2p) and
``bench/results/latest.json``.  See ``bench/README.md``.

    .venv/bin/python bench/harness.py --systems tls,py-libp2p --duration 3
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import selectors
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SYSTEMS_DIR = BENCH / "systems"
RESULTS_DIR = BENCH / "results"
LOG_DIR = RESULTS_DIR / "logs"

STOP_GRACE_S = 5.0
READY_TIMEOUT_S = 60.0
SETUP_TIMEOUT_S = 900.0

# Metrics shown in the tables: key, column title, True if higher is better.
METRICS: list[tuple[str, str, bool]] = [
    ("rtt_per_s", "rtt/s", True),
    ("bulk_mb_s", "bulk MB/s", True),
    ("streams_per_s", "streams/s", True),
    ("dial_ms", "dial ms", False),
    ("rss_mb", "idle RSS MB", False),
]
# CPU seconds of client + server per operation (in cpu_us), which other load does not move.
CPU_METRICS: list[tuple[str, str, bool]] = [
    ("cpu_us.rtt", "rtt CPU µs", False),
    ("cpu_us.bulk", "bulk CPU µs/MB", False),
    ("cpu_us.streams", "streams CPU µs", False),
]
RATIO_METRICS = METRICS + CPU_METRICS
REFERENCES = [("tls", "TLS ceiling"), ("py-libp2p", "py-libp2p")]


def metric(values: dict[str, Any], key: str) -> Any:
    """``values[key]``, where ``a.b`` looks up ``values[a][b]``."""
    head, _, rest = key.partition(".")
    found = values.get(head)
    if rest:
        return found.get(rest) if isinstance(found, dict) else None
    return found


@dataclass(frozen=True)
class SystemSpec:
    name: str
    script: Path
    venv: Path | None  # None: the interpreter running this harness
    setup: Path | None = None  # script that creates the venv if it is missing
    description: str = ""
    env: dict[str, str] = field(default_factory=dict)  # for both processes (e.g. PYTHONPATH of a baseline)

    def default_python(self) -> Path:
        if self.venv is None:
            main_venv = ROOT / ".venv" / "bin" / "python"
            return main_venv if main_venv.exists() else Path(sys.executable)
        return self.venv / "bin" / "python"


KNOWN_SYSTEMS: list[SystemSpec] = [
    SystemSpec("tcp", SYSTEMS_DIR / "tcp_echo.py", None, description="asyncio plaintext TCP echo (floor: no security)"),
    SystemSpec("tls", SYSTEMS_DIR / "tls_echo.py", None, description="asyncio TLS 1.3 echo (ceiling)"),
    SystemSpec("kosmesh-wire", SYSTEMS_DIR / "kosmesh_wire.py", None, description="kosmesh TCP+Noise+yamux"),
    SystemSpec("kosmesh-klp", SYSTEMS_DIR / "kosmesh_klp.py", None, description="kosmesh signed KLP"),
    SystemSpec(
        "klp-floor",
        SYSTEMS_DIR / "klp_floor.py",
        None,
        description="least work per signed task: AEAD, CBOR, Ed25519, SQLite commit (floor under kosmesh-klp)",
    ),
    SystemSpec(
        "py-libp2p",
        SYSTEMS_DIR / "py_libp2p.py",
        ROOT / ".venv-libp2p",
        setup=BENCH / "setup_py_libp2p.sh",
        description="py-libp2p 0.8.1 TCP+Noise+yamux (trio)",
    ),
]


BASELINE_SUFFIX = "@base"


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (a baseline's is not)."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def spec_for(name: str, baseline: Path | None = None) -> SystemSpec:
    """The system called ``name``; ``kosmesh-…@base`` is the same system from the ``baseline`` tree
    (its own script, its own ``src`` first on the path), for A/B runs in one harness run."""
    if name.endswith(BASELINE_SUFFIX) and baseline is not None:
        spec = spec_for(name.removesuffix(BASELINE_SUFFIX))
        script = baseline / spec.script.relative_to(ROOT)
        return SystemSpec(name, script, spec.venv, None, f"{spec.description} (baseline {baseline})",
                          {"PYTHONPATH": str(baseline / "src")})  # fmt: skip
    for spec in KNOWN_SYSTEMS:
        if spec.name == name:
            return spec
    return SystemSpec(name, SYSTEMS_DIR / f"{name.replace('-', '_')}.py", None)


def default_system_names() -> list[str]:
    return [spec.name for spec in KNOWN_SYSTEMS if spec.script.exists()]


# --------------------------------------------------------------------------- processes

_LIVE: set[subprocess.Popen[Any]] = set()


def _kill_group(proc: subprocess.Popen[Any], sig: int) -> None:
    """Signal the process group the child leads (it was started in a new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_process(proc: subprocess.Popen[Any], grace: float = STOP_GRACE_S) -> int | None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps.  Returns the exit code."""
    try:
        if proc.poll() is None:
            _kill_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
                proc.wait(timeout=grace)
        # Once reaped, its pid (and group id) may be reused: never signal it again.
        return proc.returncode
    finally:
        _LIVE.discard(proc)


def stop_all() -> None:
    for proc in list(_LIVE):
        stop_process(proc, grace=1.0)


def _on_terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def spawn(
    argv: Sequence[str],
    log: IO[str],
    cpus: set[int] | None,
    stdout: int | IO[str] = subprocess.PIPE,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1", **(extra_env or {}))

    def _pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    proc = subprocess.Popen(
        list(argv),
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=log,
        text=True,
        start_new_session=True,  # own process group: Ctrl-C reaches only us; we stop it
        preexec_fn=_pin if cpus else None,  # the harness is single-threaded when spawning
    )
    _LIVE.add(proc)
    return proc


def wait_ready(proc: subprocess.Popen[str], timeout: float, log: IO[str]) -> list[str]:
    """Read server stdout until ``READY host port [extra]``; returns the words after READY."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buffer = ""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"server not READY within {timeout:.0f} s")
            if not sel.select(timeout=min(remaining, 0.5)):
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with code {proc.returncode} before READY")
                continue
            chunk = os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
            if not chunk:
                proc.wait(timeout=5)
                raise RuntimeError(f"server exited with code {proc.returncode} before READY")
            buffer += chunk
            while "\n" in buffer:
                line, buffer = buffer.split("\n", 1)
                log.write(f"[stdout] {line}\n")
                words = line.split()
                if words and words[0] == "READY":
                    if len(words) < 3:
                        raise RuntimeError(f"malformed READY line: {line!r}")
                    return words[1:]


def drain_in_background(proc: subprocess.Popen[str], log: IO[str]) -> None:
    """Keep reading server stdout after READY so a chatty server never blocks on a full pipe."""

    def _drain() -> None:
        assert proc.stdout is not None
        with contextlib.suppress(Exception):
            for line in proc.stdout:
                log.write(f"[stdout] {line}")

    threading.Thread(target=_drain, daemon=True).start()


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0  # kB -> MiB
    except OSError:
        return None
    return None


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def tail(path: Path, lines: int = 6) -> str:
    """The last lines of a log, without the harness's own ``===`` markers."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join([line for line in text if not line.startswith("===")][-lines:])


# --------------------------------------------------------------------------- one run


@dataclass
class RoundResult:
    ok: bool
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


@dataclass
class Settings:
    duration: float
    warmup: float
    bulk_mib: int
    bulk_chunk_kib: int
    dials: int
    metrics: str
    timeout: float
    idle_wait: float
    rounds: int
    pin: str
    setup: bool

    def client_flags(self) -> list[str]:
        return [
            "--duration", str(self.duration),
            "--warmup", str(self.warmup),
            "--bulk-mib", str(self.bulk_mib),
            "--bulk-chunk-kib", str(self.bulk_chunk_kib),
            "--dials", str(self.dials),
            "--metrics", self.metrics,
            "--json",
        ]  # fmt: skip

    def cpus(self) -> tuple[set[int] | None, set[int] | None]:
        available = sorted(os.sched_getaffinity(0))
        if self.pin == "split" and len(available) >= 2:
            return {available[1]}, {available[0]}
        if self.pin == "same":
            return {available[0]}, {available[0]}
        return None, None


def parse_client_output(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            data = json.loads(line)
            if isinstance(data, dict):
                return data
    raise RuntimeError("client printed no JSON object")


def run_round(spec: SystemSpec, python: Path, settings: Settings, round_no: int) -> RoundResult:
    started = time.monotonic()
    deadline = started + settings.timeout
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    server_log_path = LOG_DIR / f"{spec.name}-server.log"
    client_log_path = LOG_DIR / f"{spec.name}-client.log"
    server_cpus, client_cpus = settings.cpus()
    server: subprocess.Popen[str] | None = None
    mode = "a" if round_no > 1 else "w"
    with open(server_log_path, mode) as server_log, open(client_log_path, mode) as client_log:
        for log in (server_log, client_log):
            log.write(f"=== round {round_no} {datetime.datetime.now().isoformat(timespec='seconds')}\n")
            log.flush()
        try:
            server = spawn([str(python), str(spec.script), "server"], server_log, server_cpus, extra_env=spec.env)
            try:
                words = wait_ready(server, min(READY_TIMEOUT_S, settings.timeout), server_log)
            except RuntimeError as exc:
                server_log.flush()
                detail = tail(server_log_path)
                return RoundResult(False, f"{exc}" + (f"\n{detail}" if detail else ""))
            drain_in_background(server, server_log)
            host, port, extra = words[0], words[1], words[2:]
            time.sleep(settings.idle_wait)
            idle_rss = rss_mb(server.pid)

            client = spawn(
                [str(python), str(spec.script), "client", host, port, *extra, *settings.client_flags()],
                client_log,
                client_cpus,
                extra_env={**spec.env, "BENCH_SERVER_PID": str(server.pid)},
            )
            try:
                stdout, _ = client.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop_process(client, grace=1.0)
                return RoundResult(False, f"timed out after {settings.timeout:.0f} s")
            finally:
                stop_process(client, grace=1.0)
            client_log.write(f"[stdout] {stdout}\n")
            loaded_rss = rss_mb(server.pid)
            server_alive = server.poll() is None
            if client.returncode != 0:
                client_log.flush()
                return RoundResult(False, f"client exited with code {client.returncode}\n{tail(client_log_path)}")
            try:
                metrics = parse_client_output(stdout)
            except (RuntimeError, json.JSONDecodeError) as exc:
                return RoundResult(False, f"bad client output: {exc}")
            metrics["rss_mb"] = idle_rss
            metrics["rss_after_mb"] = loaded_rss
            if not server_alive:
                metrics.setdefault("errors", {})["server"] = f"server died (code {server.returncode})"
            return RoundResult(True, None, metrics, time.monotonic() - started)
        finally:
            if server is not None:
                code = stop_process(server)
                server_log.write(f"=== server stopped, exit code {code}\n")


def ensure_python(spec: SystemSpec, python: Path, settings: Settings, console: Console) -> str | None:
    """Make sure the interpreter exists (running the system's setup script if allowed)."""
    if python.exists():
        return None
    if spec.setup is None or not settings.setup or python != spec.default_python():
        hint = f" (run {spec.setup.relative_to(ROOT)})" if spec.setup else ""
        return f"interpreter {python} not found{hint}"
    console.print(f"[yellow]{spec.name}: {python} missing, running {spec.setup.relative_to(ROOT)}[/]")
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log_path = LOG_DIR / f"{spec.name}-setup.log"
    with open(log_path, "w") as log:
        proc = spawn(["bash", str(spec.setup)], log, None, stdout=log)
        try:
            proc.wait(timeout=SETUP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_process(proc, grace=1.0)
            return f"setup timed out; see {log_path}"
        finally:
            stop_process(proc, grace=1.0)
    if proc.returncode != 0 or not python.exists():
        return f"setup failed (code {proc.returncode}); see {log_path}\n{tail(log_path)}"
    return None


# --------------------------------------------------------------------------- aggregation


@dataclass
class SystemOutcome:
    spec: SystemSpec
    python: Path
    rounds: list[RoundResult] = field(default_factory=list)
    error: str | None = None  # set when no round succeeded

    @property
    def ok(self) -> bool:
        return self.error is None and any(r.ok for r in self.rounds)

    def merged(self) -> dict[str, Any]:
        """Median of each numeric metric over the successful rounds; the rest from the last."""
        good = [r.metrics for r in self.rounds if r.ok]
        if not good:
            return {}
        merged: dict[str, Any] = dict(good[-1])
        keys = {key for m in good for key, value in m.items() if _is_number(value)}
        for key in keys:
            values = [m[key] for m in good if _is_number(m.get(key))]
            merged[key] = statistics.median(values) if values else None
        for section in ("extra", "cpu_us"):
            section_keys = {key for m in good for key in (m.get(section) or {})}
            merged_section: dict[str, Any] = {}
            for key in sorted(section_keys):
                values = [(m.get(section) or {}).get(key) for m in good]
                numbers = [v for v in values if _is_number(v)]
                merged_section[key] = statistics.median(numbers) if numbers else values[-1]
            merged[section] = merged_section
        errors: dict[str, str] = {}
        for m in good:
            errors.update(m.get("errors") or {})
        merged["errors"] = errors
        if len(good) > 1:
            merged["spread"] = {
                key: [min(v), max(v)]
                for key, _, _ in RATIO_METRICS
                if (v := [metric(m, key) for m in good if _is_number(metric(m, key))])
            }
        return merged


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def ratios(outcomes: dict[str, SystemOutcome], reference: str) -> dict[str, dict[str, float | None]]:
    ref = outcomes.get(reference)
    if ref is None or not ref.ok:
        return {}
    ref_metrics = ref.merged()
    table: dict[str, dict[str, float | None]] = {}
    for name, outcome in outcomes.items():
        if not outcome.ok:
            continue
        mine = outcome.merged()
        row: dict[str, float | None] = {}
        for key, _, _ in RATIO_METRICS:
            a, b = metric(mine, key), metric(ref_metrics, key)
            row[key] = a / b if _is_number(a) and _is_number(b) and b else None
        table[name] = row
    return table


# --------------------------------------------------------------------------- output


def _fmt(value: Any, key: str) -> str:
    if not _is_number(value):
        return "—"
    if key == "dial_ms" or (key.startswith("cpu_us.") and value < 10):
        return f"{value:,.2f}"
    if key in ("bulk_mb_s", "rss_mb"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _fmt_extra(extra: dict[str, Any]) -> str:
    parts = []
    for key, value in extra.items():
        shown = f"{value:,.2f}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={shown}")
    return "\n".join(parts)


def render(outcomes: dict[str, SystemOutcome], console: Console) -> None:
    table = Table(title="Benchmark (127.0.0.1, server and client in separate processes)")
    table.add_column("system", style="bold", no_wrap=True)
    for _key, title, higher in METRICS:
        table.add_column(f"{title} {'↑' if higher else '↓'}", justify="right")
    table.add_column("extra")
    table.add_column("status")
    footnote = False
    for name, outcome in outcomes.items():
        if not outcome.ok:
            error = outcome.error or next((r.error for r in outcome.rounds if r.error), "not run (interrupted)")
            table.add_row(name, *["—"] * len(METRICS), "", f"[red]error: {error}[/]")
            continue
        m = outcome.merged()
        cells = []
        for key, _, _ in METRICS:
            cell = _fmt(m.get(key), key)
            if key == "streams_per_s" and m.get("streams_kind") == "connections" and cell != "—":
                cell += " (conn)"
                footnote = True
            cells.append(cell)
        errors = m.get("errors") or {}
        failed_rounds = sum(1 for r in outcome.rounds if not r.ok)
        status = (
            "[green]ok[/]" if not errors else "[yellow]partial[/]: " + "; ".join(f"{k}: {v}" for k, v in errors.items())
        )
        if failed_rounds:
            status += f" [yellow]({failed_rounds} round(s) failed)[/]"
        table.add_row(name, *cells, _fmt_extra(m.get("extra") or {}), status)
    console.print(table)
    cpu_rows = [(n, o.merged()) for n, o in outcomes.items() if o.ok and o.merged().get("cpu_us")]
    if cpu_rows:
        ct = Table(title="CPU time per operation, client + server")
        ct.add_column("system", style="bold", no_wrap=True)
        for _key, title, _higher in CPU_METRICS:
            ct.add_column(f"{title} ↓", justify="right")
        for name, m in cpu_rows:
            ct.add_row(name, *[_fmt(metric(m, key), key) for key, _, _ in CPU_METRICS])
        console.print(ct)
    for name, outcome in outcomes.items():
        notes = outcome.merged().get("notes") or []
        if notes:
            console.print(f"  {name}: " + "; ".join(str(n) for n in notes))
    if footnote:
        console.print(
            "  (conn) = no multiplexing: new connections/s (TCP + TLS handshake + 1-byte echo), "
            "compared with new streams/s of the others."
        )

    render_in_flight(outcomes, console)
    for reference, label in REFERENCES:
        rows = ratios(outcomes, reference)
        if not rows or len(rows) < 2:
            continue
        rt = Table(title=f"Ratios vs {label} (system ÷ {reference})")
        rt.add_column("system", style="bold", no_wrap=True)
        for _key, title, higher in RATIO_METRICS:
            rt.add_column(f"{title} {'↑' if higher else '↓'}", justify="right")
        for name, row in rows.items():
            rt.add_row(name, *[f"{row[k]:.2f}x" if row[k] is not None else "—" for k, _, _ in RATIO_METRICS])
        console.print(rt)
    console.print("  ↑ higher is better, ↓ lower is better; a ratio is system ÷ reference for every column.")


IN_FLIGHT_KEYS = [
    ("tasks_per_s_16_inflight", "tasks/s ↑"),
    ("tasks_16_p50_ms", "p50 ms ↓"),
    ("tasks_16_p99_ms", "p99 ms ↓"),
    ("tasks_16_cpu_us", "CPU µs/task ↓"),
]
IN_FLIGHT_FLOOR = "klp-floor"


def render_in_flight(outcomes: dict[str, SystemOutcome], console: Console) -> None:
    """Signed tasks with 16 in flight, each system against the floor (the least work per task)."""
    rows = [(n, o.merged().get("extra") or {}) for n, o in outcomes.items() if o.ok]
    rows = [(n, extra) for n, extra in rows if _is_number(extra.get("tasks_per_s_16_inflight"))]
    if not rows:
        return
    floor = next((extra for n, extra in rows if n == IN_FLIGHT_FLOOR), None)
    table = Table(title="Signed tasks, 16 in flight")
    table.add_column("system", style="bold", no_wrap=True)
    for _key, title in IN_FLIGHT_KEYS:
        table.add_column(title, justify="right")
    table.add_column(f"rate ÷ {IN_FLIGHT_FLOOR}", justify="right")
    base = floor.get("tasks_per_s_16_inflight") if floor else None
    for name, extra in rows:
        cells = []
        for key, _ in IN_FLIGHT_KEYS:
            value = extra.get(key)
            cells.append(f"{value:,.2f}" if key.endswith("_ms") and _is_number(value) else _fmt(value, key))
        rate = extra["tasks_per_s_16_inflight"]
        cells.append(f"{rate / base:.2f}x" if _is_number(base) and base else "—")
        table.add_row(name, *cells)
    console.print(table)


def write_json(path: Path, outcomes: dict[str, SystemOutcome], settings: Settings, meta: dict[str, Any]) -> None:
    data: dict[str, Any] = {
        "schema": 1,
        **meta,
        "settings": settings.__dict__,
        "systems": {},
        "ratios": {f"vs_{ref.replace('-', '_')}": ratios(outcomes, ref) for ref, _ in REFERENCES},
    }
    for name, outcome in outcomes.items():
        data["systems"][name] = {
            "ok": outcome.ok,
            "error": None if outcome.ok else (outcome.error or next((r.error for r in outcome.rounds), None)),
            "python": str(outcome.python),
            "script": shown(outcome.spec.script),
            "metrics": outcome.merged(),
            "rounds": [
                {"ok": r.ok, "error": r.error, "wall_s": round(r.wall_s, 2), "metrics": r.metrics}
                for r in outcome.rounds
            ],
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", help="comma list (default: every known system whose script exists)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per timed metric (rtt, streams)")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds before a timed metric")
    parser.add_argument("--bulk-mib", type=int, default=64, help="MiB sent in the bulk metric")
    parser.add_argument("--bulk-chunk-kib", type=int, default=64, help="size of each bulk write in KiB")
    parser.add_argument("--dials", type=int, default=20, help="dials for the median dial time")
    parser.add_argument("--metrics", default="rtt,bulk,streams,dial", help="comma list of client metrics")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per system per round")
    parser.add_argument("--idle-wait", type=float, default=1.0, help="seconds after READY before RSS")
    parser.add_argument("--rounds", type=int, default=1, help="rounds, systems interleaved; medians are reported")
    parser.add_argument(
        "--pin",
        choices=["none", "split", "same"],
        default="same",
        help="CPU affinity of server and client: same (both on one CPU, the default: measures CPU "
        "cost and is repeatable on a busy machine), split (one CPU each), none (the scheduler decides)",
    )
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="SYSTEM=PATH",
        help="interpreter for a system (repeatable), e.g. py-libp2p=/opt/venv/bin/python",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier commit (git worktree add): adds kosmesh-wire@base and kosmesh-klp@base, "
        "run from it, interleaved with the rest (A/B in one run)",
    )
    parser.add_argument("--no-setup", action="store_true", help="never run a system's setup script")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "latest.json", help="JSON output path")
    parser.add_argument("--list", action="store_true", help="list known systems and exit")
    return parser.parse_args(argv)


@contextlib.contextmanager
def terminate_children_on_exit() -> Iterator[None]:
    # SIGINT too: a harness started in the background inherits SIGINT ignored.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _on_terminate) for sig in signals}
    try:
        yield
    finally:
        stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped or logged: do not squeeze the tables to 80 columns
    if args.list:
        for spec in KNOWN_SYSTEMS:
            state = "present" if spec.script.exists() else "missing"
            console.print(f"{spec.name:14} {state:8} {spec.script.relative_to(ROOT)}  {spec.description}")
        return 0

    names = [n.strip() for n in (args.systems or ",".join(default_system_names())).split(",") if n.strip()]
    baseline = args.baseline.resolve() if args.baseline else None
    if baseline is not None and args.systems is None:
        names += [f"{n}{BASELINE_SUFFIX}" for n in ("kosmesh-wire", "kosmesh-klp") if n in names]
    overrides: dict[str, Path] = {}
    for item in args.python:
        name, sep, path = item.partition("=")
        if not sep:
            console.print(f"[red]--python expects SYSTEM=PATH, got {item!r}[/]")
            return 2
        overrides[name.strip()] = Path(path).expanduser()
    settings = Settings(
        duration=args.duration,
        warmup=args.warmup,
        bulk_mib=args.bulk_mib,
        bulk_chunk_kib=args.bulk_chunk_kib,
        dials=args.dials,
        metrics=args.metrics,
        timeout=args.timeout,
        idle_wait=args.idle_wait,
        rounds=max(1, args.rounds),
        pin=args.pin,
        setup=not args.no_setup,
    )

    outcomes: dict[str, SystemOutcome] = {}
    for name in names:
        spec = spec_for(name, baseline)
        python = overrides.get(name, spec.default_python())
        outcome = SystemOutcome(spec, python)
        if not spec.script.exists():
            outcome.error = f"no script {shown(spec.script)}"
        outcomes[name] = outcome

    started_at = datetime.datetime.now(datetime.UTC)
    t0 = time.monotonic()
    load_before = loadavg()
    interrupted = False
    with terminate_children_on_exit():
        try:
            for outcome in outcomes.values():
                if outcome.error is None:
                    outcome.error = ensure_python(outcome.spec, outcome.python, settings, console)
            for round_no in range(1, settings.rounds + 1):
                for name, outcome in outcomes.items():
                    if outcome.error is not None:
                        continue
                    label = f"{name} (round {round_no}/{settings.rounds})" if settings.rounds > 1 else name
                    with console.status(f"running {label} …"):
                        try:
                            result = run_round(outcome.spec, outcome.python, settings, round_no)
                        except (OSError, subprocess.SubprocessError) as exc:
                            result = RoundResult(False, f"{type(exc).__name__}: {exc}")
                    outcome.rounds.append(result)
                    if result.ok:
                        console.print(f"  {label}: done in {result.wall_s:.1f} s")
                    else:
                        console.print(f"  [red]{label}: {(result.error or '').splitlines()[0]}[/]")
        except KeyboardInterrupt:
            interrupted = True
            console.print("[yellow]interrupted; stopping servers and clients[/]")

    meta = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "interrupted": interrupted,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        },
    }
    # An interrupted run must not replace the last complete result.
    out = LOG_DIR / "interrupted.json" if interrupted else args.out
    write_json(out, outcomes, settings, meta)
    render(outcomes, console)
    console.print(f"  results: {out}   logs: {LOG_DIR}   total {meta['elapsed_s']} s")
    if load_before and load_before[0] > 1.0:
        console.print(
            f"[yellow]  note: load average was {load_before[0]:.2f} before the run; other work on "
            "this machine makes absolute figures noisy (ratios from one run are fairer).[/]"
        )
    if interrupted:
        return 130
    return 0 if all(o.ok for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
