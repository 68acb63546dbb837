"""Identify: protobuf layout per the spec, round trips, merging, hostile input; the service over loopback."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kosmesh.codec.protobuf import encode_fields
from kosmesh.codec.varint import encode_uvarint
from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.wire.attach import WireServices, attach_identify_and_ping, attach_services
from kosmesh.wire.connection import Stream
from kosmesh.wire.host import Host
from kosmesh.wire.identify import (
    MAX_ITEMS,
    MAX_MESSAGE_SIZE,
    IdentifyError,
    IdentifyInfo,
    IdentifyReader,
    decode_identify,
    encode_identify,
)
from kosmesh.wire.identify_service import (
    IDENTIFY_PROTOCOL,
    IDENTIFY_PUSH_PROTOCOL,
    IdentifyService,
    PeerInfo,
)
from kosmesh.wire.multiaddr import Multiaddr
from kosmesh.wire.ping_service import PING_PROTOCOL
from tests.waiting import wait_for

KEY = Ed25519PrivateKey(bytes(range(32))).public_key
ADDR = Multiaddr.parse("/ip4/1.2.3.4/tcp/4001")


def _prefixed(body: bytes) -> bytes:
    return encode_uvarint(len(body)) + body


def test_field_numbers_match_the_spec() -> None:
    info = IdentifyInfo(
        protocol_version="ipfs/0.1.0",
        agent_version="kosmesh/0.1",
        public_key=KEY.to_protobuf(),
        listen_addrs=(ADDR,),
        observed_addr=Multiaddr.parse("/ip4/5.6.7.8/tcp/1"),
        protocols=("/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"),
        signed_peer_record=b"\x01\x02",
    )
    expected = encode_fields(
        [
            (1, KEY.to_protobuf()),
            (2, ADDR.to_bytes()),
            (3, b"/ipfs/id/1.0.0"),
            (3, b"/ipfs/ping/1.0.0"),
            (4, Multiaddr.parse("/ip4/5.6.7.8/tcp/1").to_bytes()),
            (5, b"ipfs/0.1.0"),
            (6, b"kosmesh/0.1"),
            (8, b"\x01\x02"),
        ]
    )
    assert encode_identify(info) == _prefixed(expected)
    assert decode_identify(_prefixed(expected)) == info
    # the smallest message, byte for byte: tag (5 << 3 | 2) = 0x2a
    assert encode_identify(IdentifyInfo(protocol_version="ipfs/0.1.0")) == b"\x0c\x2a\x0aipfs/0.1.0"


def test_empty_message_decodes_to_defaults() -> None:
    assert decode_identify(b"\x00") == IdentifyInfo()
    assert encode_identify(IdentifyInfo()) == b"\x00"


def test_peer_id() -> None:
    info = IdentifyInfo(public_key=KEY.to_protobuf())
    assert info.peer_id() == PeerId.from_public_key(KEY)
    for bad in [b"", b"\x08\x00\x12\x04abcd", b"\x08\x01\x12\x03abc", b"\xff", b"\x08\x01"]:
        with pytest.raises(IdentifyError):
            IdentifyInfo(public_key=bad).peer_id()


def test_undecodable_addresses_are_skipped() -> None:
    body = encode_fields(
        [
            (2, bytes.fromhex("cc03")),  # /quic (unsupported)
            (2, ADDR.to_bytes()),
            (2, b""),
            (2, b"\xff\xff"),
            (4, b"\x04\x01"),  # truncated observed address
            (3, b"\xff\xfe"),  # a protocol id that is not UTF-8
            (3, b"/ok/1"),
            (6, b"agent\xff"),  # display-only: replaced, not fatal
            (7, 42),  # unknown field
            (2, 5),  # known field number with the wrong wire type
        ]
    )
    info = decode_identify(_prefixed(body))
    assert info.listen_addrs == (ADDR,)
    assert info.observed_addr is None
    assert info.protocols == ("/ok/1",)
    assert info.agent_version == "agent\ufffd"


def test_last_scalar_wins_and_repeated_fields_accumulate() -> None:
    body = encode_fields([(6, b"a"), (2, ADDR.to_bytes()), (6, b"b"), (2, ADDR.to_bytes())])
    info = decode_identify(_prefixed(body))
    assert info.agent_version == "b"
    assert info.listen_addrs == (ADDR, ADDR)


def test_limits() -> None:
    too_many = IdentifyInfo(protocols=tuple(f"/p/{i}" for i in range(MAX_ITEMS + 1)))
    with pytest.raises(IdentifyError):
        encode_identify(too_many)
    at_limit = IdentifyInfo(protocols=tuple(f"/p/{i}" for i in range(MAX_ITEMS)))
    assert decode_identify(encode_identify(at_limit)) == at_limit
    body = encode_fields([(2, ADDR.to_bytes())] * (MAX_ITEMS + 1))
    with pytest.raises(IdentifyError):
        decode_identify(_prefixed(body))
    with pytest.raises(IdentifyError):
        encode_identify(IdentifyInfo(agent_version="x" * MAX_MESSAGE_SIZE))
    with pytest.raises(IdentifyError):
        decode_identify(encode_uvarint(MAX_MESSAGE_SIZE + 1) + b"\x00" * (MAX_MESSAGE_SIZE + 1))


@pytest.mark.parametrize(
    "data",
    [b"", b"\x05\x2a\x03ab", b"\x02\x2a\x00\x00", b"\xff" * 10, b"\x02\x2a\x05", b"\x01\x07", b"\x80\x00"],
)
def test_decode_rejects(data: bytes) -> None:
    with pytest.raises(IdentifyError):
        decode_identify(data)


def test_reader_merges_go_style_split_messages() -> None:
    # go-libp2p sends a large identify as two messages: everything, then the signed record.
    first = encode_identify(IdentifyInfo(agent_version="go", listen_addrs=(ADDR,)))
    second = encode_identify(IdentifyInfo(signed_peer_record=b"envelope"))
    reader = IdentifyReader()
    assert reader.receive_data(first[:3]) is None
    partial = reader.receive_data(first[3:] + second[:2])
    assert partial == IdentifyInfo(agent_version="go", listen_addrs=(ADDR,))
    merged = reader.receive_data(second[2:])
    assert merged == IdentifyInfo(agent_version="go", listen_addrs=(ADDR,), signed_peer_record=b"envelope")
    assert reader.eof() == merged


def test_reader_eof_errors() -> None:
    with pytest.raises(IdentifyError, match="without"):
        IdentifyReader().eof()
    reader = IdentifyReader()
    reader.receive_data(b"\x05\x2a")
    with pytest.raises(IdentifyError, match="inside"):
        reader.eof()


def test_reader_bounds() -> None:
    reader = IdentifyReader()
    with pytest.raises(IdentifyError):
        reader.receive_data(encode_uvarint(MAX_MESSAGE_SIZE + 1))  # refused before the body arrives
    with pytest.raises(IdentifyError):
        reader.receive_data(b"\x00")  # stays failed
    many = IdentifyReader()
    with pytest.raises(IdentifyError):
        many.receive_data(b"\x00" * 100)  # endless empty messages
    big = IdentifyReader()
    half = MAX_MESSAGE_SIZE // 2 + 1
    big.receive_data(_prefixed(encode_fields([(9, b"x" * (half - 4))])))
    with pytest.raises(IdentifyError):
        big.receive_data(encode_uvarint(half))  # the sum of messages is capped too


# -- properties ---------------------------------------------------------------------------
_text = st.text(st.characters(codec="utf-8"), max_size=30)
_addrs = st.sampled_from(
    [
        "/ip4/1.2.3.4/tcp/4001",
        "/ip6/::1/udp/9/quic-v1",
        "/dns4/example.com/tcp/443/wss",
        "/ip4/10.0.0.1/tcp/1/p2p/12D3KooW9pP4Seg3kZYhySpuVjn1RPdQBsUFZKiFxGMGQN5MeL6A/p2p-circuit",
    ]
).map(Multiaddr.parse)
_info = st.builds(
    IdentifyInfo,
    protocol_version=_text,
    agent_version=_text,
    public_key=st.binary(max_size=64),
    listen_addrs=st.lists(_addrs, max_size=6).map(tuple),
    observed_addr=st.none() | _addrs,
    protocols=st.lists(_text, max_size=6).map(tuple),
    signed_peer_record=st.none() | st.binary(max_size=64),
)


@given(_info)
def test_round_trip(info: IdentifyInfo) -> None:
    assert decode_identify(encode_identify(info)) == info


@given(_info, st.lists(st.integers(0, 10_000), max_size=10))
def test_reader_under_arbitrary_chunking(info: IdentifyInfo, cuts: list[int]) -> None:
    wire = encode_identify(info)
    points = sorted({c % (len(wire) + 1) for c in cuts})
    bounds = [0, *points, len(wire)]
    reader = IdentifyReader()
    results = [reader.receive_data(wire[a:b]) for a, b in itertools.pairwise(bounds)]
    assert [r for r in results if r is not None] == [info]
    assert reader.eof() == info


@given(st.binary(max_size=400))
def test_random_bytes_only_raise_identify_error(data: bytes) -> None:
    with contextlib.suppress(IdentifyError):
        decode_identify(data)
    with contextlib.suppress(IdentifyError):
        decode_identify(_prefixed(data))  # a well-framed but arbitrary body


@given(st.binary(max_size=400), st.lists(st.integers(0, 10_000), max_size=8))
def test_reader_random_bytes_bounded(data: bytes, cuts: list[int]) -> None:
    reader = IdentifyReader()
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    try:
        for a, b in itertools.pairwise(bounds):
            reader.receive_data(data[a:b])
            assert reader._reader.buffered <= MAX_MESSAGE_SIZE + 10
        reader.eof()
    except IdentifyError:
        pass


@given(_info, st.data())
def test_truncated_messages_are_rejected(info: IdentifyInfo, data: st.DataObject) -> None:
    wire = encode_identify(info)
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(IdentifyError):
        decode_identify(wire[:cut])
    with pytest.raises(IdentifyError):
        decode_identify(wire + b"\x00")


# -- the service, on real loopback sockets ------------------------------------------------
ECHO = "/test/echo/1.0.0"


async def echo(stream: Stream) -> None:
    while chunk := await stream.read():
        await stream.write_all(chunk)


@pytest.fixture
async def hosts() -> AsyncIterator[Callable[[], Awaitable[tuple[Host, WireServices]]]]:
    made: list[Host] = []

    async def make() -> tuple[Host, WireServices]:
        host = Host(Ed25519PrivateKey.generate())
        made.append(host)
        services = await attach_identify_and_ping(host)
        await host.listen("/ip4/127.0.0.1/tcp/0")
        return host, services

    yield make
    for host in made:
        await host.close()


def liar_identify(agent: str) -> IdentifyInfo:
    """A well-formed identify message naming a key other than the sender's."""
    other = Ed25519PrivateKey.generate().public_key
    return IdentifyInfo(agent_version=agent, public_key=other.to_protobuf(), protocols=(ECHO,))


