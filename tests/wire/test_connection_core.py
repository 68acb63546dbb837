"""The sans-I/O connection core: two cores back to back in memory, every timeout asserted by passing ``now``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.wire import multistream, yamux
from kosmesh.wire.buffers import BufferBudget
from kosmesh.wire.connection_core import ConnectionCore
from kosmesh.wire.connection_events import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionLimits,
    ConnectionOpened,
    NegotiationFailed,
    PingAnswered,
    StreamAborted,
    StreamNegotiated,
    WriteBufferFullError,
)
from kosmesh.wire.yamux import DataReceived, StreamEnded, StreamReset, StreamWritable
from tests.wire.core_harness import PROTOCOLS, Side, client_and_server, exchange, make_core, run_requested_checks

ECHO, OTHER = PROTOCOLS
MiB = 1024 * 1024


def open_agreed(client: Side, server: Side, now: float = 0.0, protocols: tuple[str, ...] = (ECHO,)) -> int:
    sid = client.core.open_stream(protocols, now)
    exchange(client, server, now)
    assert StreamNegotiated(sid, protocols[-1], False) in client.events
    return sid


# -- the upgrade ---------------------------------------------------------------------------
def test_upgrade_authenticates_both_sides() -> None:
    client_key, server_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    client = Side(make_core(True, identity=client_key))
    server = Side(make_core(False, identity=server_key))
    exchange(client, server, 0.0)
    assert client.events == [ConnectionOpened(PeerId.from_public_key(server_key.public_key))]
    assert server.events == [ConnectionOpened(PeerId.from_public_key(client_key.public_key))]
    # once open, the next deadline is the keepalive, not the handshake
    assert client.core.get_timer() == ConnectionLimits().keepalive_interval


@pytest.mark.parametrize("split", [1, 7, 50])
def test_upgrade_survives_any_read_size(split: int) -> None:
    client = Side(make_core(True))
    server = Side(make_core(False))
    for _ in range(1000):
        x, y = client.core.data_to_send(), server.core.data_to_send()
        if not x and not y:
            break
        for i in range(0, len(x), split):
            server.feed(x[i : i + split], 0.0)
        for i in range(0, len(y), split):
            client.feed(y[i : i + split], 0.0)
    assert client.core.phase == server.core.phase == "open"


def test_handshake_deadline() -> None:
    server = Side(make_core(False, now=100.0, handshake_timeout=5.0))
    assert server.core.get_timer() == 105.0
    assert server.timer(104.9) == []
    assert server.timer(105.0) == [ConnectionClosed("handshake timed out")]
    assert server.core.phase == "closed" and server.core.get_timer() is None


def test_wrong_peer_is_refused() -> None:
    client_core = ConnectionCore(
        identity=Ed25519PrivateKey.generate(),
        initiator=True,
        limits=ConnectionLimits(),
        supports=lambda p: False,
        now=0.0,
        expected_peer_id=PeerId.from_public_key(Ed25519PrivateKey.generate().public_key),
    )
    client, server = Side(client_core), Side(make_core(False))
    exchange(client, server, 0.0)
    [closed] = client.of(ConnectionClosed)
    assert "expected" in closed.reason
    assert client.core.remote_peer_id is None


def test_garbage_before_the_handshake_closes() -> None:
    server = Side(make_core(False))
    events = server.feed(b"\xff" * 100, 0.0)
    assert isinstance(events[-1], ConnectionClosed) and events[-1].reason.startswith("protocol error")


# -- streams -------------------------------------------------------------------------------
def test_stream_agreed_and_data_both_ways() -> None:
    client, server = client_and_server()
    sid = open_agreed(client, server)
    assert StreamNegotiated(sid, ECHO, True) in server.events
    client.core.send_data(sid, b"hello")
    server.core.send_data(sid, b"world")
    exchange(client, server, 0.0)
    assert bytes(server.data[sid]) == b"hello" and bytes(client.data[sid]) == b"world"
    client.core.close_stream(sid)
    exchange(client, server, 0.0)
    assert StreamEnded(sid) in server.events


def test_first_supported_protocol_is_agreed() -> None:
    client, server = client_and_server()
    sid = client.core.open_stream(["/nobody/1.0.0", OTHER], 0.0)
    exchange(client, server, 0.0)
    assert client.events == [StreamNegotiated(sid, OTHER, False)]


def test_unsupported_protocol_fails_only_that_stream() -> None:
    client, server = client_and_server()
    sid = client.core.open_stream(["/nobody/1.0.0"], 0.0)
    exchange(client, server, 0.0)
    [failed] = client.of(NegotiationFailed)
    assert failed.stream_id == sid and "none of" in failed.reason
    assert client.core.negotiating == server.core.negotiating == 0
    open_agreed(client, server)


def test_negotiation_deadline_outbound_and_inbound() -> None:
    client, server = client_and_server(stream_negotiation_timeout=2.0)
    sid = client.core.open_stream([ECHO], 10.0)  # the server never hears it: nothing is exchanged
    assert client.core.get_timer() == 12.0
    assert client.timer(11.9) == []
    assert client.timer(12.0) == [NegotiationFailed(sid, f"no answer negotiating {ECHO}")]
    assert client.core.negotiating == 0 and client.core.negotiation_deadlines == 0

    # inbound: a stream whose dialer never proposes anything is reset at the deadline
    client, server = client_and_server(18.0, stream_negotiation_timeout=2.0)
    raw_sid = client.core.session.open_stream()  # past the core: no proposal follows the SYN
    server.feed(client.core.data_to_send(), 20.0)
    assert server.core.negotiating == 1 and server.core.get_timer() == 22.0
    assert server.timer(22.0) == []  # nothing to report: the adapter never saw this stream
    assert server.core.negotiating == 0 and server.core.negotiation_deadlines == 0
    client.feed(server.core.data_to_send(), 22.0)
    assert StreamReset(raw_sid) in client.events


def test_agreed_streams_leave_no_deadlines_behind() -> None:
    client, server = client_and_server()
    for _ in range(100):
        open_agreed(client, server)
    assert client.core.negotiation_deadlines == server.core.negotiation_deadlines == 0
    # the timer stays at the first deadline (it is never moved later on the hot path): an early
    # fire does nothing but move it to the keepalive
    assert client.core.get_timer() == ConnectionLimits().stream_negotiation_timeout
    assert client.timer(client.core.get_timer() or 0.0) == []
    assert client.core.get_timer() == ConnectionLimits().keepalive_interval


def test_too_many_negotiating_streams_are_refused() -> None:
    client, server = client_and_server(max_negotiating_streams=3)
    for _ in range(5):
        client.core.open_stream([ECHO], 0.0)
    raw = client.core.data_to_send()
    # cut the proposals off: deliver only the SYN frames' effect by feeding all, then see that the
    # server negotiated three at most at any moment (the rest were reset at once)
    server.feed(raw, 0.0)
    exchange(client, server, 0.0)
    assert len(client.of(StreamNegotiated)) + len(client.of(NegotiationFailed)) == 5


def test_our_own_pending_opens_do_not_count_against_the_remotes_negotiation_cap() -> None:
    """max_negotiating_streams bounds what a remote can make us hold; streams this side opened and
    is still negotiating (to a slow peer, say) must not make honest inbound streams be refused."""
    client, server = client_and_server(max_negotiating_streams=2)
    for _ in range(3):
        server.core.open_stream([ECHO], 0.0)
    held = server.core.data_to_send()  # not delivered yet: the server's three still negotiate
    assert server.core.negotiating == 3 and server.core.negotiating_in == 0
    sid = client.core.open_stream([ECHO], 0.0)
    server.feed(client.core.data_to_send(), 0.0)
    client.feed(held + server.core.data_to_send(), 0.0)  # in order, as the socket would
    assert sid in [e.stream_id for e in client.of(StreamNegotiated)]  # accepted, not reset
    assert client.of(NegotiationFailed) == []


def test_cancelled_open_leaves_nothing() -> None:
    client, server = client_and_server()
    sid = client.core.open_stream([ECHO], 0.0)
    client.core.reset_stream(sid)
    exchange(client, server, 0.0)
    assert client.core.negotiating == 0 and client.core.negotiation_deadlines == 0
    assert client.events == []


# -- lazy negotiation ------------------------------------------------------------------------
def test_data_in_the_proposal_frame_is_credited_once() -> None:
    """Header + proposal + data in one yamux frame: the data is the protocol's, counted once."""
    client, server = client_and_server(server_auto_consume=False)
    encrypt = client.core._encrypt
    assert encrypt is not None
    session = yamux.YamuxSession(is_client=True)
    sid = session.open_stream()
    payload = b"p" * 1000
    window = ConnectionLimits().stream_receive_window
    proposal = multistream.HEADER + multistream.encode_message(ECHO)
    session.send_data(sid, proposal + payload)
    server.feed(encrypt(session.data_to_send()), 0.0)
    assert server.events == [StreamNegotiated(sid, ECHO, True), DataReceived(sid, payload)]
    # the negotiation bytes were read by the core; the data waits for the application
    assert server.core.session.stream_unread(sid) == len(payload)
    assert server.core.buffered_in == len(payload)
    server.core.consume(sid, len(payload))
    assert server.core.buffered_in == 0
    # keep sending past several windows: every byte is credited exactly once, or yamux would
    # either stall (credited too little) or refuse the consume (credited twice)
    for _ in range(3 * window // len(payload)):
        session.send_data(sid, payload)
        session.receive_data(_decrypt_all(client, server.core.data_to_send()))
        server.feed(encrypt(session.data_to_send()), 0.0)
        server.core.consume(sid, len(payload))
    assert server.core.buffered_in == 0
    assert session.pending_send(sid) == 0
    assert not server.of(ConnectionClosed)


def _decrypt_all(client: Side, raw: bytes) -> bytes:
    transport = client.core._noise
    assert transport is not None
    return transport.receive_data(raw) if raw else b""


def test_listener_data_with_the_echo_reaches_the_dialer_once() -> None:
    client, server = client_and_server(client_auto_consume=False)
    sid = client.core.open_stream([ECHO], 0.0)
    server.feed(client.core.data_to_send(), 0.0)
    server.core.send_data(sid, b"early answer")  # rides behind the echo of the proposal
    client.feed(server.core.data_to_send(), 0.0)
    assert client.events == [StreamNegotiated(sid, ECHO, False), DataReceived(sid, b"early answer")]
    assert client.core.buffered_in == len(b"early answer")


# -- keepalive, idle, ping, close ------------------------------------------------------------
def test_keepalive_pings_and_idle_timeout() -> None:
    client, server = client_and_server(keepalive_interval=5.0, idle_timeout=12.0)
    client.timer(5.0)
    ping = client.core.data_to_send()
    assert ping  # a yamux ping went out
    server.feed(ping, 5.0)
    client.feed(server.core.data_to_send(), 5.0)  # the pong: a sign of life
    assert client.core.get_timer() == 10.0
    client.timer(10.0)
    client.core.data_to_send()  # this ping is never answered
    client.timer(15.0)
    assert not client.of(ConnectionClosed)  # silent for 10 s: within 12
    events = client.timer(20.0)
    assert events == [ConnectionClosed("remote silent for 15s")]


def test_ping_reports_rtt() -> None:
    client, server = client_and_server()
    opaque = client.core.ping(1.0)
    server.feed(client.core.data_to_send(), 1.2)
    client.feed(server.core.data_to_send(), 1.25)
    [answer] = client.of(PingAnswered)
    assert answer.opaque == opaque and answer.rtt == pytest.approx(0.25)


def test_close_sends_go_away() -> None:
    client, server = client_and_server()
    client.core.close("done")
    assert client.core.close_reason == "done"
    server.feed(client.core.data_to_send(), 0.0)
    [closed] = server.of(ConnectionClosed)
    assert closed.reason == "remote sent go-away 0"
    with pytest.raises(ConnectionClosedError):
        client.core.open_stream([ECHO], 0.0)


# -- rate limit on stream opening ---------------------------------------------------------------
def test_streams_opened_too_fast_are_reset_before_any_work() -> None:
    client, server = client_and_server(stream_open_rate=10.0, stream_open_burst=5.0)
    sids = [client.core.open_stream([ECHO], 0.0) for _ in range(8)]
    exchange(client, server, 0.0)
    agreed = {e.stream_id for e in client.of(StreamNegotiated)}
    failed = {e.stream_id for e in client.of(NegotiationFailed)}
    assert agreed == set(sids[:5]) and failed == set(sids[5:])
    assert server.core.streams_refused == 3
    assert server.core.negotiation_deadlines == 0  # refused streams cost no negotiation state
    client.clear()
    sid = client.core.open_stream([ECHO], 0.5)  # 0.5 s later the bucket has 5 tokens again
    exchange(client, server, 0.5)
    assert client.events == [StreamNegotiated(sid, ECHO, False)]


# -- outbound bounds ---------------------------------------------------------------------------
def test_write_past_the_stream_cap_resets_the_stream() -> None:
    client, server = client_and_server(server_auto_consume=False, max_stream_write_buffer=512 * 1024)
    sid = open_agreed(client, server)
    chunk = b"x" * 256 * 1024
    with pytest.raises(WriteBufferFullError):
        for _ in range(100):
            client.core.send_data(sid, chunk)
            exchange(client, server, 0.0)
    # one window (1 MiB) was framed, then the queue filled to its cap plus one write
    assert client.core.buffered_out == 0  # the reset dropped the queue
    exchange(client, server, 0.0)
    assert StreamReset(sid) in server.events
    open_agreed(client, server)  # the connection is fine


PROPOSAL = len(multistream.HEADER + multistream.encode_message(ECHO))  # it used some of the window


def test_write_past_the_connection_cap_fails() -> None:
    client, server = client_and_server(server_auto_consume=False, max_write_buffer=1 * MiB)
    streams = [open_agreed(client, server) for _ in range(4)]
    big = b"y" * (2 * MiB)
    client.core.send_data(streams[0], big)  # the window takes 1 MiB, 1 MiB waits
    assert client.core.buffered_out == 1 * MiB + PROPOSAL
    with pytest.raises(WriteBufferFullError):
        client.core.send_data(streams[1], big)
    client.core.send_data(streams[2], b"z" * 1000)  # framed at once: its window is open


def test_corked_writes_queue_and_flow_on_resume() -> None:
    client, server = client_and_server()
    sid = open_agreed(client, server)
    client.core.pause_writing()
    client.core.send_data(sid, b"a" * 100)
    assert client.core.data_to_send() == b"" and client.core.buffered_out == 100
    assert client.core.resume_writing() == [StreamWritable(sid)]
    exchange(client, server, 0.0)
    assert bytes(server.data[sid]) == b"a" * 100


def test_stalled_stream_is_reset_and_stuck_connection_dropped() -> None:
    client, server = client_and_server(
        server_auto_consume=False, write_stall_timeout=8.0, max_write_buffer=1 * MiB, keepalive_interval=100.0
    )
    sid = open_agreed(client, server)
    client.core.send_data(sid, b"s" * (1 * MiB + 1000), )  # 1000 bytes wait for window
    exchange(client, server, 0.0)
    assert client.core.buffered_out == 1000 + PROPOSAL
    assert client.core.get_timer() == 2.0  # a check every quarter of the stall timeout
    for t in (2.0, 4.0, 6.0, 8.0):
        assert client.timer(t) == []
    assert client.timer(10.0) == [StreamAborted(sid, "no send progress for 8s")]
    exchange(client, server, 10.0)
    assert StreamReset(sid) in server.events

    # a peer that reads, but so slowly that we stay at the outbound cap for the stall timeout, is
    # dropped: each stream progresses (no stream reset), the connection as a whole does not
    other = open_agreed(client, server, 10.0)
    client.core.send_data(other, b"t" * (6 * MiB))  # 1 MiB framed, 5 MiB queued: over the 1 MiB cap
    exchange(client, server, 10.0)
    events: list[object] = []
    t = 10.0
    while not events:
        t += 2.0
        server.core.consume(other, MiB // 2)  # a trickle: half a window every check
        exchange(client, server, t)
        queued = client.core.buffered_out
        events = client.timer(t)
    assert 18.0 <= t <= 20.0
    assert events == [ConnectionClosed(f"peer does not read: {queued} bytes queued for 8s")]
    assert client.core.buffered_out == 0  # closing dropped the queue


# -- inbound bounds ------------------------------------------------------------------------------
def test_unread_data_over_the_connection_budget_resets_the_biggest_streams() -> None:
    client, server = client_and_server(server_auto_consume=False, max_buffered_in=3 * MiB, max_budget_resets=100)
    streams = [open_agreed(client, server) for _ in range(6)]
    for i, sid in enumerate(streams):
        client.core.send_data(sid, bytes([i]) * (MiB - i * 1000))  # each up to its window
        exchange(client, server, 0.0)
        assert server.core.buffered_in <= 3 * MiB
    aborted = server.of(StreamAborted)
    assert len(aborted) == 3
    assert aborted[0].stream_id == streams[0]  # the biggest holder went first
    # over half the budget, the heaviest streams got no more credit: reading them grants nothing
    survivor = streams[-1]
    server.core.consume(survivor, MiB - 5000)
    assert server.core.data_to_send() == b""


def test_a_connection_that_keeps_filling_buffers_is_dropped() -> None:
    client, server = client_and_server(server_auto_consume=False, max_buffered_in=2 * MiB, max_budget_resets=2)
    for _ in range(4):
        sid = open_agreed(client, server)
        client.core.send_data(sid, b"f" * MiB)
        exchange(client, server, 0.0)
    assert isinstance(server.events[-1], ConnectionClosed)
    assert "kept filling" in server.events[-1].reason


def test_node_budget_is_shared_and_released() -> None:
    budget = BufferBudget(max_buffered_in=4 * MiB)
    sides = [client_and_server(server_auto_consume=False, server_budget=budget) for _ in range(3)]
    servers = [server for _, server in sides]
    for client, server in sides:
        for _ in range(2):
            sid = open_agreed(client, server)
            client.core.send_data(sid, b"n" * MiB)
            exchange(client, server, 0.0)
            run_requested_checks(servers, 0.0)  # quiet connections over their share shed too
            total = sum(s.core.buffered_in for s in servers)
            assert total <= 4 * MiB + 3 * 64 * 1024  # the cap, plus each connection's one-quantum allowance
    assert budget.reserved_in <= 4 * MiB
    # the first two connections filled 2 MiB each while there was room; the third pushed the node
    # over, and a quiet one over its fair share (4/3 MiB) was asked to shed
    assert servers[0].of(StreamAborted)
    for _, server in sides:
        server.core.abort("test over")
    assert budget.reserved_in == 0


def test_data_nobody_reads_is_dropped_at_once() -> None:
    client, server = client_and_server(server_auto_consume=False)
    sid = open_agreed(client, server)
    client.core.send_data(sid, b"d" * 5000)
    exchange(client, server, 0.0)
    assert server.core.buffered_in == 5000
    server.core.stop_reading(sid)  # e.g. the handler returned
    assert server.core.buffered_in == 0
    server.clear()
    for _ in range(40):  # several windows: credited as they are dropped, never buffered
        client.core.send_data(sid, b"d" * 65536)
        exchange(client, server, 0.0)
    assert server.events == [] and server.core.buffered_in == 0
    client.core.close_stream(sid)
    exchange(client, server, 0.0)
    assert server.events == []  # the adapter forgot the stream; nothing is reported


# -- properties ---------------------------------------------------------------------------------
_op = st.one_of(
    st.tuples(st.just("open"), st.booleans(), st.integers(0, 2)),
    st.tuples(st.just("send"), st.booleans(), st.integers(0, 300_000)),
    st.tuples(st.just("read"), st.booleans(), st.integers(0, 400_000)),
    st.tuples(st.just("close"), st.booleans(), st.integers(0, 7)),
    st.tuples(st.just("reset"), st.booleans(), st.integers(0, 7)),
    st.tuples(st.just("abandon"), st.booleans(), st.integers(0, 7)),
    st.tuples(st.just("cork"), st.booleans(), st.integers(0, 1)),
    st.tuples(st.just("ping"), st.booleans(), st.integers(0, 0)),
    st.tuples(st.just("time"), st.booleans(), st.integers(0, 20_000)),
    st.tuples(st.just("exchange"), st.booleans(), st.integers(0, 0)),
)


class _App:
    """What one side's application did with its streams, to check the core against."""

    def __init__(self, side: Side) -> None:
        self.side = side
        self.sent: dict[int, bytearray] = {}
        self.unread: dict[int, int] = {}
        self.gone: set[int] = set()
        self.streams: list[int] = []

    def note(self, events: list[object]) -> None:
        for event in events:
            if isinstance(event, StreamNegotiated):
                self.streams.append(event.stream_id)
            elif isinstance(event, DataReceived):
                self.unread[event.stream_id] = self.unread.get(event.stream_id, 0) + len(event.data)
            elif isinstance(event, (StreamReset, StreamAborted, NegotiationFailed)):
                self.gone.add(event.stream_id)
                self.unread.pop(event.stream_id, None)

    def pick(self, index: int) -> int | None:
        live = [s for s in self.streams if s not in self.gone]
        return live[index % len(live)] if live else None


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(_op, max_size=40))
def test_random_operations_keep_the_books_straight(ops: list[tuple[str, bool, int]]) -> None:
    client, server = client_and_server(
        client_auto_consume=False, server_auto_consume=False, max_buffered_in=2 * MiB,
        max_write_buffer=MiB, max_stream_write_buffer=512 * 1024, max_budget_resets=1000,
        stream_negotiation_timeout=3.0, keepalive_interval=4.0, idle_timeout=9.0, write_stall_timeout=6.0,
    )
    apps = {True: _App(client), False: _App(server)}
    now = 0.0

    def shuttle() -> None:
        for _ in range(1000):
            x, y = client.core.data_to_send(), server.core.data_to_send()
            if not x and not y:
                return
            if x:
                apps[False].note(server.feed(x, now))
            if y:
                apps[True].note(client.feed(y, now))

    for op, on_client, arg in ops:
        app = apps[on_client]
        core = app.side.core
        if core.phase != "open":
            break
        sid = app.pick(arg)
        if op == "open":
            core.open_stream([ECHO, OTHER, "/nobody/1.0.0"][arg:] or [ECHO], now)
        elif op == "send" and sid is not None:
            try:
                core.send_data(sid, b"s" * arg)
            except WriteBufferFullError:
                app.gone.add(sid)
            except ConnectionError:
                pass  # closed for writing
        elif op == "read" and sid is not None:
            n = min(arg, app.unread.get(sid, 0))
            core.consume(sid, n)
            app.unread[sid] = app.unread.get(sid, 0) - n
        elif op == "close" and sid is not None:
            core.close_stream(sid)
        elif op == "reset" and sid is not None:
            core.reset_stream(sid)
            app.gone.add(sid)
            app.unread.pop(sid, None)
        elif op == "abandon" and sid is not None:
            core.stop_reading(sid)
            app.gone.add(sid)
            app.unread.pop(sid, None)
        elif op == "cork":
            if arg:
                core.pause_writing()
            else:
                app.note(core.resume_writing())  # type: ignore[arg-type]
        elif op == "ping":
            core.ping(now)
        elif op == "time":
            now += arg / 1000
            for side in (client, server):
                events = side.timer(now)
                apps[side is client].note(events)  # type: ignore[arg-type]
                timer = side.core.get_timer()
                assert timer is None or timer > now  # nothing overdue is left behind
        else:
            shuttle()
        for each in apps.values():
            c = each.side.core
            if c.phase != "open":
                continue
            # unread bytes: the core's figure is exactly what its application was handed and did not read
            assert c.buffered_in == sum(each.unread.values())
            assert c.buffered_in == sum(c.session.stream_unread(s) for s in c.session.stream_ids())
            assert c.buffered_out == sum(c.session.pending_send(s) for s in c.session.stream_ids())
            assert c.buffered_out <= MiB + 300_000  # the cap plus one write
            assert 0 <= c.negotiating <= c.negotiation_deadlines
