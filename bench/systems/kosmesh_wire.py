"""kosmesh wire: TCP + Noise XX + yamux on asyncio, the same stack a node runs.

Echo and sink are libp2p protocols (``/bench/echo/1.0.0``, ``/bench/sink/1.0.0``)
negotiated with multistream-select on yamux streams of one Noise-secured connection.

READY line: ``READY <host> <port> <peer id>``; the client dials ``/p2p/<peer id>``, so
every dial authenticates the server.
"""

from __future__ import annotations

import asyncio

from _common import (
    ECHO_PROTOCOL,
    LEN_BYTES,
    RTT_PAYLOAD,
    SINK_PROTOCOL,
    WARMUP_BULK,
    ClientArgs,
    CpuMeter,
    Result,
    announce_ready,
    decode_len,
    describe,
    emit,
    encode_len,
    install_stop_handlers,
    median,
    now,
    parse_cli,
)

from kosmesh.identity import Ed25519PrivateKey
from kosmesh.wire.attach import attach_identify_and_ping
from kosmesh.wire.connection import Connection, ConnectionLimits, Stream
from kosmesh.wire.host import Host, HostLimits

# The streams metric opens streams as fast as one connection can: far past the per-connection rate
# a node allows by default (1,000/s, against stream floods), so the benchmark raises it.
BENCH_LIMITS = HostLimits(connection=ConnectionLimits(stream_open_rate=1e6))
HOST = "127.0.0.1"


async def echo(stream: Stream) -> None:
    """Echo from the stream's receive callback (like the TLS baseline's Protocol server)."""
    done = asyncio.get_running_loop().create_future()

    def on_eof() -> None:
        if not done.done():
            done.set_result(None)

    stream.set_receiver(stream.write, on_eof)
    await done


async def sink(stream: Stream) -> None:
    """Count each length-prefixed transfer from the receive callback and acknowledge it."""
    done = asyncio.get_running_loop().create_future()
    header = b""
    expected = -1  # -1: reading the header
    received = 0

    def on_data(chunk: bytes) -> None:
        nonlocal header, expected, received
        while True:
            if expected < 0:
                header += chunk
                if len(header) < LEN_BYTES:
                    return
                expected, chunk = decode_len(header), header[LEN_BYTES:]
                header, received = b"", 0
            take = min(len(chunk), expected - received)
            received += take
            if received < expected:
                return
            stream.write(encode_len(received))
            expected = -1
            chunk = chunk[take:]
            if not chunk:
                return

    def on_eof() -> None:
        if not done.done():
            done.set_result(None)

    stream.set_receiver(on_data, on_eof)
    await done


async def serve() -> None:
    host = Host(Ed25519PrivateKey.generate(), limits=BENCH_LIMITS)
    await attach_identify_and_ping(host)  # what every libp2p host serves, as a node does
    host.set_stream_handler(ECHO_PROTOCOL, echo)
    host.set_stream_handler(SINK_PROTOCOL, sink)
    addr = await host.listen(f"/ip4/{HOST}/tcp/0")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    install_stop_handlers(lambda: loop.call_soon_threadsafe(stop.set))
    announce_ready(HOST, addr.tcp_endpoint()[1], str(host.peer_id))
    await stop.wait()
    await host.close()


async def measure_rtt(conn: Connection, args: ClientArgs, result: Result) -> None:
    stream = await conn.open_stream(ECHO_PROTOCOL)
    payload = b"r" * RTT_PAYLOAD
    end_warmup = now() + args.warmup
    while now() < end_warmup:
        stream.write(payload)
        await stream.readexactly(RTT_PAYLOAD)
    samples: list[float] = []
    cpu = CpuMeter()
    start = t = now()
    deadline = start + args.duration
    while t < deadline:
        stream.write(payload)
        await stream.readexactly(RTT_PAYLOAD)
        t2 = now()
        samples.append(t2 - t)
        t = t2
    result.rtt_per_s = len(samples) / (t - start)
    cpu.record(result, "rtt", len(samples))
    p50 = median(samples)
    result.rtt_p50_us = None if p50 is None else p50 * 1e6
    await stream.close()


async def transfer(stream: Stream, total: int, chunk: bytes) -> None:
    stream.write(encode_len(total))
    sent = 0
    while sent < total:
        piece = chunk if total - sent >= len(chunk) else chunk[: total - sent]
        stream.write(piece)
        sent += len(piece)
        await stream.drain()
    acked = decode_len(await stream.readexactly(LEN_BYTES))
    if acked != total:
        raise RuntimeError(f"server acknowledged {acked} of {total} bytes")


async def measure_bulk(conn: Connection, args: ClientArgs, result: Result) -> None:
    stream = await conn.open_stream(SINK_PROTOCOL)
    chunk = b"b" * args.bulk_chunk
    await transfer(stream, min(args.bulk_total, WARMUP_BULK), chunk)
    transfers = 0
    cpu = CpuMeter()
    start = now()
    while True:
        await transfer(stream, args.bulk_total, chunk)
        transfers += 1
        elapsed = now() - start
        if elapsed >= args.duration:
            break
    result.bulk_bytes = transfers * args.bulk_total
    result.bulk_mb_s = result.bulk_bytes / elapsed / 1e6
    cpu.record(result, "bulk", result.bulk_bytes / 1e6)
    result.extra["bulk_transfers"] = transfers
    await stream.close()


async def one_stream(conn: Connection) -> None:
    stream = await conn.open_stream(ECHO_PROTOCOL)
    stream.write(b"s")
    await stream.readexactly(1)
    await stream.close()


async def measure_streams(conn: Connection, args: ClientArgs, result: Result) -> None:
    end_warmup = now() + min(args.warmup, 0.5)
    while now() < end_warmup:
        await one_stream(conn)
    count = 0
    cpu = CpuMeter()
    start = now()
    while now() - start < args.duration:
        await one_stream(conn)
        count += 1
    result.streams_per_s = count / (now() - start)
    cpu.record(result, "streams", count)


async def measure_dial(host: Host, target: str, args: ClientArgs, result: Result) -> None:
    times: list[float] = []
    await (await host.dial(target, reuse=False)).close()  # untimed: warms imports and caches
    for _ in range(args.dials):
        started = now()
        conn = await host.dial(target, reuse=False)
        times.append((now() - started) * 1000)
        await conn.close()
    result.dial_ms_all = times
    result.dial_ms = median(times)


async def client(args: ClientArgs) -> None:
    result = Result(system="kosmesh-wire")
    target = f"/ip4/{args.host}/tcp/{args.port}/p2p/{args.extra[0]}"
    host = Host(Ed25519PrivateKey.generate(), limits=BENCH_LIMITS)
    await attach_identify_and_ping(host)
    try:
        conn = await host.dial(target)
        steps = {
            "rtt": lambda: measure_rtt(conn, args, result),
            "bulk": lambda: measure_bulk(conn, args, result),
            "streams": lambda: measure_streams(conn, args, result),
            "dial": lambda: measure_dial(host, target, args, result),
        }
        for metric in args.metrics:
            try:
                await steps[metric]()
            except Exception as exc:
                result.errors[metric] = describe(exc)
    finally:
        await host.close()
    emit(result)


def main() -> None:
    mode, args = parse_cli()
    if mode == "server":
        asyncio.run(serve())
    else:
        assert args is not None
        asyncio.run(client(args))


if __name__ == "__main__":
    main()