async def test_both_sides_identify_each_new_connection(
    hosts: Callable[[], Awaitable[tuple[Host, WireServices]]],
) -> None:
    (a, a_services), (b, b_services) = await hosts(), await hosts()
    b.set_stream_handler(ECHO, echo)  # registered after the services: identify reports it anyway
    told: list[PeerId] = []
    a_services.identify.on_identified.append(lambda peer, info: told.append(peer))
    await a.dial(b.listen_addrs[0])
    info = await wait_for(lambda: a_services.identify.peer_info.get(b.peer_id))
    assert told == [b.peer_id]
    assert {ECHO, IDENTIFY_PROTOCOL, IDENTIFY_PUSH_PROTOCOL, PING_PROTOCOL} <= set(info.protocols)
    assert info.agent_version == b.agent_version
    assert b.listen_addrs[0].without_peer_id() in info.listen_addrs
    assert info.observed_addr is not None and info.observed_addr.tcp_endpoint()[0] == "127.0.0.1"
    back = await wait_for(lambda: b_services.identify.peer_info.get(a.peer_id))
    assert ECHO not in back.protocols


async def test_what_a_peer_said_is_forgotten_with_its_last_connection(
    hosts: Callable[[], Awaitable[tuple[Host, WireServices]]],
) -> None:
    (a, services), (b, _) = await hosts(), await hosts()
    first = await a.dial(b.listen_addrs[0])
    second = await a.dial(b.listen_addrs[0], reuse=False)
    await wait_for(lambda: b.peer_id in services.identify.peer_info)
    await first.close()
    await wait_for(lambda: len(a.connections) == 1)
    assert b.peer_id in services.identify.peer_info  # a connection remains
    await second.close()
    await wait_for(lambda: b.peer_id not in services.identify.peer_info)


