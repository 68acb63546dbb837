"""py-libp2p 0.8.1 baseline: TCP + Noise (XX) + yamux, on trio.

Runs from its own venv (``bench/setup_py_libp2p.sh`` makes ``.venv-libp2p``).  Only Noise
is offered for security and only yamux for muxing, so nothing else can be negotiated.

Settings chosen to be fair to it (everything else is the library default):

* ``ConnectionConfig(max_connections_per_peer=1)``.  ``Swarm.dial_peer`` races addresses
  "happy eyeballs" style and, after the first address succeeds, keeps waiting out a 250 ms
  head-start timer unless the per-peer connection cap (default 3) is reached; with a cap
  of 1 the dial returns as soon as the connection is up.  That wait is the ~251 ms per
  dial seen with defaults; ``extra.dial_ms_default_config`` re-measures it with defaults.
* Protocol handlers read with ``stream.read(65536)`` (yamux hands back whatever is
  buffered, up to ``n``) and write whole chunks; bulk writes are 64 KiB.

READY line: ``READY <host> <port> <peer-id>``.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import multiaddr
import trio
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
    median,
    now,
    parse_cli,
)
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.network.stream.exceptions import StreamClosed, StreamEOF, StreamError, StreamReset
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

HOST = "127.0.0.1"
ECHO = TProtocol(ECHO_PROTOCOL)
SINK = TProtocol(SINK_PROTOCOL)
READ_SIZE = 65536
DEFAULT_CONFIG_DIALS = 5
_CLOSED_ERRORS = (StreamEOF, StreamReset, StreamClosed, StreamError)


def _make_host(fast_dial: bool = True) -> Any:
    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    config = ConnectionConfig(max_connections_per_peer=1) if fast_dial else None
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        connection_config=config,
    )


async def _read_exactly(stream: Any, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await stream.read(n - len(data))
        if not chunk:
            raise EOFError(f"stream ended after {len(data)} of {n} bytes")
        data += chunk
    return data


# --------------------------------------------------------------------------- server


async def _echo_handler(stream: Any) -> None:
    try:
        while True:
            data = await stream.read(READ_SIZE)
            if not data:
                break
            await stream.write(data)
    except _CLOSED_ERRORS:
        pass
    finally:
        with contextlib.suppress(Exception):
            await stream.close()


async def _sink_handler(stream: Any) -> None:
    try:
        while True:
            try:
                expected = decode_len(await _read_exactly(stream, LEN_BYTES))
            except (StreamEOF, EOFError):
                break
            received = 0
            while received < expected:
                data = await stream.read(min(READ_SIZE, expected - received))
                if not data:
                    break
                received += len(data)
            await stream.write(encode_len(received))
    except (*_CLOSED_ERRORS, EOFError):
        pass
    finally:
        with contextlib.suppress(Exception):
            await stream.close()


async def _serve() -> None:
    host = _make_host()
    host.set_stream_handler(ECHO, _echo_handler)
    host.set_stream_handler(SINK, _sink_handler)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with host.run(listen_addrs=[multiaddr.Multiaddr(f"/ip4/{HOST}/tcp/0")]):
            port = 0
            for addr in host.get_addrs():
                value = addr.value_for_protocol("tcp")
                if value:
                    port = int(value)
                    break
            announce_ready(HOST, port, str(host.get_id()))
            async for _ in signals:
                break
        try:
            with trio.move_on_after(2):
                await host.close()
        except Exception:
            pass


# --------------------------------------------------------------------------- client


async def _measure_dial(host: Any, info: Any, dials: int) -> list[float]:
    times: list[float] = []
    for _ in range(dials):
        t0 = now()
        await host.connect(info)  # returns once the connection is upgraded and started
        times.append((now() - t0) * 1000)
        await host.disconnect(info.peer_id)
    return times


async def _measure_rtt(host: Any, info: Any, args: ClientArgs, result: Result) -> None:
    stream = await host.new_stream(info.peer_id, [ECHO])
    payload = b"r" * RTT_PAYLOAD
    try:
        end_warmup = now() + args.warmup
        while now() < end_warmup:
            await stream.write(payload)
            await _read_exactly(stream, RTT_PAYLOAD)
        samples: list[float] = []
        cpu = CpuMeter()
        start = now()
        deadline = start + args.duration
        t = start
        while t < deadline:
            await stream.write(payload)
            await _read_exactly(stream, RTT_PAYLOAD)
            t2 = now()
            samples.append(t2 - t)
            t = t2
        cpu.record(result, "rtt", len(samples))
        result.rtt_per_s = len(samples) / (t - start)
        p50 = median(samples)
        result.rtt_p50_us = None if p50 is None else p50 * 1e6
    finally:
        await stream.close()


async def _transfer(stream: Any, total: int, chunk: bytes) -> None:
    """One sink message: length, ``total`` bytes in ``chunk``-sized writes, wait for the ack."""
    await stream.write(encode_len(total))
    sent = 0
    while sent < total:
        piece = chunk if total - sent >= len(chunk) else chunk[: total - sent]
        await stream.write(piece)
        sent += len(piece)
    acked = decode_len(await _read_exactly(stream, LEN_BYTES))
    if acked != total:
        raise RuntimeError(f"server acknowledged {acked} of {total} bytes")


async def _measure_bulk(host: Any, info: Any, args: ClientArgs, result: Result) -> None:
    stream = await host.new_stream(info.peer_id, [SINK])
    chunk = b"b" * args.bulk_chunk
    try:
        await _transfer(stream, min(args.bulk_total, WARMUP_BULK), chunk)
        transfers = 0
        cpu = CpuMeter()
        start = now()
        while True:
            await _transfer(stream, args.bulk_total, chunk)
            transfers += 1
            elapsed = now() - start
            if elapsed >= args.duration:
                break
        result.bulk_bytes = transfers * args.bulk_total
        cpu.record(result, "bulk", result.bulk_bytes / 1e6)
        result.bulk_mb_s = result.bulk_bytes / elapsed / 1e6
        result.extra["bulk_transfers"] = transfers
    finally:
        await stream.close()


async def _one_stream(host: Any, info: Any) -> None:
    stream = await host.new_stream(info.peer_id, [ECHO])  # opens and negotiates
    try:
        await stream.write(b"s")
        await _read_exactly(stream, 1)
    finally:
        await stream.close()


async def _measure_streams(host: Any, info: Any, args: ClientArgs, result: Result) -> None:
    end_warmup = now() + min(args.warmup, 0.5)
    while now() < end_warmup:
        await _one_stream(host, info)
    count = 0
    cpu = CpuMeter()
    start = now()
    deadline = start + args.duration
    while now() < deadline:
        await _one_stream(host, info)
        count += 1
    result.streams_per_s = count / (now() - start)
    cpu.record(result, "streams", count)


async def _client(args: ClientArgs) -> Result:
    from importlib.metadata import version

    result = Result(system="py-libp2p")
    result.notes.append(
        f"libp2p {version('libp2p')}, TCP+Noise+yamux, trio; max_connections_per_peer=1 (see docstring)"
    )
    if not args.extra:
        raise SystemExit("client needs the server's peer id from the READY line")
    info = info_from_p2p_addr(multiaddr.Multiaddr(f"/ip4/{args.host}/tcp/{args.port}/p2p/{args.extra[0]}"))
    limit = max(30.0, args.duration * 10)
    host = _make_host()
    async with host.run(listen_addrs=[]):
        if "dial" in args.metrics:
            try:
                with trio.fail_after(limit):
                    times = await _measure_dial(host, info, args.dials + 1)
                times = times[1:]  # the first dial warms the code paths
                result.dial_ms_all = [round(t, 3) for t in times]
                result.dial_ms = median(times)
            except Exception as exc:
                result.errors["dial"] = describe(exc)
        steps: dict[str, Callable[[], Awaitable[None]]] = {
            "rtt": lambda: _measure_rtt(host, info, args, result),
            "bulk": lambda: _measure_bulk(host, info, args, result),
            "streams": lambda: _measure_streams(host, info, args, result),
        }
        try:
            with trio.fail_after(limit):
                await host.connect(info)
        except Exception as exc:
            for name in steps:
                result.errors[name] = f"connect: {describe(exc)}"
            steps = {}
        for name, step in steps.items():
            if name not in args.metrics:
                continue
            try:
                with trio.fail_after(limit):
                    await step()
            except Exception as exc:
                result.errors[name] = describe(exc)
        await host.disconnect(info.peer_id)

    if "dial" in args.metrics:
        # Same measurement with the library's default ConnectionConfig, for reference.
        default_host = _make_host(fast_dial=False)
        try:
            async with default_host.run(listen_addrs=[]):
                with trio.fail_after(limit):
                    times = await _measure_dial(default_host, info, DEFAULT_CONFIG_DIALS + 1)
                result.extra["dial_ms_default_config"] = round(median(times[1:]) or 0.0, 2)
        except Exception as exc:
            result.errors["dial_default_config"] = describe(exc)
    return result


def main() -> None:
    mode, args = parse_cli()
    if mode == "server":
        trio.run(_serve)
        return
    assert args is not None
    emit(trio.run(_client, args))


if __name__ == "__main__":
    main()
