"""The asyncio adapter on real loopback sockets: dial, streams, ping, identify, limits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.wire.connection import ConnectionLimits, ProtocolNegotiationError, Stream, StreamResetError
from kosmesh.wire.host import DialError, Host, HostLimits
from kosmesh.wire.multiaddr import Multiaddr

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


async def test_libp2p_ping_and_yamux_ping(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, _, addr = pair
    rtts = await a.ping(addr, count=3)
    assert len(rtts) == 3
    assert all(0 < r < 5 for r in rtts)
    conn = await a.dial(addr)
    assert 0 < await conn.ping() < 5


async def test_identify_reports_protocols_and_agent(pair: tuple[Host, Host, Multiaddr]) -> None:
    a, _b, addr = pair
    conn = await a.dial(addr)
    info = await a.request_identify(conn)
    assert ECHO in info.protocols
    assert "/ipfs/ping/1.0.0" in info.protocols
    assert info.agent_version.startswith("kosmesh/")
    assert addr.without_peer_id() in info.listen_addrs
    assert info.observed_addr is not None


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


async def test_connection_limit_refuses_extra_inbound() -> None:
    b = Host(Ed25519PrivateKey.generate(), limits=HostLimits(max_connections=1))
    addr = await b.listen("/ip4/127.0.0.1/tcp/0")
    a1, a2 = Host(Ed25519PrivateKey.generate()), Host(Ed25519PrivateKey.generate())
    try:
        await a1.dial(addr)
        with pytest.raises(DialError):
            await a2.dial(addr)
        assert (await a1.ping(b.peer_id))[0] > 0
    finally:
        for h in (a1, a2, b):
            await h.close()


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


async def wait_for(check, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    """Wait (yielding to I/O) until ``check()`` returns something truthy; return it."""
    async with asyncio.timeout(timeout):
        while not (value := check()):
            await asyncio.sleep(0.005)
        return value