async def test_an_identify_naming_another_key_aborts_the_connection(
    hosts: Callable[[], Awaitable[tuple[Host, WireServices]]],
) -> None:
    target, services = await hosts()
    liar = Host(Ed25519PrivateKey.generate())

    async def lie(stream: Stream) -> None:
        await stream.write_all(encode_identify(liar_identify("impostor")))

    liar.set_stream_handler(IDENTIFY_PROTOCOL, lie)
    told: list[PeerId] = []
    services.identify.on_identified.append(lambda peer, info: told.append(peer))
    try:
        conn = await liar.dial(target.listen_addrs[0])
        await wait_for(lambda: conn.closed)  # the target hung up on the liar
        assert services.identify.mismatches == 1
        assert liar.peer_id not in services.identify.peer_info and told == []
        assert target.connection_to(liar.peer_id) is None
    finally:
        await liar.close()


async def test_a_push_updates_what_we_know_and_a_lying_push_aborts(
    hosts: Callable[[], Awaitable[tuple[Host, WireServices]]],
) -> None:
    (a, services), (b, _) = await hosts(), await hosts()
    conn = await a.dial(b.listen_addrs[0])
    await wait_for(lambda: b.peer_id in services.identify.peer_info)
    told: list[tuple[str, ...]] = []
    services.identify.on_identified.append(lambda peer, info: told.append(info.protocols))
    back = await wait_for(lambda: b.connection_to(a.peer_id))
    push = await back.open_stream(IDENTIFY_PUSH_PROTOCOL)
    await push.write_all(encode_identify(IdentifyInfo(protocols=("/new/1.0.0",))))  # partial: no key
    await push.close()
    await wait_for(lambda: told == [("/new/1.0.0",)])
    info = services.identify.peer_info[b.peer_id]
    assert info.protocols == ("/new/1.0.0",) and info.agent_version == b.agent_version  # the rest kept
    lying = await back.open_stream(IDENTIFY_PUSH_PROTOCOL)
    await lying.write_all(encode_identify(liar_identify("impostor")))
    await lying.close()
    await wait_for(lambda: conn.closed)
    assert services.identify.mismatches == 1


