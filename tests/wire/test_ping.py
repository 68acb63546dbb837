"""libp2p ping: verbatim 32-byte echoes, in order, with bounded buffering; the service over loopback."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kosmesh.identity import Ed25519PrivateKey
from kosmesh.wire.attach import attach_identify_and_ping
from kosmesh.wire.connection import ProtocolNegotiationError, Stream
from kosmesh.wire.host import Host
from kosmesh.wire.multiaddr import Multiaddr
from kosmesh.wire.ping import MAX_OUTSTANDING, PING_SIZE, PingError, PingInitiator, PingResponder
from kosmesh.wire.ping_service import PING_PROTOCOL, PingService

_payload = st.binary(min_size=PING_SIZE, max_size=PING_SIZE)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def test_round_trip() -> None:
    initiator, responder = PingInitiator(), PingResponder()
    payload = bytes(range(32))
    sent = initiator.request(payload)
    assert sent == payload
    assert initiator.outstanding == 1
    echo = responder.receive_data(sent)
    assert echo == payload
    assert initiator.receive_data(echo[:10]) == []
    assert initiator.receive_data(echo[10:]) == [payload]
    assert initiator.outstanding == 0


def test_responder_holds_partial_payloads() -> None:
    responder = PingResponder()
    assert responder.receive_data(b"a" * 31) == b""
    assert responder.receive_data(b"a" + b"b" * 40) == b"a" * 32 + b"b" * 32
    assert responder.receive_data(b"b" * 24) == b"b" * 32


def test_initiator_rejects_wrong_echo() -> None:
    initiator = PingInitiator()
    initiator.request(b"\x01" * 32)
    with pytest.raises(PingError, match="does not match"):
        initiator.receive_data(b"\x02" * 32)
    with pytest.raises(PingError):
        initiator.receive_data(b"")  # stays failed


def test_initiator_rejects_unsolicited_data() -> None:
    with pytest.raises(PingError, match="never requested"):
        PingInitiator().receive_data(b"x")
    initiator = PingInitiator()
    initiator.request(b"\x00" * 32)
    with pytest.raises(PingError):
        initiator.receive_data(b"\x00" * 33)


def test_request_validation() -> None:
    initiator = PingInitiator()
    for bad in (b"", b"x" * 31, b"x" * 33):
        with pytest.raises(PingError):
            initiator.request(bad)
    for i in range(MAX_OUTSTANDING):
        initiator.request(bytes([i]) * 32)
    with pytest.raises(PingError, match="outstanding"):
        initiator.request(b"\xff" * 32)


@given(
    st.lists(_payload, min_size=1, max_size=MAX_OUTSTANDING), st.lists(st.integers(0, 10_000), max_size=10)
)
def test_echoes_in_order_under_arbitrary_chunking(payloads: list[bytes], cuts: list[int]) -> None:
    initiator, responder = PingInitiator(), PingResponder()
    wire = b"".join(initiator.request(p) for p in payloads)
    echoed = b""
    for piece in _split(wire, cuts):
        echoed += responder.receive_data(piece)
        assert len(responder._partial) < PING_SIZE
    assert echoed == wire
    done: list[bytes] = []
    for piece in _split(echoed, cuts[::-1]):
        done += initiator.receive_data(piece)
        assert len(initiator._buf) < PING_SIZE
    assert done == payloads


@given(st.binary(max_size=300), st.lists(st.integers(0, 10_000), max_size=10))
def test_responder_echoes_any_stream_verbatim(data: bytes, cuts: list[int]) -> None:
    responder = PingResponder()
    out = b"".join(responder.receive_data(piece) for piece in _split(data, cuts))
    assert out == data[: len(data) - len(data) % PING_SIZE]
    assert responder._partial == data[len(out) :]


@given(st.lists(_payload, max_size=4), st.binary(max_size=200), st.lists(st.integers(0, 10_000), max_size=6))
def test_initiator_hostile_bytes(payloads: list[bytes], data: bytes, cuts: list[int]) -> None:
    initiator = PingInitiator()
    for p in payloads:
        initiator.request(p)
    try:
        for piece in _split(data, cuts):
            initiator.receive_data(piece)
            assert len(initiator._buf) < PING_SIZE
    except PingError:
        pass


# -- the service, on real loopback sockets ------------------------------------------------
@pytest.fixture
async def served() -> AsyncIterator[tuple[Host, PingService, Multiaddr]]:
    """A host serving ping, and a bare host with a PingService to ask it."""
    server, client = Host(Ed25519PrivateKey.generate()), Host(Ed25519PrivateKey.generate())
    services = await attach_identify_and_ping(server)
    addr = await server.listen("/ip4/127.0.0.1/tcp/0")
    try:
        yield client, services.ping, addr
    finally:
        await client.close()
        await server.close()


async def test_service_pings_by_address_peer_and_connection(served: tuple[Host, PingService, Multiaddr]) -> None:
    client, server_ping, addr = served
    pinger = PingService(client)
    rtts = await pinger.ping(addr, count=3)
    assert len(rtts) == 3 and all(0 < r < 5 for r in rtts)
    assert len(await pinger.ping(addr.peer_id or addr)) == 1  # a connected peer's id
    conn = await client.dial(addr)
    assert len(await pinger.ping(conn, count=2)) == 2
    assert server_ping.streams_served == 3
    assert server_ping.describe() == {"streams_served": 3}


async def test_ping_to_a_host_that_does_not_serve_it_fails_cleanly(
    served: tuple[Host, PingService, Multiaddr],
) -> None:
    client, _, addr = served
    silent = Host(Ed25519PrivateKey.generate())
    silent_addr = await silent.listen("/ip4/127.0.0.1/tcp/0")
    try:
        with pytest.raises(ProtocolNegotiationError):
            await PingService(client).ping(silent_addr)
        assert len(await PingService(client).ping(addr)) == 1  # the client is unharmed
    finally:
        await silent.close()


async def test_a_wrong_echo_fails_that_ping_and_resets_its_stream(
    served: tuple[Host, PingService, Multiaddr],
) -> None:
    client, _, _ = served
    liar = Host(Ed25519PrivateKey.generate())

    async def wrong_echo(stream: Stream) -> None:
        await stream.readexactly(PING_SIZE)
        await stream.write_all(b"\x00" * PING_SIZE)
        await stream.read()

    liar.set_stream_handler(PING_PROTOCOL, wrong_echo)
    addr = await liar.listen("/ip4/127.0.0.1/tcp/0")
    try:
        with pytest.raises(PingError, match="does not match"):
            await PingService(client).ping(addr)
        conn = await client.dial(addr)
        assert await conn.ping() > 0  # the connection outlives the bad stream
    finally:
        await liar.close()
