"""Fuzz targets for the wire protocols around Noise: multiaddrs, multistream-select, yamux, identify, ping."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterable, Sequence

from kosmesh.wire.identify import (
    IdentifyError,
    IdentifyInfo,
    IdentifyReader,
    decode_identify,
    encode_identify,
)
from kosmesh.wire.multiaddr import Multiaddr, MultiaddrError
from kosmesh.wire.multistream import (
    HEADER,
    NA_MESSAGE,
    MultistreamDialer,
    MultistreamError,
    MultistreamListener,
)
from kosmesh.wire.multistream import (
    encode_message as encode_multistream,
)
from kosmesh.wire.ping import MAX_OUTSTANDING, PING_SIZE, PingError, PingInitiator, PingResponder
from kosmesh.wire.slots import ConnectionSlots, address_group
from kosmesh.wire.yamux import (
    GO_AWAY_NORMAL,
    HEADER_SIZE,
    INITIAL_WINDOW,
    ConnectionTerminated,
    DataReceived,
    StreamOpened,
    YamuxSession,
)
from tests.fuzz.inputs import (
    ALICE,
    ALICE_PEER,
    BOB_PEER,
    fails_again,
    options,
    reads,
)
from tests.fuzz.registry import fuzz_target

# -- multiaddr -------------------------------------------------------------------------------------

_MULTIADDR_SEEDS = (
    "/ip4/127.0.0.1/tcp/4001",
    "/ip6/::1/tcp/4001/p2p/" + str(ALICE_PEER),
    "/ip6/::ffff:10.0.0.1/udp/4001/quic-v1",
    "/dns4/node.example.org/tcp/443/wss",
    "/dnsaddr/bootstrap.example.org",
    "/ip4/10.0.0.1/tcp/4001/p2p/" + str(BOB_PEER) + "/p2p-circuit/p2p/" + str(ALICE_PEER),
)


def _check_multiaddr(addr: Multiaddr) -> None:
    """One address, every spelling and accessor: text and bytes round-trip, pickling too."""
    text = str(addr)
    again = Multiaddr.parse(text)
    assert again == addr and str(again) == text, f"{text!r} does not parse back to itself"
    assert Multiaddr.from_bytes(addr.to_bytes()) == addr
    assert pickle.loads(pickle.dumps(addr)) == addr
    peer = addr.peer_id
    if peer is not None:
        assert addr.with_peer_id(peer) == addr  # replacing the trailing /p2p/ with itself changes nothing
        suffix = Multiaddr.parse(f"/p2p/{peer}").to_bytes()
        assert addr.without_peer_id().to_bytes() + suffix == addr.to_bytes()
    try:
        host, port = addr.tcp_endpoint()
    except MultiaddrError:
        return
    if addr.components[0][0] in ("ip4", "ip6"):  # a socket address of our own, turned back into an address
        assert Multiaddr.from_tcp(host, port).tcp_endpoint() == (host, port)


def _multiaddr_bytes_seeds() -> dict[str, bytes]:
    return {f"addr-{i}": Multiaddr.parse(text).to_bytes() for i, text in enumerate(_MULTIADDR_SEEDS)}


@fuzz_target(_multiaddr_bytes_seeds)
def multiaddr_bytes(data: bytes) -> bool:
    """Binary multiaddr decode; what decodes re-encodes to the same bytes and survives the text round trip."""
    try:
        addr = Multiaddr.from_bytes(data)
    except MultiaddrError:
        return False
    assert addr.to_bytes() == data
    _check_multiaddr(addr)
    return True


def _multiaddr_text_seeds() -> dict[str, bytes]:
    return {f"addr-{i}": b"\x00" + text.encode() for i, text in enumerate(_MULTIADDR_SEEDS)}


@fuzz_target(_multiaddr_text_seeds)
def multiaddr_text(data: bytes) -> bool:
    """Text multiaddr parse (UTF-8, or text holding lone surrogates as a str from elsewhere may); what
    parses round-trips through bytes and text."""
    opt, body = options(data)
    text = body.decode("utf-8", "surrogateescape" if opt & 1 else "replace")
    try:
        addr = Multiaddr.parse(text)
    except MultiaddrError:
        return False
    _check_multiaddr(addr)
    return True


# -- multistream-select ----------------------------------------------------------------------------

_SUPPORTED = ("/noise", "/yamux/1.0.0", "/kos/klp/1.0.0")
_PROPOSALS = ("/kos/klp/2.0.0", "/kos/klp/1.0.0", "/yamux/1.0.0")


def _check_agreement(fed: bytes, selected: str, rest: bytes) -> None:
    """The agreed message is the last thing consumed; everything after it is handed back untouched."""
    assert fed.endswith(rest)
    assert fed[: len(fed) - len(rest)].endswith(encode_multistream(selected))


def _multistream_listener_seeds() -> dict[str, bytes]:
    yamux_proposal = encode_multistream("/yamux/1.0.0")
    return {
        "pipelined": b"\x00" + HEADER + yamux_proposal + b"first application bytes",
        "ls-then-retry": b"\x03" + HEADER + encode_multistream("ls") + encode_multistream("/nope") + yamux_proposal,
        "byte-by-byte": bytes([1 << 2]) + HEADER + encode_multistream("/kos/klp/1.0.0"),
    }


@fuzz_target(_multistream_listener_seeds)
def multistream_listener(data: bytes) -> bool:
    """multistream-select as the listener: header, proposals, ``ls``, data pipelined after the agreement."""
    opt, body = options(data)
    listener = MultistreamListener(
        _SUPPORTED.__contains__, max_attempts=4, ls_protocols=_SUPPORTED if opt & 2 else None
    )
    if opt & 1:
        assert listener.initiate() == HEADER
    return _negotiate(listener, reads(body, opt >> 2), _SUPPORTED)


def _multistream_dialer_seeds() -> dict[str, bytes]:
    return {
        "first-choice": b"\x00" + HEADER + encode_multistream(_PROPOSALS[0]),
        "na-then-second": b"\x00" + HEADER + NA_MESSAGE + encode_multistream(_PROPOSALS[1]) + b"early data",
        "header-given": bytes([1 | 3 << 1]) + NA_MESSAGE + NA_MESSAGE + encode_multistream(_PROPOSALS[2]),
    }


@fuzz_target(_multistream_dialer_seeds)
def multistream_dialer(data: bytes) -> bool:
    """multistream-select as the (pipelined) dialer: the listener's header and answers, optionally after a
    valid header so the fuzzer starts past it."""
    opt, body = options(data)
    dialer = MultistreamDialer(_PROPOSALS)
    dialer.initiate()
    if opt & 1:
        body = HEADER + body
    return _negotiate(dialer, reads(body, opt >> 1), _PROPOSALS)


def _negotiate(side: MultistreamListener | MultistreamDialer, chunks: Iterable[bytes], allowed: Sequence[str]) -> bool:
    """Feed ``chunks`` until agreement (checked against what was fed) or a sticky failure."""
    fed = bytearray()
    for chunk in chunks:
        fed += chunk
        try:
            side.receive_data(chunk)
        except MultistreamError:
            return fails_again(lambda: side.receive_data(b"\x00"), MultistreamError)
        if side.selected is not None:
            assert side.selected in allowed
            _check_agreement(bytes(fed), side.selected, side.unconsumed())
            return True
    return False


# -- yamux -----------------------------------------------------------------------------------------


def _yamux_session(is_client: bool, prepared: bool) -> tuple[YamuxSession, bytes]:
    """The session under test and what it sent first; prepared: two streams of its own, one with data
    queued past the peer's window, one already closed, and a ping outstanding."""
    session = YamuxSession(is_client=is_client, max_streams=8)
    if prepared:
        first = session.open_stream()
        session.send_data(first, b"\x5a" * (INITIAL_WINDOW + 4096))
        second = session.open_stream()
        session.send_data(second, b"bye")
        session.close_stream(second)
        session.ping(7)
    return session, session.data_to_send()


