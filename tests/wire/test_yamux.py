"""Tests for the sans-I/O yamux core: two sessions wired back to back in memory."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import random
from collections import defaultdict
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kosmesh.wire.yamux import (
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    GO_AWAY_PROTOCOL_ERROR,
    HEADER_SIZE,
    INITIAL_WINDOW,
    PROTOCOL_ID,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
    ConnectionTerminated,
    DataReceived,
    Event,
    GoAwayReceived,
    PingAcknowledged,
    SendQueueFull,
    StreamAccepted,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamWritable,
    YamuxError,
    YamuxSession,
    decode_header,
    encode_header,
)

E = TypeVar("E")

GO_AWAY_PROTOCOL = encode_header(TYPE_GO_AWAY, 0, 0, GO_AWAY_PROTOCOL_ERROR)


class Peer:
    """A session plus what its application saw; consumes received data unless told not to."""

    def __init__(self, session: YamuxSession, *, auto_consume: bool = True) -> None:
        self.session = session
        self.auto_consume = auto_consume
        self.events: list[Event] = []
        self.data: defaultdict[int, bytearray] = defaultdict(bytearray)

    def feed(self, raw: bytes) -> list[Event]:
        events = self.session.receive_data(raw)
        self.events += events
        for event in events:
            if isinstance(event, DataReceived):
                self.data[event.stream_id] += event.data
                if self.auto_consume:
                    self.session.consume(event.stream_id, len(event.data))
        return events

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


def pair(**server_kw: int) -> tuple[Peer, Peer]:
    return Peer(YamuxSession(is_client=True)), Peer(YamuxSession(is_client=False, **server_kw))


def pump(a: Peer, b: Peer, max_rounds: int = 100_000) -> None:
    """Shuttle bytes both ways until neither side has anything left to send."""
    for _ in range(max_rounds):
        x = a.session.data_to_send()
        y = b.session.data_to_send()
        if not x and not y:
            return
        if x:
            b.feed(x)
        if y:
            a.feed(y)
    raise AssertionError("sessions never went quiet")


def frames(raw: bytes) -> list[tuple[int, int, int, int, int, bytes]]:
    """Split wire bytes into (version, type, flags, sid, length, payload) tuples."""
    out = []
    pos = 0
    while pos < len(raw):
        version, ftype, flags, sid, length = decode_header(raw, pos)
        pos += HEADER_SIZE
        payload = b""
        if ftype == TYPE_DATA:
            payload = raw[pos : pos + length]
            pos += length
        out.append((version, ftype, flags, sid, length, payload))
    assert pos == len(raw)
    return out


def open_pair(**server_kw: int) -> tuple[Peer, Peer, int]:
    client, server = pair(**server_kw)
    sid = client.session.open_stream()
    pump(client, server)
    return client, server, sid


# ---------------------------------------------------------------------------- basics


def test_constants() -> None:
    assert PROTOCOL_ID == "/yamux/1.0.0"
    assert INITIAL_WINDOW == 256 * 1024


def test_open_and_accept() -> None:
    client, server = pair()
    sid = client.session.open_stream()
    assert sid == 1
    syn = frames(client.session.data_to_send())
    assert syn == [(0, TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0, b"")]
    assert server.feed(encode_header(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0)) == [StreamOpened(1)]
    ack = frames(server.session.data_to_send())
    assert ack == [(0, TYPE_WINDOW_UPDATE, FLAG_ACK, 1, 0, b"")]
    assert client.feed(encode_header(TYPE_WINDOW_UPDATE, FLAG_ACK, 1, 0)) == [StreamAccepted(1)]
    assert client.session.stream_ids() == [1] == server.session.stream_ids()
    assert client.session.open_stream() == 3
    assert server.session.open_stream() == 2
    assert server.session.open_stream() == 4


def test_data_both_ways_and_before_ack() -> None:
    client, server = pair()
    sid = client.session.open_stream()
    client.session.send_data(sid, b"hello")  # before the ACK: allowed by the spec
    pump(client, server)
    assert server.events[:2] == [StreamOpened(sid), DataReceived(sid, b"hello")]
    assert client.events == [StreamAccepted(sid)]
    server.session.send_data(sid, memoryview(b"world"))
    client.session.send_data(sid, bytearray(b"again"))  # type: ignore[arg-type]
    pump(client, server)
    assert bytes(client.data[sid]) == b"world"
    assert bytes(server.data[sid]) == b"helloagain"


def test_send_copies_mutable_buffers() -> None:
    client, server = pair(receive_window=INITIAL_WINDOW)
    sid = client.session.open_stream()
    buf = bytearray(b"a" * (INITIAL_WINDOW + 10))
    client.session.send_data(sid, memoryview(buf))
    buf[:] = b"b" * len(buf)  # caller reuses its buffer; queued bytes must not change
    pump(client, server)
    assert bytes(server.data[sid]) == b"a" * (INITIAL_WINDOW + 10)


def test_half_close_both_ways_frees_stream() -> None:
    client, server, sid = open_pair()
    client.session.close_stream(sid)
    pump(client, server)
    assert server.events[-1] == StreamEnded(sid)
    with pytest.raises(YamuxError):
        client.session.send_data(sid, b"x")
    # the other direction still works
    server.session.send_data(sid, b"late reply")
    pump(client, server)
    assert bytes(client.data[sid]) == b"late reply"
    assert sid in client.session.stream_ids() and sid in server.session.stream_ids()
    server.session.close_stream(sid)
    pump(client, server)
    assert client.events[-1] == StreamEnded(sid)
    assert client.session.stream_ids() == [] == server.session.stream_ids()
    client.session.close_stream(sid)  # idempotent on a freed stream
    client.session.consume(sid, 10)  # consuming after the stream is gone is harmless
    assert client.session.data_to_send() == b""


def test_server_closes_first() -> None:
    client, server, sid = open_pair()
    server.session.send_data(sid, b"bye")
    server.session.close_stream(sid)
    pump(client, server)
    assert client.events[-2:] == [DataReceived(sid, b"bye"), StreamEnded(sid)]
    client.session.close_stream(sid)
    pump(client, server)
    assert client.session.stream_ids() == [] == server.session.stream_ids()


def test_fin_with_data_frame() -> None:
    _client, server, sid = open_pair()
    server.feed(encode_header(TYPE_DATA, FLAG_FIN, sid, 3) + b"end")
    assert server.events[-2:] == [DataReceived(sid, b"end"), StreamEnded(sid)]


def test_reset() -> None:
    client, server, sid = open_pair()
    server.session.send_data(sid, b"in flight")
    in_flight = server.session.data_to_send()
    client.session.send_data(sid, b"x" * (INITIAL_WINDOW + 5))
    assert client.session.pending_send(sid) == 5
    client.session.reset_stream(sid)
    assert client.session.pending_send(sid) == 0
    assert client.session.stream_ids() == []
    with pytest.raises(YamuxError):
        client.session.send_data(sid, b"x")
    assert client.feed(in_flight) == []  # late data for a reset stream is dropped
    pump(client, server)
    assert server.events[-1] == StreamReset(sid)
    assert server.session.stream_ids() == []
    client.session.reset_stream(sid)  # idempotent
    assert client.session.data_to_send() == b""


def test_send_queue_caps_refuse_once_reached() -> None:
    client = Peer(YamuxSession(is_client=True, max_stream_pending=1000, max_pending_total=1500))
    server = Peer(YamuxSession(is_client=False), auto_consume=False)
    a, b = client.session.open_stream(), client.session.open_stream()
    pump(client, server)
    client.session.send_data(a, b"x" * (INITIAL_WINDOW + 999))  # 999 queued: under the stream cap
    client.session.send_data(a, b"x" * 600)  # accepted: the cap is checked before, not after
    assert client.session.pending_send(a) == 1599 == client.session.pending_total
    with pytest.raises(SendQueueFull, match="stream 1"):
        client.session.send_data(a, b"x")
    client.session.send_data(b, b"y" * 100)  # framed at once: b's window is open
    with pytest.raises(SendQueueFull, match="session"):  # b has no queue, but the session is at its cap
        client.session.send_data(b, b"y" * INITIAL_WINDOW)
    client.session.send_data(b, b"y" * INITIAL_WINDOW, capped=False)  # (control messages always go)
    client.session.reset_stream(a)
    assert client.session.pending_total == client.session.pending_send(b)


def test_cork_queues_data_but_not_control_frames() -> None:
    client, server, sid = open_pair()
    client.session.cork()
    client.session.send_data(sid, b"held")
    client.session.ping(7)
    out = frames(client.session.data_to_send())
    assert [f[1] for f in out] == [TYPE_PING]
    assert client.session.pending_total == 4 and client.session.corked
    assert client.session.uncork() == [StreamWritable(sid)]
    pump(client, server)
    assert bytes(server.data[sid]) == b"held"


def test_unread_bytes_are_counted_until_consumed() -> None:
    client = Peer(YamuxSession(is_client=True))
    server = Peer(YamuxSession(is_client=False), auto_consume=False)
    a, b = client.session.open_stream(), client.session.open_stream()
    pump(client, server)
    client.session.send_data(a, b"a" * 1000)
    client.session.send_data(b, b"b" * 3000)
    pump(client, server)
    assert server.session.unread == 4000
    assert sorted(server.session.unread_by_stream()) == [(1000, a), (3000, b)]
    server.session.consume(b, 1000)
    assert server.session.stream_unread(b) == 2000 and server.session.unread == 3000
    server.session.reset_stream(a)  # a reset stream's unread bytes are dropped with it
    assert server.session.unread == 2000
    client.session.reset_stream(b)
    pump(client, server)
    assert server.session.unread == 0


def test_stream_closed_both_ways_stays_until_read() -> None:
    client = Peer(YamuxSession(is_client=True))
    server = Peer(YamuxSession(is_client=False), auto_consume=False)
    sid = client.session.open_stream()
    client.session.send_data(sid, b"request")
    client.session.close_stream(sid)
    pump(client, server)
    server.session.close_stream(sid)
    assert server.session.has_stream(sid)  # closed both ways, but 7 bytes are not read yet
    server.session.consume(sid, 7)
    assert not server.session.has_stream(sid) and server.session.unread == 0


def test_held_credit_is_granted_on_release() -> None:
    client = Peer(YamuxSession(is_client=True))
    server = Peer(YamuxSession(is_client=False), auto_consume=False)
    sid = client.session.open_stream()
    pump(client, server)
    client.session.send_data(sid, b"h" * INITIAL_WINDOW)
    pump(client, server)
    server.session.hold_credit(sid, True)
    server.session.consume(sid, INITIAL_WINDOW)
    assert server.session.data_to_send() == b""  # no window update while held
    server.session.hold_credit(sid, False)
    [update] = frames(server.session.data_to_send())
    assert update[1:5] == (TYPE_WINDOW_UPDATE, 0, sid, INITIAL_WINDOW)


def test_data_after_fin_is_ignored_and_uncounted() -> None:
    client, server, sid = open_pair()
    client.session.close_stream(sid)
    pump(client, server)
    late = encode_header(TYPE_DATA, 0, sid, 5) + b"after"
    assert server.feed(late) == []
    assert server.session.unread == 0


def test_rst_from_remote_drops_queue() -> None:
    client, _server, sid = open_pair()
    client.session.send_data(sid, b"q" * (INITIAL_WINDOW + 1))
    client.session.data_to_send()
    assert client.feed(encode_header(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0)) == [StreamReset(sid)]
    assert client.session.pending_send(sid) == 0
    assert not client.session.is_terminated


def test_many_concurrent_streams() -> None:
    client, server = pair()
    rng = random.Random(7)
    sids = [client.session.open_stream() for _ in range(100)]
    sids += [server.session.open_stream() for _ in range(100)]
    expected: dict[int, bytes] = {}
    senders = {}
    for sid in sids:
        senders[sid] = client if sid % 2 else server
        expected[sid] = b""
    for _ in range(2000):
        sid = rng.choice(sids)
        chunk = rng.randbytes(rng.randint(1, 300))
        senders[sid].session.send_data(sid, chunk)
        expected[sid] += chunk
        if rng.random() < 0.1:
            pump(client, server)
    for sid in sids:
        senders[sid].session.close_stream(sid)
    pump(client, server)
    for sid in sids:
        receiver = server if sid % 2 else client
        assert bytes(receiver.data[sid]) == expected[sid]
    assert len(server.of(StreamOpened)) == 100 == len(client.of(StreamOpened))
    assert len(client.of(StreamEnded)) == 100 == len(server.of(StreamEnded))


# ---------------------------------------------------------------------------- flow control


def test_sender_stalls_exactly_at_window_and_resumes() -> None:
    client, server = pair()
    server.auto_consume = False
    sid = client.session.open_stream()
    client.session.send_data(sid, b"a" * (INITIAL_WINDOW + 100))
    assert client.session.pending_send(sid) == 100
    wire = client.session.data_to_send()
    sent = frames(wire)
    assert sum(len(f[5]) for f in sent if f[1] == TYPE_DATA) == INITIAL_WINDOW
    assert max(f[4] for f in sent if f[1] == TYPE_DATA) <= 64 * 1024
    server.feed(wire)
    pump(client, server)
    assert len(server.data[sid]) == INITIAL_WINDOW
    client.session.send_data(sid, b"b")  # queues behind the stalled bytes, keeps order
    assert client.session.data_to_send() == b""
    server.session.consume(sid, INITIAL_WINDOW // 2 - 1)
    assert server.session.data_to_send() == b""  # batched: below half a window
    server.session.consume(sid, 1)
    update = server.session.data_to_send()
    assert frames(update) == [(0, TYPE_WINDOW_UPDATE, 0, sid, INITIAL_WINDOW // 2, b"")]
    assert client.feed(update) == [StreamWritable(sid)]
    assert client.session.pending_send(sid) == 0
    pump(client, server)
    assert bytes(server.data[sid]) == b"a" * (INITIAL_WINDOW + 100) + b"b"


def test_partial_window_update_no_writable_until_drained() -> None:
    client, _server, sid = open_pair()
    client.session.send_data(sid, b"z" * (INITIAL_WINDOW + 1000))
    client.session.data_to_send()
    assert client.feed(encode_header(TYPE_WINDOW_UPDATE, 0, sid, 400)) == []
    assert client.session.pending_send(sid) == 600
    assert client.feed(encode_header(TYPE_WINDOW_UPDATE, 0, sid, 600)) == [StreamWritable(sid)]
    data = [f for f in frames(client.session.data_to_send()) if f[1] == TYPE_DATA]
    assert [f[4] for f in data] == [400, 600]


def test_fin_waits_for_queued_data_and_rides_last_frame() -> None:
    client, server = pair()
    server.auto_consume = False
    sid = client.session.open_stream()
    client.session.send_data(sid, b"a" * (INITIAL_WINDOW + 10))
    client.session.close_stream(sid)
    pump(client, server)
    assert not server.of(StreamEnded)
    server.session.consume(sid, INITIAL_WINDOW)
    assert client.feed(server.session.data_to_send()) == [StreamWritable(sid)]
    tail = client.session.data_to_send()
    assert frames(tail) == [(0, TYPE_DATA, FLAG_FIN, sid, 10, b"a" * 10)]  # FIN rides the last frame
    server.feed(tail)
    assert server.events[-2:] == [DataReceived(sid, b"a" * 10), StreamEnded(sid)]


def test_larger_receive_window_is_advertised() -> None:
    window = 1024 * 1024
    client = Peer(YamuxSession(is_client=True, receive_window=window))
    server = Peer(YamuxSession(is_client=False, receive_window=window), auto_consume=False)
    sid = client.session.open_stream()
    syn = client.session.data_to_send()
    assert frames(syn) == [(0, TYPE_WINDOW_UPDATE, FLAG_SYN, sid, window - INITIAL_WINDOW, b"")]
    server.feed(syn)
    ack = server.session.data_to_send()
    assert frames(ack) == [(0, TYPE_WINDOW_UPDATE, FLAG_ACK, sid, window - INITIAL_WINDOW, b"")]
    assert client.feed(ack) == [StreamAccepted(sid)]
    client.session.send_data(sid, b"w" * (window + 1))
    pump(client, server)
    assert len(server.data[sid]) == window
    assert client.session.pending_send(sid) == 1


def test_bulk_10mib_with_interleaving() -> None:
    client, server = pair()
    rng = random.Random(1)
    bulk = rng.randbytes(10 * 1024 * 1024)
    big = client.session.open_stream()
    small = client.session.open_stream()
    back = server.session.open_stream()
    small_sent = bytearray()
    back_sent = bytearray()
    step = 300_000
    for offset in range(0, len(bulk), step):
        client.session.send_data(big, memoryview(bulk)[offset : offset + step])
        msg = rng.randbytes(rng.randint(1, 512))
        client.session.send_data(small, msg)
        small_sent += msg
        reply = rng.randbytes(rng.randint(1, 4096))
        server.session.send_data(back, reply)
        back_sent += reply
        # move a couple of rounds only, so queues build up and frames interleave
        for _ in range(2):
            x, y = client.session.data_to_send(), server.session.data_to_send()
            server.feed(x)
            client.feed(y)
    for sid in (big, small):
        client.session.close_stream(sid)
    server.session.close_stream(back)
    pump(client, server)
    assert hashlib.sha256(server.data[big]).digest() == hashlib.sha256(bulk).digest()
    assert server.data[small] == small_sent
    assert client.data[back] == back_sent
    assert len(server.of(StreamEnded)) == 2
    # the big stream really did interleave with the small one
    order = [e.stream_id for e in server.of(DataReceived)]
    first_small = order.index(small)
    assert big in order[first_small:]


def test_receiver_enforces_window() -> None:
    _client, server, sid = open_pair()
    server.auto_consume = False
    half = INITIAL_WINDOW // 2
    events = server.feed(encode_header(TYPE_DATA, 0, sid, half) + bytes(half))
    assert events == [DataReceived(sid, bytes(half))]
    # the peer has half a window left; one byte more is a flow-control violation
    events = server.feed(encode_header(TYPE_DATA, 0, sid, half + 1))
    assert isinstance(events[-1], ConnectionTerminated)
    assert events[-1].code == GO_AWAY_PROTOCOL_ERROR
    assert server.session.data_to_send().endswith(GO_AWAY_PROTOCOL)


def test_consume_more_than_received_is_misuse() -> None:
    client, server, sid = open_pair()
    client.session.send_data(sid, b"abc")
    pump(client, server)
    server.session.consume(sid, 0)
    with pytest.raises(YamuxError):
        server.session.consume(sid, 1)  # auto-consume already took all 3
    with pytest.raises(YamuxError):
        server.session.consume(sid, -1)


# ---------------------------------------------------------------------------- limits, ping, go-away


def test_stream_limit_refuses_with_rst() -> None:
    client, server = pair(max_streams=3)
    sids = [client.session.open_stream() for _ in range(5)]
    pump(client, server)
    assert [e for e in server.events if isinstance(e, StreamOpened)] == [StreamOpened(s) for s in sids[:3]]
    assert client.of(StreamReset) == [StreamReset(sids[3]), StreamReset(sids[4])]
    assert sorted(server.session.stream_ids()) == sids[:3]
    assert sorted(client.session.stream_ids()) == sids[:3]
    assert not server.session.is_terminated and not client.session.is_terminated
    with pytest.raises(YamuxError):
        server.session.open_stream()
    # freeing one makes room again
    client.session.reset_stream(sids[0])
    pump(client, server)
    again = client.session.open_stream()
    pump(client, server)
    assert server.events[-1] == StreamOpened(again)


def test_ping() -> None:
    client, server = pair()
    client.session.ping(0xDEADBEEF)
    assert frames(client.session.data_to_send()) == [(0, TYPE_PING, FLAG_SYN, 0, 0xDEADBEEF, b"")]
    client.session.ping(7)
    pump(client, server)
    assert client.events == [PingAcknowledged(7)]
    server.feed(encode_header(TYPE_PING, FLAG_SYN, 0, 42))
    assert frames(server.session.data_to_send()) == [(0, TYPE_PING, FLAG_ACK, 0, 42, b"")]
    with pytest.raises(YamuxError):
        client.session.ping(1 << 32)


def test_go_away() -> None:
    client, server, _sid = open_pair()
    client.session.go_away()
    with pytest.raises(YamuxError):
        client.session.open_stream()
    pump(client, server)
    assert server.events[-2:] == [GoAwayReceived(0), ConnectionTerminated(0, "remote sent go-away")]
    assert server.session.is_terminated
    with pytest.raises(YamuxError):
        server.session.open_stream()
    assert server.session.receive_data(encode_header(TYPE_PING, FLAG_SYN, 0, 1)) == []


def test_inbound_syn_after_local_go_away_is_refused() -> None:
    _client, server, sid = open_pair()
    server.session.go_away()
    server.session.data_to_send()
    assert not server.session.is_terminated
    assert server.feed(encode_header(TYPE_WINDOW_UPDATE, FLAG_SYN, sid + 2, 0)) == []
    assert frames(server.session.data_to_send()) == [(0, TYPE_WINDOW_UPDATE, FLAG_RST, sid + 2, 0, b"")]
    # existing streams keep working during a graceful go-away
    assert server.feed(encode_header(TYPE_DATA, 0, sid, 2) + b"ok") == [DataReceived(sid, b"ok")]


def test_local_go_away_with_error_terminates() -> None:
    client, _server, sid = open_pair()
    client.session.go_away(2)
    assert client.session.is_terminated
    assert client.session.data_to_send() == encode_header(TYPE_GO_AWAY, 0, 0, 2)
    with pytest.raises(YamuxError):
        client.session.send_data(sid, b"x")


def test_bad_config_and_misuse() -> None:
    with pytest.raises(ValueError):
        YamuxSession(is_client=True, receive_window=1000)
    with pytest.raises(ValueError):
        YamuxSession(is_client=True, max_streams=0)
    with pytest.raises(ValueError):
        YamuxSession(is_client=True, max_frame_data=0)
    session = YamuxSession(is_client=True)
    with pytest.raises(YamuxError):
        session.send_data(1, b"x")
    assert session.pending_send(99) == 0
    with pytest.raises(YamuxError):
        session.go_away(-1)


# ---------------------------------------------------------------------------- hostile input


def test_unknown_stream_frames_are_ignored() -> None:
    _client, server, _sid = open_pair()
    raw = (
        encode_header(TYPE_DATA, 0, 99, 4)
        + b"junk"
        + encode_header(TYPE_WINDOW_UPDATE, 0, 101, 10)
        + encode_header(TYPE_WINDOW_UPDATE, FLAG_ACK, 8, 0)
        + encode_header(TYPE_DATA, FLAG_FIN | FLAG_RST, 77, 0)
    )
    assert server.feed(raw) == []
    assert not server.session.is_terminated
    assert server.session.data_to_send() == b""


def _violation(raw: bytes, *, as_client: bool = False) -> tuple[list[Event], bytes, YamuxSession]:
    client, server, _sid = open_pair()
    peer = client if as_client else server
    events = peer.session.receive_data(raw)
    return events, peer.session.data_to_send(), peer.session


VIOLATIONS = {
    "duplicate SYN": encode_header(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0),
    "duplicate SYN on data": encode_header(TYPE_DATA, FLAG_SYN, 1, 1) + b"x",
    "wrong parity SYN": encode_header(TYPE_WINDOW_UPDATE, FLAG_SYN, 2, 0),
    "SYN on stream 0": encode_header(TYPE_WINDOW_UPDATE, FLAG_SYN, 0, 0),
    "nonzero version": encode_header(TYPE_PING, FLAG_SYN, 0, 1, version=1),
    "nonzero version data": encode_header(TYPE_DATA, 0, 1, 0, version=2),
    "unknown type": encode_header(4, 0, 1, 0),
    "unknown type 255": encode_header(255, 0, 0, 0),
    "oversized length": encode_header(TYPE_DATA, 0, 1, INITIAL_WINDOW + 1),
    "oversized length unknown stream": encode_header(TYPE_DATA, 0, 55, 0xFFFFFFFF),
    "data on stream 0": encode_header(TYPE_DATA, 0, 0, 1) + b"x",
    "window overflow": encode_header(TYPE_WINDOW_UPDATE, 0, 1, 0xFFFFFFFF),
    "overrun across frames": (encode_header(TYPE_DATA, 0, 1, INITIAL_WINDOW) + bytes(INITIAL_WINDOW))
    + encode_header(TYPE_DATA, FLAG_FIN, 1, 1)
    + b"x",
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_protocol_violation_terminates_with_go_away(name: str) -> None:
    events, wire, session = _violation(VIOLATIONS[name])
    assert isinstance(events[-1], ConnectionTerminated)
    assert events[-1].code == GO_AWAY_PROTOCOL_ERROR
    assert wire.endswith(GO_AWAY_PROTOCOL)
    assert session.is_terminated
    assert session.stream_ids() == []
    assert session.buffered_input == 0
    assert session.receive_data(encode_header(TYPE_PING, FLAG_SYN, 0, 1)) == []
    assert session.data_to_send() == b""


def test_wrong_parity_syn_at_client() -> None:
    events, wire, _ = _violation(encode_header(TYPE_WINDOW_UPDATE, FLAG_SYN, 5, 0), as_client=True)
    assert isinstance(events[-1], ConnectionTerminated)
    assert wire.endswith(GO_AWAY_PROTOCOL)


def test_syn_reusing_an_old_stream_id_is_a_violation() -> None:
    client, server = pair()
    first = client.session.open_stream()
    client.session.open_stream()
    pump(client, server)
    client.session.reset_stream(first)
    pump(client, server)
    assert first not in server.session.stream_ids()
    events = server.feed(encode_header(TYPE_WINDOW_UPDATE, FLAG_SYN, first, 0))
    assert isinstance(events[-1], ConnectionTerminated)
    assert server.session.data_to_send().endswith(GO_AWAY_PROTOCOL)


def test_oversized_header_rejected_before_payload_arrives() -> None:
    _client, server, _sid = open_pair()
    # only the header: the violation is detected without waiting for (or buffering) 4 GiB
    events = server.session.receive_data(encode_header(TYPE_DATA, 0, 1, 0xFFFFFFF0))
    assert isinstance(events[-1], ConnectionTerminated)


def test_partial_frames_are_buffered_and_bounded() -> None:
    _client, server, sid = open_pair()
    payload = bytes(range(256)) * 1024  # exactly one initial window
    raw = encode_header(TYPE_DATA, 0, sid, len(payload)) + payload
    got: list[Event] = []
    for i in range(0, len(raw), 1000):
        got += server.session.receive_data(raw[i : i + 1000])
        assert server.session.buffered_input <= INITIAL_WINDOW + HEADER_SIZE
    assert got == [DataReceived(sid, payload)]
    assert server.session.buffered_input == 0


# ---------------------------------------------------------------------------- properties


@given(
    version=st.integers(0, 255),
    ftype=st.integers(0, 255),
    flags=st.integers(0, 0xFFFF),
    sid=st.integers(0, 0xFFFFFFFF),
    length=st.integers(0, 0xFFFFFFFF),
)
def test_header_round_trip(version: int, ftype: int, flags: int, sid: int, length: int) -> None:
    raw = encode_header(ftype, flags, sid, length, version=version)
    assert len(raw) == HEADER_SIZE
    assert decode_header(raw) == (version, ftype, flags, sid, length)
    assert decode_header(b"pad" + raw, 3) == (version, ftype, flags, sid, length)


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("open"), st.just(0), st.just(0)),
        st.tuples(st.just("send"), st.integers(0, 7), st.integers(0, 3000)),
        st.tuples(st.just("close"), st.integers(0, 7), st.just(0)),
        st.tuples(st.just("reset"), st.integers(0, 7), st.just(0)),
        st.tuples(st.just("ping"), st.integers(0, 0xFFFFFFFF), st.just(0)),
    ),
    max_size=40,
)


def _client_wire(ops: list[tuple[str, int, int]]) -> bytes:
    """A valid frame sequence produced by a real client session."""
    client = YamuxSession(is_client=True, max_frame_data=1024)
    sids: list[int] = []
    for op, a, b in ops:
        if op == "open":
            sids.append(client.open_stream())
        elif op == "ping":
            client.ping(a)
        elif sids:
            sid = sids[a % len(sids)]
            if sid not in client.stream_ids():
                continue
            if op == "send":
                with contextlib.suppress(YamuxError):  # closed for writing
                    client.send_data(sid, bytes([a]) * b)
            elif op == "close":
                client.close_stream(sid)
            else:
                client.reset_stream(sid)
    return client.data_to_send()


@settings(max_examples=60, deadline=None)
@given(ops=_ops, cuts=st.lists(st.integers(0, 200_000), max_size=20))
def test_chunking_does_not_change_events(ops: list[tuple[str, int, int]], cuts: list[int]) -> None:
    wire = _client_wire(ops)
    whole = YamuxSession(is_client=False, max_streams=4)
    expected = whole.receive_data(wire)
    expected_out = whole.data_to_send()
    chunked = YamuxSession(is_client=False, max_streams=4)
    got: list[Event] = []
    bounds = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    for lo, hi in itertools.pairwise(bounds):
        got += chunked.receive_data(memoryview(wire)[lo:hi])
    assert got == expected
    assert chunked.data_to_send() == expected_out
    assert not chunked.is_terminated
    assert chunked.buffered_input == 0


_header_fields = st.tuples(
    st.sampled_from([0, 0, 0, 0, 1, 255]),
    st.integers(0, 5),
    st.integers(0, 15),
    st.sampled_from([0, 1, 2, 3, 4, 5, 0xFFFFFFFF]),
    st.one_of(st.integers(0, 64), st.integers(0, INITIAL_WINDOW + 10), st.just(0xFFFFFFFF)),
)


@st.composite
def _hostile_stream(draw: st.DrawFn) -> bytes:
    parts = []
    for version, ftype, flags, sid, length in draw(st.lists(_header_fields, max_size=12)):
        parts.append(encode_header(ftype, flags, sid, length, version=version))
        if ftype == TYPE_DATA:
            parts.append(b"\xab" * min(length, draw(st.integers(0, 300))))  # often truncated
        if draw(st.booleans()):
            parts.append(draw(st.binary(max_size=40)))
    return b"".join(parts)


@settings(max_examples=200, deadline=None)
@given(
    is_client=st.booleans(),
    raw=st.one_of(st.binary(max_size=2000), _hostile_stream()),
    cuts=st.lists(st.integers(0, 5000), max_size=10),
)
def test_hostile_input_never_raises_and_stays_bounded(is_client: bool, raw: bytes, cuts: list[int]) -> None:
    session = YamuxSession(is_client=is_client, max_streams=3)
    peer = YamuxSession(is_client=not is_client)
    # start with a live stream each way so frames for ids 1..4 hit real state
    session.open_stream()
    peer.open_stream()
    session.receive_data(peer.data_to_send())
    bounds = sorted({c % (len(raw) + 1) for c in cuts} | {0, len(raw)})
    events: list[Event] = []
    for lo, hi in itertools.pairwise(bounds):
        events += session.receive_data(raw[lo:hi])
        assert session.buffered_input <= INITIAL_WINDOW + HEADER_SIZE
        assert len(session.stream_ids()) <= 3
    out = session.data_to_send()
    terminated = [e for e in events if isinstance(e, ConnectionTerminated)]
    assert len(terminated) <= 1
    if terminated:
        assert events[-1] is terminated[0]
        assert session.is_terminated
        if not isinstance(events[-2:][0], GoAwayReceived):
            assert out.endswith(GO_AWAY_PROTOCOL)
    else:
        assert not session.is_terminated
    frames(out)  # whatever we emit is well-formed