async def test_a_failing_subscriber_is_logged_and_the_others_still_hear(
    hosts: Callable[[], Awaitable[tuple[Host, WireServices]]], caplog: pytest.LogCaptureFixture
) -> None:
    (a, services), (b, _) = await hosts(), await hosts()
    heard: list[PeerId] = []

    def broken(peer: PeerId, info: PeerInfo) -> None:
        raise RuntimeError("subscriber bug")

    services.identify.on_identified.extend([broken, lambda peer, info: heard.append(peer)])
    with caplog.at_level(logging.ERROR, logger="kosmesh.wire.identify_service"):
        await a.dial(b.listen_addrs[0])
        await wait_for(lambda: heard == [b.peer_id])
    [record] = caplog.records
    assert "on_identified callback" in record.getMessage() and "broken" in record.getMessage()
    assert str(b.peer_id) in record.getMessage() and record.exc_info is not None


async def test_peer_info_is_capped(hosts: Callable[[], Awaitable[tuple[Host, WireServices]]]) -> None:
    a = Host(Ed25519PrivateKey.generate())
    identify = IdentifyService(a, max_peers=2)
    await attach_services(a, [identify])
    try:
        others = [await hosts() for _ in range(3)]
        for other, _ in others:
            await a.dial(other.listen_addrs[0])
            await wait_for(lambda other=other: other.peer_id in identify.peer_info)  # type: ignore[misc]
        assert list(identify.peer_info) == [others[1][0].peer_id, others[2][0].peer_id]  # the oldest made room
    finally:
        await a.close()