def _yamux_seeds() -> dict[str, bytes]:
    seeds = {}
    for is_client in (False, True):
        for prepared in (False, True):
            _, sent = _yamux_session(is_client, prepared)
            peer = YamuxSession(is_client=not is_client)
            for event in peer.receive_data(sent):
                if isinstance(event, DataReceived):
                    peer.consume(event.stream_id, len(event.data))
            sid = peer.open_stream()
            peer.send_data(sid, b"hello")
            peer.close_stream(sid)
            peer.ping(42)
            if prepared:
                peer.go_away(GO_AWAY_NORMAL)
            name = f"{'client' if is_client else 'server'}-{'prepared' if prepared else 'fresh'}"
            seeds[name] = bytes([is_client | prepared << 1 | (3 << 2 if prepared else 0)]) + peer.data_to_send()
    return seeds


@fuzz_target(_yamux_seeds)
def yamux_session(data: bytes) -> bool:
    """yamux session receive on the client or server side (optionally with streams of its own open and data
    queued past the window): frames, window updates, pings, go-away. It must never raise, keep its buffer
    under one window plus a header, and survive the answers an adapter gives (consume, reply, close)."""
    opt, body = options(data)
    session, _ = _yamux_session(is_client=bool(opt & 1), prepared=bool(opt & 2))
    closed_here: set[int] = set()
    terminations = 0
    violated = False
    for chunk in reads(body, opt >> 2):
        was_terminated = session.is_terminated
        events = session.receive_data(chunk)
        assert not (was_terminated and events), "a terminated session produced events"
        assert session.buffered_input <= HEADER_SIZE + INITIAL_WINDOW
        for event in events:
            if isinstance(event, DataReceived):
                session.consume(event.stream_id, len(event.data))
            elif isinstance(event, StreamOpened):
                sid = event.stream_id
                if not session.is_terminated and sid in session.stream_ids() and sid not in closed_here:
                    session.send_data(sid, b"reply")
                    session.close_stream(sid)
                    closed_here.add(sid)
            elif isinstance(event, ConnectionTerminated):
                terminations += 1
                violated = violated or event.reason != "remote sent go-away"
        session.data_to_send()
    assert terminations <= 1, "a session terminated twice"
    return not violated


