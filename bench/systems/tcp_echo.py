"""Raw asyncio TCP echo with no security at all: the floor under every secure stack here.

The same ``asyncio.Protocol`` echo as ``tls_echo.py`` without TLS. No secure channel can
beat it on this loop and machine, so a target above it (a round-trip rate no plaintext
echo reaches) is out of reach for any asyncio stack that encrypts. Only ``rtt`` is
measured: bulk, streams and dials of a plaintext socket say nothing about a secure stack.

READY line: ``READY <host> <port>``.
"""

from __future__ import annotations

import asyncio

from _common import (
    RTT_PAYLOAD,
    ClientArgs,
    CpuMeter,
    Result,
    announce_ready,
    describe,
    emit,
    install_stop_handlers,
    median,
    now,
    parse_cli,
)
from tls_echo import HOST, _ClientProtocol, _ServerProtocol


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    install_stop_handlers(lambda: loop.call_soon_threadsafe(stop.set))
    server = await loop.create_server(_ServerProtocol, HOST, 0, backlog=1024)
    announce_ready(HOST, server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()


async def _measure_rtt(args: ClientArgs, result: Result) -> None:
    _, proto = await asyncio.get_running_loop().create_connection(_ClientProtocol, args.host, args.port)
    payload = b"r" * RTT_PAYLOAD
    try:
        end_warmup = now() + args.warmup
        while now() < end_warmup:
            proto.write(payload)
            await proto.read_exactly(RTT_PAYLOAD)
        samples: list[float] = []
        cpu = CpuMeter()
        start = t = now()
        while t < start + args.duration:
            proto.write(payload)
            await proto.read_exactly(RTT_PAYLOAD)
            t2 = now()
            samples.append(t2 - t)
            t = t2
        cpu.record(result, "rtt", len(samples))
        result.rtt_per_s = len(samples) / (t - start)
        p50 = median(samples)
        result.rtt_p50_us = None if p50 is None else p50 * 1e6
    finally:
        proto.close()


async def _client(args: ClientArgs) -> Result:
    result = Result(system="tcp")
    result.notes.append("plaintext TCP, asyncio.Protocol: a floor for comparison, not a candidate")
    if "rtt" in args.metrics:
        try:
            await asyncio.wait_for(_measure_rtt(args, result), timeout=max(30.0, args.duration * 10))
        except Exception as exc:
            result.errors["rtt"] = describe(exc)
    return result


def main() -> None:
    mode, args = parse_cli()
    if mode == "server":
        asyncio.run(_serve())
        return
    assert args is not None
    emit(asyncio.run(_client(args)))


if __name__ == "__main__":
    main()
