"""The host on real loopback sockets: dial, streams, callbacks, connection slots and their limits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.wire.connection import (
    Connection,
    ConnectionLimits,
    ProtocolNegotiationError,
    Stream,
    StreamResetError,
)
from kosmesh.wire.host import DialError, Host, HostLimits
from kosmesh.wire.multiaddr import Multiaddr
from tests.waiting import wait_for

ECHO = "/test/echo/1.0.0"


async def echo_handler(stream: Stream) -> None:
    while True:
        chunk = await stream.read()
        if not chunk:
            return
        await stream.write_all(chunk)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Host, Host, Multiaddr]]:
    a = Host(Ed25519PrivateKey.generate())
    b = Host(Ed25519PrivateKey.generate())
    b.set_stream_handler(ECHO, echo_handler)
    addr = await b.listen("/ip4/127.0.0.1/tcp/0")
    try:
        yield a, b, addr
    finally:
        await a.close()
        await b.close()


async def test_listen_address_names_the_peer(pair: tuple[Host, Host, Multiaddr]) -> None:
    _, b, addr = pair
    assert addr.peer_id == b.peer_id
    assert addr.tcp_endpoint()[0] == "127.0.0.1"
    assert addr.tcp_endpoint()[1] > 0


async def test_dial_authenticates_both_sides(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, b, addr = pair
    conn = await a.dial(addr)
    assert conn.remote_peer_id == b.peer_id
    inbound = await wait_for(lambda: b.connection_to(a.peer_id))
    assert inbound.remote_peer_id == a.peer_id
    assert inbound.direction == "inbound"


async def test_dial_reuses_the_live_connection(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, _, addr = pair
    first = await a.dial(addr)
    second = await a.dial(addr)
    assert first is second


async def test_concurrent_dials_share_one_connection(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, _, addr = pair
    conns = await asyncio.gather(*(a.dial(addr) for _ in range(5)))
    assert len({c.connection_id for c in conns}) == 1


async def test_wrong_peer_id_is_refused(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, _, addr = pair
    impostor = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
    with pytest.raises(DialError, match="handshake"):
        await a.dial(addr.with_peer_id(impostor))


async def test_unreachable_address_is_a_dial_error() -> None:
    a = Host(Ed25519PrivateKey.generate())
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    try:
        with pytest.raises(DialError, match="cannot reach"):
            await a.dial(f"/ip4/127.0.0.1/tcp/{port}")
    finally:
        await a.close()


async def test_bad_multiaddr_is_a_dial_error() -> None:
    a = Host(Ed25519PrivateKey.generate())
    try:
        with pytest.raises(DialError):
            await a.dial("/ip4/999.1.1.1/tcp/1")
    finally:
        await a.close()


async def test_custom_protocol_carries_data_both_ways(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, _, addr = pair
    stream = await a.new_stream(addr, ECHO)
    assert stream.protocol == ECHO
    payload = bytes(range(256)) * 1024  # 256 KiB: crosses the initial yamux window
    stream.write(payload)
    await stream.close()
    got = await stream.read_all(limit=len(payload) + 1)
    assert got == payload


async def test_reverse_direction_stream(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, b, addr = pair
    a.set_stream_handler(ECHO, echo_handler)
    await a.dial(addr)
    back = await wait_for(lambda: b.connection_to(a.peer_id))
    stream = await back.open_stream(ECHO)
    await stream.write_all(b"from the listener")
    await stream.close()
    assert await stream.read_all(limit=1024) == b"from the listener"


async def test_many_concurrent_streams(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, _, addr = pair
    conn = await a.dial(addr)

    async def one(i: int) -> bytes:
        stream = await conn.open_stream(ECHO)
        await stream.write_all(i.to_bytes(4, "big") * 100)
        await stream.close()
        return await stream.read_all(limit=10_000)

    results = await asyncio.gather(*(one(i) for i in range(100)))
    assert all(r == i.to_bytes(4, "big") * 100 for i, r in enumerate(results))


async def test_unsupported_protocol_is_refused_without_harming_connection(
    pair: tuple[Host, Host, Multiaddr],
) -> None:
    a, _, addr = pair
    conn = await a.dial(addr)
    with pytest.raises(ProtocolNegotiationError):
        await conn.open_stream("/nobody/speaks/this")
    stream = await conn.open_stream(["/nobody/speaks/this", ECHO])
    assert stream.protocol == ECHO
    assert await conn.ping() >= 0


async def test_open_stream_times_out_when_the_remote_never_answers(
    pair: tuple[Host, Host, Multiaddr],
) -> None:
    _, _, addr = pair
    a = Host(
        Ed25519PrivateKey.generate(),
        limits=HostLimits(connection=ConnectionLimits(stream_negotiation_timeout=0.2)),
    )
    try:
        conn = await a.dial(addr)
        assert conn._transport is not None
        conn._transport.pause_reading()  # the remote's answers never reach us
        started = asyncio.get_running_loop().time()
        with pytest.raises(ProtocolNegotiationError, match=r"no answer negotiating /test/echo/1\.0\.0"):
            await conn.open_stream(ECHO)
        assert 0.15 < asyncio.get_running_loop().time() - started < 2
        assert conn._core.negotiating == 0 and conn._core.negotiation_deadlines == 0 and not conn._pending_accept
        conn._transport.resume_reading()  # we hear again: the connection is still usable
        stream = await conn.open_stream(ECHO)
        await stream.write_all(b"still alive")
        assert await stream.readexactly(11) == b"still alive"
    finally:
        await a.close()


async def test_yamux_ping(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, _, addr = pair
    conn = await a.dial(addr)
    assert 0 < await conn.ping() < 5


async def test_a_bare_host_serves_no_protocol_of_its_own(pair: tuple[Host, Host, Multiaddr]) -> None:
    """Identify and ping are services (kosmesh.wire.attach); the host only routes streams."""
    a, b, addr = pair
    assert b.protocols == [ECHO]
    conn = await a.dial(addr)
    with pytest.raises(ProtocolNegotiationError):
        await conn.open_stream("/ipfs/id/1.0.0")


async def test_handler_exception_resets_only_that_stream(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, b, addr = pair

    async def broken(stream: Stream) -> None:
        raise RuntimeError("handler bug")

    b.set_stream_handler("/test/broken/1.0.0", broken)
    conn = await a.dial(addr)
    stream = await conn.open_stream("/test/broken/1.0.0")
    with pytest.raises(StreamResetError):
        while await stream.read():
            pass
    echo = await conn.open_stream(ECHO)
    await echo.write_all(b"still fine")
    await echo.close()
    assert await echo.read_all(limit=100) == b"still fine"


async def test_handshake_timeout_drops_silent_clients() -> None:
    limits = HostLimits(connection=ConnectionLimits(handshake_timeout=0.3))
    b = Host(Ed25519PrivateKey.generate(), limits=limits)
    addr = await b.listen("/ip4/127.0.0.1/tcp/0")
    host, port = addr.tcp_endpoint()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async with asyncio.timeout(5):
            while await reader.read(1024):  # the listener's multistream header, then EOF
                pass
        assert reader.at_eof()
    finally:
        writer.close()
        await b.close()


async def test_close_tears_down_both_ends(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, b, addr = pair
    conn = await a.dial(addr)
    await conn.close()
    assert conn.closed
    await wait_for(lambda: b.connection_to(a.peer_id) is None)
    assert b.connection_to(a.peer_id) is None


# -- callback receivers (Stream.set_receiver) ---------------------------------------------
RECV = "/test/receiver/1.0.0"


class Receiver:
    """Collects what a stream's receive callbacks deliver; ``ended`` resolves on end of stream."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.eof_calls = 0

    def on_data(self, chunk: bytes) -> None:
        assert not self.ended.done(), "data after end of stream"
        self.chunks.append(chunk)

    def on_eof(self) -> None:
        self.eof_calls += 1
        if not self.ended.done():
            self.ended.set_result(None)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