# -- identify and ping -----------------------------------------------------------------------------


def _identify_seeds() -> dict[str, bytes]:
    info = IdentifyInfo(
        protocol_version="ipfs/0.1.0",
        agent_version="kosmesh/fuzz",
        public_key=ALICE.public_key.to_protobuf(),
        listen_addrs=tuple(Multiaddr.parse(text) for text in _MULTIADDR_SEEDS[:3]),
        observed_addr=Multiaddr.parse("/ip4/192.0.2.1/tcp/50000"),
        protocols=("/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/kos/klp/1.0.0"),
        signed_peer_record=b"\x0a\x02\x01\x02",
    )
    whole = encode_identify(info)
    push = encode_identify(IdentifyInfo(protocols=("/ipfs/id/push/1.0.0",)))
    return {"whole": b"\x00" + whole, "reader-two-messages": bytes([1 | 6 << 1]) + whole + push}


@fuzz_target(_identify_seeds)
def identify(data: bytes) -> bool:
    """identify decode, as one length-prefixed message or through the stream reader in pieces; what
    decodes re-encodes to the same info."""
    opt, body = options(data)
    try:
        if opt & 1:
            reader = IdentifyReader()
            for chunk in reads(body, opt >> 1):
                reader.receive_data(chunk)
            info = reader.eof()
        else:
            info = decode_identify(body)
    except IdentifyError:
        return False
    try:
        encoded = encode_identify(info)
    except IdentifyError:
        pass  # replacement characters grew a version string past the size cap: refused, as documented
    else:
        assert decode_identify(encoded) == info
    with contextlib.suppress(IdentifyError):
        info.peer_id()
    return True


def _ping_seeds() -> dict[str, bytes]:
    echoes = b"".join(bytes([i]) * PING_SIZE for i in range(3))
    return {
        "responder": b"\x00" + bytes(range(64)),
        "responder-in-pieces": bytes([2 << 1]) + bytes(range(100)),
        "initiator": bytes([1 | 3 << 1]) + echoes,
        "initiator-in-pieces": bytes([1 | 3 << 1 | 5 << 5]) + echoes,
    }


