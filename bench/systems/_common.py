"""Shared plumbing for the benchmark system scripts (standard library only).

Every system script is run as::

    python bench/systems/<name>.py server
    python bench/systems/<name>.py client <host> <port> [extra ...] \
        [--duration S] [--warmup S] [--bulk-mib N] [--bulk-chunk-kib N] [--dials N] [--json]

The server prints exactly one line ``READY <host> <port> [extra ...]`` on stdout and
serves until SIGTERM/SIGINT.  The client prints one JSON object (see ``Result``) on
stdout.  This module is imported by scripts that run under *different* interpreters
(py-libp2p has its own venv), so it must not import anything outside the stdlib.

Application protocols every system implements (over its own streams / connections):

* echo: the server writes back every byte it reads, until EOF.
* sink: the client sends an 8-byte big-endian length ``L`` followed by ``L`` bytes; the
  server reads and discards exactly ``L`` bytes, then replies with the 8-byte big-endian
  count of bytes it received.  Messages repeat on the same stream until the client
  closes it: the bulk metric sends one untimed 4 MiB message, then ``--bulk-mib`` MiB
  messages (each acknowledged before the next) until ``--duration`` seconds have passed,
  at least one; MB/s = acknowledged bytes / time from the first byte to the last ack.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

RTT_PAYLOAD = 256
ECHO_PROTOCOL = "/bench/echo/1.0.0"
SINK_PROTOCOL = "/bench/sink/1.0.0"
LEN_BYTES = 8
WARMUP_BULK = 4 * 1024 * 1024  # one untimed sink message before the timed ones


@dataclass
class Result:
    """The JSON object a client prints.  Missing metrics stay ``None``."""

    system: str
    rtt_per_s: float | None = None  # 256-byte echo round-trips per second, one in flight
    rtt_p50_us: float | None = None  # median round-trip latency in microseconds
    bulk_mb_s: float | None = None  # client -> server, MB/s with MB = 10**6 bytes
    bulk_bytes: int | None = None  # bytes in the timed transfers
    streams_per_s: float | None = None  # new streams (or connections, see streams_kind) per s
    streams_kind: str = "streams"  # "streams" or "connections"
    dial_ms: float | None = None  # median time to a usable new connection
    dial_ms_all: list[float] = field(default_factory=list)
    # CPU seconds of client + server (same machine) per operation, in microseconds:
    # keys rtt (per round trip), bulk (per MB), streams (per stream or connection).
    # Unlike the rates above, it does not move when other work shares the CPU.
    cpu_us: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # system-specific metrics
    errors: dict[str, str] = field(default_factory=dict)  # metric -> error text
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        data = asdict(self)
        for key, value in list(data.items()):
            if isinstance(value, float) and not math.isfinite(value):
                data[key] = None
        return json.dumps(data)


@dataclass
class ClientArgs:
    host: str
    port: int
    extra: list[str]
    duration: float
    warmup: float
    bulk_mib: int
    bulk_chunk_kib: int
    dials: int
    metrics: list[str]
    as_json: bool

    @property
    def bulk_total(self) -> int:
        return self.bulk_mib * 1024 * 1024

    @property
    def bulk_chunk(self) -> int:
        return self.bulk_chunk_kib * 1024


ALL_METRICS = ["rtt", "bulk", "streams", "dial"]
EXTRA_METRICS = ["inflight"]  # kosmesh-klp and klp-floor: the 16-in-flight task rate alone


def parse_cli(argv: list[str] | None = None) -> tuple[str, ClientArgs | None]:
    """Parse ``server`` / ``client ...``; returns the mode and client args (None for server)."""
    parser = argparse.ArgumentParser(description="benchmark system script")
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("server", help="serve until SIGTERM; prints READY <host> <port> [extra]")
    client = sub.add_parser("client", help="run the metrics against a server")
    client.add_argument("host")
    client.add_argument("port", type=int)
    client.add_argument("extra", nargs="*", help="extra words from the server's READY line")
    client.add_argument("--duration", type=float, default=3.0, help="seconds per timed metric")
    client.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds before timing")
    client.add_argument("--bulk-mib", type=int, default=64, help="MiB sent for the bulk metric")
    client.add_argument("--bulk-chunk-kib", type=int, default=64, help="size of each bulk write")
    client.add_argument("--dials", type=int, default=20, help="dials for the median dial time")
    client.add_argument("--metrics", default=",".join(ALL_METRICS), help="rtt,bulk,streams,dial (+inflight)")
    client.add_argument("--json", action="store_true", help="print one JSON object (default)")
    ns = parser.parse_args(argv)
    if ns.mode == "server":
        return "server", None
    metrics = [m.strip() for m in ns.metrics.split(",") if m.strip()]
    unknown = sorted(set(metrics) - set(ALL_METRICS) - set(EXTRA_METRICS))
    if unknown:
        parser.error(f"unknown metrics: {', '.join(unknown)}")
    return "client", ClientArgs(
        host=ns.host,
        port=ns.port,
        extra=list(ns.extra),
        duration=ns.duration,
        warmup=ns.warmup,
        bulk_mib=ns.bulk_mib,
        bulk_chunk_kib=ns.bulk_chunk_kib,
        dials=ns.dials,
        metrics=metrics,
        as_json=ns.json,
    )


def announce_ready(host: str, port: int, *extra: str) -> None:
    """Print the READY line the harness waits for."""
    words = ["READY", host, str(port), *extra]
    sys.stdout.write(" ".join(words) + "\n")
    sys.stdout.flush()


def install_stop_handlers(stop: Callable[[], None]) -> None:
    """Call ``stop`` (from the main thread, via the signal machinery) on SIGTERM/SIGINT."""

    def _handler(signum: int, frame: object) -> None:
        stop()

    signal.signal(signal.SIGTERM, _handler)
    signal.signal(signal.SIGINT, _handler)


def emit(result: Result) -> None:
    sys.stdout.write(result.to_json() + "\n")
    sys.stdout.flush()


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def now() -> float:
    return time.perf_counter()


SERVER_PID_ENV = "BENCH_SERVER_PID"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _server_cpu_seconds() -> float | None:
    """utime + stime of the server process (all threads), if the harness told us its pid."""
    pid = os.environ.get(SERVER_PID_ENV)
    if not pid:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


class CpuMeter:
    """CPU time spent by this client process plus the server process between start and stop."""

    def __init__(self) -> None:
        self._client = time.process_time()
        self._server = _server_cpu_seconds()

    def seconds(self) -> float | None:
        """CPU seconds since creation, or None if the server's CPU time is unknown."""
        server = _server_cpu_seconds()
        if server is None or self._server is None:
            return None
        return (time.process_time() - self._client) + (server - self._server)

    def record(self, result: Result, key: str, operations: float) -> None:
        """Store CPU microseconds per operation under ``result.cpu_us[key]``."""
        spent = self.seconds()
        if spent is not None and operations > 0:
            result.cpu_us[key] = spent / operations * 1e6


def record_in_flight(result: Result, latencies: list[float], elapsed: float, failures: int, cpu: CpuMeter) -> None:
    """Store the 16-in-flight metric (rate, p50/p99 latency, failures, CPU per task) in ``result.extra``."""
    result.extra["tasks_per_s_16_inflight"] = len(latencies) / elapsed
    result.extra["tasks_16_p50_ms"] = statistics.median(latencies) * 1000 if latencies else None
    if len(latencies) >= 100:
        result.extra["tasks_16_p99_ms"] = statistics.quantiles(latencies, n=100)[98] * 1000
    result.extra["tasks_16_not_processed"] = failures
    spent = cpu.seconds()
    if spent is not None and latencies:
        result.extra["tasks_16_cpu_us"] = spent / len(latencies) * 1e6


def encode_len(n: int) -> bytes:
    return n.to_bytes(LEN_BYTES, "big")


def decode_len(data: bytes) -> int:
    return int.from_bytes(data[:LEN_BYTES], "big")
