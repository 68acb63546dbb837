"""``python -m tests.rig.pinger``: an honest peer that pings a node (``/ipfs/ping/1.0.0``) at a steady pace.

    python -m tests.rig.pinger --target /ip4/…/tcp/…/p2p/12D3KooW… [--every 0.2] [--seconds 60]

It measures what an attack costs the node's honest peers: one JSON line per ping,
``{"event": "rtt", "at_s": …, "ms": …}`` (or ``"ms": null`` when it went unanswered within
``--timeout``), from a fresh connection that it redials if the node drops it, and a final
``{"event": "summary", …}``. It waits for a ``go`` line on stdin first when ``--wait-go`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from typing import Any

from kosmesh.identity import Ed25519PrivateKey
from kosmesh.wire.connection import Connection, Stream
from kosmesh.wire.host import Host
from kosmesh.wire.multiaddr import Multiaddr
from kosmesh.wire.ping import PING_SIZE, PingInitiator
from kosmesh.wire.ping import PROTOCOL_ID as PING

# The Host's stream protocols are registered by the node; a bare host dials and pings only.


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def _ping_once(stream: Stream, timeout: float) -> float:
    initiator = PingInitiator()
    started = time.perf_counter()
    stream.write(initiator.request(os.urandom(PING_SIZE)))
    async with asyncio.timeout(timeout):
        while not initiator.receive_data(await stream.read()):
            pass
    return (time.perf_counter() - started) * 1000


async def run(target: Multiaddr, every: float, seconds: float, timeout: float, stop: asyncio.Event) -> dict[str, Any]:
    host = Host(Ed25519PrivateKey.generate())
    rtts: list[float] = []
    missed = redials = 0
    conn: Connection | None = None
    stream: Stream | None = None
    start = time.monotonic()
    try:
        tick = 0
        while not stop.is_set() and (at := time.monotonic() - start) < seconds:
            try:
                if conn is None or conn.closed or stream is None or stream.is_reset:
                    redials += conn is not None
                    conn = await asyncio.wait_for(host.dial(target, reuse=False), timeout)
                    stream = await asyncio.wait_for(conn.open_stream(PING), timeout)
                ms = await _ping_once(stream, timeout)
                rtts.append(ms)
                _emit({"event": "rtt", "at_s": round(at, 3), "ms": round(ms, 3)})
            except (ConnectionError, TimeoutError, OSError, ValueError) as exc:
                missed += 1
                stream = None
                _emit({"event": "rtt", "at_s": round(at, 3), "ms": None, "error": str(exc)[:120]})
            tick += 1
            wait = start + tick * every - time.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), wait)  # the pace, or an early stop
    finally:
        await host.close()
    ordered = sorted(rtts)
    summary = {
        "event": "summary",
        "pings": len(rtts) + missed,
        "missed": missed,
        "redials": redials,
        "p50_ms": ordered[len(ordered) // 2] if ordered else None,
        "p99_ms": ordered[max(0, -(-len(ordered) * 99 // 100) - 1)] if ordered else None,
        "max_ms": ordered[-1] if ordered else None,
    }
    _emit(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rig.pinger", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--target", required=True, help="the node's multiaddr, with /p2p/")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between pings")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=5.0, help="a ping unanswered this long is missed")
    parser.add_argument("--wait-go", action="store_true", help="wait for a `go` line on stdin first")
    args = parser.parse_args(argv)
    if args.wait_go and sys.stdin.readline().strip() != "go":
        return 1

    async def main_async() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await run(Multiaddr.parse(args.target), args.every, args.seconds, args.timeout, stop)

    asyncio.run(main_async())
    return 0


if __name__ == "__main__":
    sys.exit(main())