@fuzz_target(_ping_seeds)
def ping(data: bytes) -> bool:
    """ping responder (echoes whole 32-byte payloads, nothing else) and initiator (matches echoes to the
    pings it sent, in order, and refuses anything unasked)."""
    opt, body = options(data)
    if not opt & 1:
        responder = PingResponder()
        echoed = bytearray()
        for chunk in reads(body, opt >> 1):
            echoed += responder.receive_data(chunk)
        assert echoed == body[: len(body) - len(body) % PING_SIZE]
        return True
    initiator = PingInitiator()
    sent = [bytes([i]) * PING_SIZE for i in range((opt >> 1) & 15)]
    assert len(sent) <= MAX_OUTSTANDING
    for payload in sent:
        initiator.request(payload)
    done: list[bytes] = []
    try:
        for chunk in reads(body, opt >> 5):
            done += initiator.receive_data(chunk)
    except PingError:
        return fails_again(lambda: initiator.receive_data(b""), PingError)
    assert done == sent[: len(done)]
    return len(done) == len(sent)


_SLOT_ADDRESSES = (
    *("10.0.0.1", "10.0.0.2", "10.0.0.3"),
    *("2001:db8::1", "2001:db8::2", "::ffff:10.0.0.1", "fe80::1%lo"),
    "?",  # no peer name
)


def _slots_seeds() -> dict[str, bytes]:
    return {
        "fill-and-evict": bytes([0 << 2, 0 << 2, 1 << 2, 2 << 2, 3 << 2, 4 << 2, 0 << 2]),
        "life-cycle": bytes([0, 2, 1, 2 | 1 << 2, 3, 3 | 1 << 2]),
        "dials-fill-the-table": bytes([1] * 8 + [2 | i << 2 for i in range(8)]),
    }


@fuzz_target(_slots_seeds)
def connection_slots(data: bytes) -> bool:
    """connection slots: any sequence of accepted sockets (from 8 addresses), dials, finished handshakes
    and closes keeps every count true and within its bound (table, inbound share, pending pool, per address)."""
    core = ConnectionSlots(
        max_connections=6,
        reserved_outbound=2,
        max_inbound_per_ip=3,
        max_pending_inbound=4,
        max_pending_inbound_per_ip=2,
    )
    live: dict[int, str] = {}  # ticket -> pending-in | in | pending-out | out
    groups: dict[int, str] = {}
    for ticket, op in enumerate(data):
        kind, arg = op & 3, op >> 2
        if kind == 0:
            ip = _SLOT_ADDRESSES[arg % len(_SLOT_ADDRESSES)]
            admission = core.admit_inbound(ticket, ip)
            if admission.evict is not None:
                assert live.pop(admission.evict) == "pending-in"
                groups.pop(admission.evict)
            if admission.refused is None:
                live[ticket], groups[ticket] = "pending-in", address_group(ip)
        elif kind == 1:
            if core.admit_outbound(ticket) is None:
                live[ticket] = "pending-out"
        elif live:
            chosen = sorted(live)[arg % len(live)]
            if kind == 2 and live[chosen].startswith("pending"):
                if core.establish(chosen) is None:
                    live[chosen] = "in" if live[chosen] == "pending-in" else "out"
                else:
                    assert live.pop(chosen) == "pending-in"
                    groups.pop(chosen)
            elif kind == 3:
                core.release(chosen)
                live.pop(chosen)
                groups.pop(chosen, None)
        stages = list(live.values())
        assert core.pending_inbound == stages.count("pending-in") <= core.max_pending_inbound
        assert core.established_inbound == stages.count("in") <= core.max_inbound
        assert core.pending_outbound == stages.count("pending-out")
        assert core.established_outbound == stages.count("out")
        assert core.in_table <= core.max_connections
        for group in set(groups.values()):
            held = [live[t] for t, g in groups.items() if g == group]
            assert held.count("pending-in") <= core.max_pending_inbound_per_ip
            assert len(held) <= core.max_inbound_per_ip
    return True
