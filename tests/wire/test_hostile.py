"""Hostile input on real sockets: garbage, truncated and oversized frames at every stage.

After each attack the target must still serve an honest peer (a fresh dial + ping) and
keep an honest connection that existed before the attack alive.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kosmesh.codec.varint import encode_uvarint
from kosmesh.identity import Ed25519PrivateKey
from kosmesh.wire import multistream, noise, yamux
from kosmesh.wire.attach import attach_identify_and_ping
from kosmesh.wire.connection import Stream
from kosmesh.wire.host import Host
from kosmesh.wire.ping_service import PingService

ECHO = "/test/echo/1.0.0"
Attack = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo_handler(stream: Stream) -> None:
    while chunk := await stream.read():
        await stream.write_all(chunk)


async def read_some(reader: asyncio.StreamReader, timeout: float = 2.0) -> bytes:
    try:
        async with asyncio.timeout(timeout):
            return await reader.read(65536)
    except (TimeoutError, ConnectionError):
        return b""


async def secured(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> noise.NoiseTransport:
    """Drive the real client cores through multistream and Noise over a raw socket."""
    ms = multistream.MultistreamDialer([noise.PROTOCOL_ID])
    writer.write(ms.initiate())
    while ms.selected is None:
        data = await read_some(reader)
        assert data, "listener hung up during multistream"
        writer.write(ms.receive_data(data))
    hs = noise.NoiseHandshake(initiator=True, identity=Ed25519PrivateKey.generate())
    writer.write(hs.initiate())
    pending = ms.unconsumed()
    while not hs.complete:
        data = pending or await read_some(reader)
        pending = b""
        assert data, "listener hung up during noise"
        writer.write(hs.receive_data(data))
    await writer.drain()
    return hs.take_transport()


async def muxed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[noise.NoiseTransport, bytes]:
    transport = await secured(reader, writer)
    ms = multistream.MultistreamDialer([yamux.PROTOCOL_ID])
    writer.write(transport.encrypt(ms.initiate()))
    while ms.selected is None:
        data = await read_some(reader)
        assert data, "listener hung up during muxer negotiation"
        writer.write(transport.encrypt(ms.receive_data(transport.receive_data(data))))
    return transport, ms.unconsumed()


# -- the attacks -------------------------------------------------------------------------
async def garbage_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(os.urandom(4096))


async def oversized_multistream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(encode_uvarint(10_000_000) + b"/" * 2048)


async def garbage_noise_msg1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    ms = multistream.MultistreamDialer([noise.PROTOCOL_ID])
    writer.write(ms.initiate())
    await read_some(reader)
    writer.write(b"\x00\x20" + os.urandom(32) + b"\xff\xff" + os.urandom(1000))


async def truncated_noise(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    ms = multistream.MultistreamDialer([noise.PROTOCOL_ID])
    writer.write(ms.initiate())
    await read_some(reader)
    hs = noise.NoiseHandshake(initiator=True, identity=Ed25519PrivateKey.generate())
    msg1 = hs.initiate()
    writer.write(msg1[: len(msg1) // 2])
    await writer.drain()
    writer.write_eof()


async def forged_noise_msg3(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    ms = multistream.MultistreamDialer([noise.PROTOCOL_ID])
    writer.write(ms.initiate())
    while ms.selected is None:
        writer.write(ms.receive_data(await read_some(reader)))
    hs = noise.NoiseHandshake(initiator=True, identity=Ed25519PrivateKey.generate())
    writer.write(hs.initiate())
    msg2 = ms.unconsumed() or await read_some(reader)
    out = bytearray(hs.receive_data(msg2))
    out[-5] ^= 0xFF  # flip a byte inside the encrypted payload
    writer.write(bytes(out))


async def garbage_after_noise(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await secured(reader, writer)
    writer.write(b"\x01\x00" + os.urandom(256))  # a frame that fails authentication


async def garbage_yamux_frames(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    transport, _ = await muxed(reader, writer)
    writer.write(transport.encrypt(os.urandom(2048)))


async def oversized_yamux_frame(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    transport, _ = await muxed(reader, writer)
    header = yamux.encode_header(yamux.TYPE_DATA, yamux.FLAG_SYN, 1, 0xFFFFFFFF)
    writer.write(transport.encrypt(header + os.urandom(1000)))


async def garbage_in_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    transport, _ = await muxed(reader, writer)
    session = yamux.YamuxSession(is_client=True)
    for _ in range(20):
        sid = session.open_stream()
        session.send_data(sid, os.urandom(300))  # not multistream at all
    sid = session.open_stream()
    session.send_data(sid, encode_uvarint(5000) + b"x" * 100)  # oversized multistream message
    writer.write(transport.encrypt(session.data_to_send()))


async def stream_flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    transport, _ = await muxed(reader, writer)
    session = yamux.YamuxSession(is_client=True, max_streams=5000)
    for _ in range(3000):  # past the listener's stream limits
        session.open_stream()
    writer.write(transport.encrypt(session.data_to_send()))


ATTACKS: list[Attack] = [
    garbage_first,
    oversized_multistream,
    garbage_noise_msg1,
    truncated_noise,
    forged_noise_msg3,
    garbage_after_noise,
    garbage_yamux_frames,
    oversized_yamux_frame,
    garbage_in_stream,
    stream_flood,
]


async def attack_then_check(attack: Attack) -> None:
    target = Host(Ed25519PrivateKey.generate())
    await attach_identify_and_ping(target)
    target.set_stream_handler(ECHO, echo_handler)
    addr = await target.listen("/ip4/127.0.0.1/tcp/0")
    honest = Host(Ed25519PrivateKey.generate())
    try:
        before = await honest.dial(addr)
        host, port = addr.tcp_endpoint()
        reader, writer = await asyncio.open_connection(host, port)
        try:
            await attack(reader, writer)
            await writer.drain()
            # the target answers the attack by closing, or ignores it; either way it must not hang
            while await read_some(reader, timeout=1.0):
                pass
        except (ConnectionError, AssertionError):
            pass
        finally:
            writer.close()
        # the connection made before the attack still works...
        assert await before.ping() > 0
        stream = await before.open_stream(ECHO)
        await stream.write_all(b"alive")
        await stream.close()
        assert await stream.read_all(limit=64) == b"alive"
        # ...and a new peer is served
        newcomer = Host(Ed25519PrivateKey.generate())
        try:
            assert (await PingService(newcomer).ping(addr))[0] > 0
        finally:
            await newcomer.close()
    finally:
        await honest.close()
        await target.close()


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.__name__ for a in ATTACKS])
async def test_attack_leaves_node_serving(attack: Attack) -> None:
    await attack_then_check(attack)


STAGES = ["raw", "after-multistream", "after-noise", "after-yamux"]


@settings(max_examples=15, deadline=None)
@given(stage=st.sampled_from(STAGES), junk=st.binary(min_size=1, max_size=3000))
def test_random_bytes_at_any_stage(stage: str, junk: bytes) -> None:
    async def attack(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if stage == "raw":
            writer.write(junk)
        elif stage == "after-multistream":
            ms = multistream.MultistreamDialer([noise.PROTOCOL_ID])
            writer.write(ms.initiate())
            await read_some(reader)
            writer.write(junk)
        elif stage == "after-noise":
            transport = await secured(reader, writer)
            writer.write(transport.encrypt(junk))
        else:
            transport, _ = await muxed(reader, writer)
            writer.write(transport.encrypt(junk))

    asyncio.run(attack_then_check(attack))


async def test_silent_peer_is_dropped_after_idle_timeout() -> None:
    """A peer that completes the handshake and then goes silent (no pong) is disconnected."""
    from kosmesh.wire.connection import ConnectionLimits
    from kosmesh.wire.host import HostLimits

    limits = HostLimits(connection=ConnectionLimits(idle_timeout=0.4, keepalive_interval=0.1))
    target = Host(Ed25519PrivateKey.generate(), limits=limits)
    addr = await target.listen("/ip4/127.0.0.1/tcp/0")
    reader, writer = await asyncio.open_connection(*addr.tcp_endpoint())
    try:
        await muxed(reader, writer)
        async with asyncio.timeout(5):
            while await reader.read(65536):  # keepalive pings we never answer, then EOF
                pass
        assert reader.at_eof()
        assert target.connections == []
    finally:
        writer.close()
        await target.close()


async def test_a_writer_that_ignores_drain_is_stopped_at_the_cap() -> None:
    """A handler writing to a peer that reads nothing gets WriteBufferFullError; its stream is
    reset and nothing else is harmed."""
    from kosmesh.wire.connection import ConnectionLimits, StreamResetError, WriteBufferFullError
    from kosmesh.wire.host import HostLimits

    outcome: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()

    async def flood(stream: Stream) -> None:
        try:
            for _ in range(64):
                stream.write(b"a" * 256 * 1024)  # never awaits drain
        except BaseException as exc:
            outcome.set_result(exc)
            raise
        outcome.set_result(None)

    limits = HostLimits(connection=ConnectionLimits(max_stream_write_buffer=1024 * 1024))
    target = Host(Ed25519PrivateKey.generate(), limits=limits)
    target.set_stream_handler("/test/flood/1.0.0", flood)
    target.set_stream_handler(ECHO, echo_handler)
    addr = await target.listen("/ip4/127.0.0.1/tcp/0")
    reader = Host(Ed25519PrivateKey.generate())
    try:
        conn = await reader.dial(addr)
        stream = await conn.open_stream("/test/flood/1.0.0")  # and never read from it
        error = await asyncio.wait_for(outcome, 5)
        assert isinstance(error, WriteBufferFullError)
        [served] = target.connections
        assert served.buffered_out <= 2 * 1024 * 1024 + 256 * 1024  # the cap plus one write, at most
        with pytest.raises(StreamResetError):
            while await stream.read():
                pass
        echo = await conn.open_stream(ECHO)
        await echo.write_all(b"unharmed")
        assert await echo.readexactly(8) == b"unharmed"
    finally:
        await reader.close()
        await target.close()