async def test_receiver_callbacks_carry_data_and_eof(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, b, addr = pair
    served: asyncio.Future[tuple[Stream, Receiver]] = asyncio.get_running_loop().create_future()

    async def handler(stream: Stream) -> None:
        receiver = Receiver()

        def on_data(chunk: bytes) -> None:
            receiver.on_data(chunk)
            stream.write(chunk.upper())  # answer from inside the callback

        stream.set_receiver(on_data, receiver.on_eof)
        with pytest.raises(RuntimeError):
            await stream.read()  # read() and a receiver are exclusive
        served.set_result((stream, receiver))
        await receiver.ended

    b.set_stream_handler(RECV, handler)
    stream = await (await a.dial(addr)).open_stream(RECV)
    for part in (b"hello ", b"callback ", b"world"):
        stream.write(part)
    await stream.close()
    assert await stream.read_all(limit=1024) == b"HELLO CALLBACK WORLD"
    server_stream, receiver = await served
    assert receiver.data == b"hello callback world"
    assert receiver.eof_calls == 1
    assert not server_stream.is_reset
    assert await server_stream.read() == b""  # the receiver is forgotten at end of stream


async def test_receiver_credits_the_window(pair: tuple[Host, Host, Multiaddr]) -> None:
    """Several receive windows through a callback: consumption must be granted back."""
    a, b, addr = pair
    total = 3 * ConnectionLimits().stream_receive_window + 12345
    got: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def counter(stream: Stream) -> None:
        receiver = Receiver()
        stream.set_receiver(receiver.on_data, receiver.on_eof)
        await receiver.ended
        got.set_result(len(receiver.data))

    b.set_stream_handler(RECV, counter)
    stream = await (await a.dial(addr)).open_stream(RECV)
    chunk = b"w" * 65536
    sent = 0
    async with asyncio.timeout(10):  # stalls for good if the window is never granted back
        while sent < total:
            piece = chunk[: total - sent]
            await stream.write_all(piece)
            sent += len(piece)
    await stream.close()
    assert await asyncio.wait_for(got, 10) == total


async def test_set_receiver_delivers_buffered_data_then_eof(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, b, addr = pair
    arrived: asyncio.Future[Stream] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def late(stream: Stream) -> None:
        arrived.set_result(stream)
        await release.wait()

    b.set_stream_handler(RECV, late)
    stream = await (await a.dial(addr)).open_stream(RECV)
    stream.write(b"early bytes")
    await stream.close()
    server_stream = await arrived
    await wait_for(lambda: server_stream._eof)  # data and FIN are buffered, nobody reading yet
    receiver = Receiver()
    server_stream.set_receiver(receiver.on_data, receiver.on_eof)
    assert receiver.data == b"early bytes"  # delivered before set_receiver returned
    assert receiver.ended.done() and receiver.eof_calls == 1
    release.set()


async def test_receiver_error_resets_only_that_stream(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, b, addr = pair
    ended: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    async def faulty(stream: Stream) -> None:
        def on_data(chunk: bytes) -> None:
            raise ValueError("receiver bug")

        def on_eof() -> None:
            ended.set_result(stream.is_reset)

        stream.set_receiver(on_data, on_eof)
        await ended

    b.set_stream_handler(RECV, faulty)
    conn = await a.dial(addr)
    bad = await conn.open_stream(RECV)
    bad.write(b"boom")
    with pytest.raises(StreamResetError):
        while await bad.read():
            pass
    assert await ended is True  # on_eof still told the receiver, and the stream is reset
    echo = await conn.open_stream(ECHO)
    await echo.write_all(b"still fine")
    await echo.close()
    assert await echo.read_all(limit=100) == b"still fine"
    assert not conn.closed


async def test_receiver_sees_remote_reset_and_connection_loss(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, b, addr = pair
    receivers: asyncio.Queue[tuple[Stream, Receiver]] = asyncio.Queue()

    async def handler(stream: Stream) -> None:
        receiver = Receiver()
        stream.set_receiver(receiver.on_data, receiver.on_eof)
        await receivers.put((stream, receiver))
        await receiver.ended

    b.set_stream_handler(RECV, handler)
    conn = await a.dial(addr)
    first = await conn.open_stream(RECV)
    await first.write_all(b"x")
    server_first, receiver = await receivers.get()
    first.reset()
    await asyncio.wait_for(receiver.ended, 5)
    assert server_first.is_reset and receiver.eof_calls == 1

    second = await conn.open_stream(RECV)
    await second.write_all(b"y")
    server_second, receiver = await receivers.get()
    await wait_for(lambda: receiver.data == b"y")
    await conn.close()
    await asyncio.wait_for(receiver.ended, 5)
    assert server_second.connection.closed and receiver.eof_calls == 1


async def test_outbound_stream_receiver(pair: tuple[Host, Host, Multiaddr]) -> None:
    """The dialing side can use a receiver too (responses arrive by callback)."""
    a, _, addr = pair
    stream = await (await a.dial(addr)).open_stream(ECHO)
    receiver = Receiver()
    stream.set_receiver(receiver.on_data, receiver.on_eof)
    stream.write(b"ping over echo")
    await stream.close()
    await asyncio.wait_for(receiver.ended, 5)
    assert receiver.data == b"ping over echo"
    stream.set_receiver(None)
    assert await stream.read() == b""  # back in read() mode: the stream has ended


async def test_agreed_streams_leave_no_negotiation_timers(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, b, addr = pair
    conn = await a.dial(addr)
    for _ in range(50):
        stream = await conn.open_stream(ECHO)
        await stream.write_all(b"x")
        await stream.close()
        assert await stream.read_all(limit=10) == b"x"
    inbound = await wait_for(lambda: b.connection_to(a.peer_id))
    assert inbound._core.negotiation_deadlines == 0
    assert conn._core.negotiation_deadlines == 0


# -- connect and disconnect callbacks ---------------------------------------------------
async def test_callbacks_hear_connect_and_disconnect_once(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, b, addr = pair
    events: list[tuple[str, PeerId]] = []
    b.on_connected.append(lambda conn: events.append(("up", conn.remote_peer_id)))
    b.on_disconnected.append(lambda conn: events.append(("down", conn.remote_peer_id)))
    conn = await a.dial(addr)
    await wait_for(lambda: events)
    await conn.close()
    await wait_for(lambda: len(events) == 2)
    assert events == [("up", a.peer_id), ("down", a.peer_id)]
    assert b.connections == [] and b.describe()["established_inbound"] == 0


async def test_a_failing_callback_is_logged_with_context_and_the_others_still_run(
    pair: tuple[Host, Host, Multiaddr], caplog: pytest.LogCaptureFixture
) -> None:
    a, b, addr = pair
    heard: list[str] = []

    def broken_on_connect(conn: Connection) -> None:
        raise RuntimeError("subscriber bug")

    def broken_on_disconnect(conn: Connection) -> None:
        raise RuntimeError("subscriber bug on the way out")

    b.on_connected.extend([broken_on_connect, lambda conn: heard.append("connected")])
    b.on_disconnected.extend([broken_on_disconnect, lambda conn: heard.append("disconnected")])
    with caplog.at_level(logging.ERROR, logger="kosmesh.wire.host"):
        conn = await a.dial(addr)
        await wait_for(lambda: heard == ["connected"])
        await conn.close()
        await wait_for(lambda: heard == ["connected", "disconnected"])
    messages = [r.getMessage() for r in caplog.records]
    assert any("on_connected callback" in m and "broken_on_connect" in m and str(a.peer_id) in m for m in messages)
    assert any("on_disconnected callback" in m and "broken_on_disconnect" in m for m in messages)
    assert all(r.exc_info is not None for r in caplog.records)  # with the traceback


async def test_spawned_task_failure_is_logged_as_what_it_was(caplog: pytest.LogCaptureFixture) -> None:
    host = Host(Ed25519PrivateKey.generate())

    async def fails() -> None:
        raise RuntimeError("background bug")

    with caplog.at_level(logging.ERROR, logger="kosmesh.wire.host"):
        task = host.spawn(fails(), "the example job")
        with pytest.raises(RuntimeError):
            await task
        await wait_for(lambda: caplog.records)  # done callbacks run on a later loop turn
    await host.close()
    assert [r.getMessage() for r in caplog.records] == ["the example job failed"]
