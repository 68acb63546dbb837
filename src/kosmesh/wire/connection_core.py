"""One libp2p connection's rules as a sans-I/O state machine: bytes and ``now`` in; bytes, events and a timer out.

The core runs the upgrade (``multistream(/noise) -> Noise XX -> multistream(/yamux/1.0.0) ->
yamux``, in both directions), then per-stream protocol agreement (one multistream dialer or
listener per stream), the handshake and negotiation deadlines, keepalive pings and the idle
timeout, go-away and close, and the bounds on what a remote can make us hold: send queues,
unread receive buffers (per connection and, through a shared :class:`BufferBudget`, per node)
and the rate of inbound stream opening.

The adapter feeds it with :meth:`receive_data`, sends what :meth:`data_to_send` returns, calls
:meth:`handle_timer` at :meth:`get_timer`, and acts on the returned events. It never reads a
clock, sleeps or touches a socket, so tests drive two cores against each other and assert
every timeout by passing ``now``.

Hot path: yamux events for streams whose protocol is agreed pass through untouched (the very
list yamux returned), and deadlines live in a deque kept in creation order, so the earliest is
found in O(1) and finished negotiations are dropped lazily.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.wire import multistream, noise, yamux
from kosmesh.wire.buffers import BufferBudget
from kosmesh.wire.connection_bounds import InboundBounds, OutboundBounds
from kosmesh.wire.connection_events import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionLimits,
    ConnectionOpened,
    CoreEvent,
    NegotiationFailed,
    PingAnswered,
    StreamAborted,
    StreamNegotiated,
    WriteBufferFullError,
)
from kosmesh.wire.ratelimit import TokenBucket

_DataReceived: Final = yamux.DataReceived
_INF: Final = float("inf")

# Phases of the upgrade, then of the connection's life.
MS_SECURITY: Final = "ms-security"
NOISE: Final = "noise"
MS_MUXER: Final = "ms-muxer"
OPEN: Final = "open"
CLOSED: Final = "closed"


class _Negotiation:
    """One stream agreeing on its protocol; in ``_special`` until agreed, aborted or expired."""

    __slots__ = ("deadline", "negotiator", "outbound", "reason", "stream_id")

    def __init__(
        self,
        stream_id: int,
        negotiator: multistream.MultistreamDialer | multistream.MultistreamListener,
        deadline: float,
        outbound: bool,
        reason: str,
    ) -> None:
        self.stream_id = stream_id
        self.negotiator = negotiator
        self.deadline = deadline
        self.outbound = outbound
        self.reason = reason  # why it fails if the deadline passes


_DISCARD: Final = "discard"  # ``_special`` marker: nobody reads this stream; its data is dropped


class ConnectionCore:
    """The protocol side of one connection. ``initiator`` is the dialer."""

    __slots__ = (
        "_encrypt",
        "_expected",
        "_handshake",
        "_handshake_deadline",
        "_identity",
        "_inbound",
        "_keepalive_at",
        "_last_received",
        "_ms",
        "_negotiating",
        "_negotiating_in",
        "_negotiations",
        "_noise",
        "_now",
        "_open_bucket",
        "_out",
        "_outbound",
        "_ping_counter",
        "_pings",
        "_session",
        "_special",
        "_supports",
        "close_reason",
        "inbound_check_due",
        "initiator",
        "limits",
        "next_timer",
        "phase",
        "remote_peer_id",
        "streams_refused",
    )

    def __init__(
        self,
        *,
        identity: Ed25519PrivateKey,
        initiator: bool,
        limits: ConnectionLimits,
        supports: Callable[[str], bool],
        now: float,
        expected_peer_id: PeerId | None = None,
        budget: BufferBudget | None = None,
        wake: Callable[[], None] | None = None,
        static_private: bytes | None = None,
        ephemeral_private: bytes | None = None,
    ) -> None:
        """``wake`` is called when another connection of the same ``budget`` needs this one to
        shed: the adapter should then call :meth:`check_inbound` soon (not from inside ``wake``)."""
        self.initiator = initiator
        self.limits = limits
        self._identity = identity
        self._expected = expected_peer_id
        self._supports = supports
        self.phase: str = MS_SECURITY
        self.remote_peer_id: PeerId | None = None
        self.close_reason: str | None = None
        self._ms: multistream.MultistreamDialer | multistream.MultistreamListener
        if initiator:
            self._ms = multistream.MultistreamDialer([noise.PROTOCOL_ID])
        else:
            self._ms = multistream.MultistreamListener(lambda p: p == noise.PROTOCOL_ID)
        self._handshake = noise.NoiseHandshake(
            initiator=initiator,
            identity=identity,
            remote_peer_id=expected_peer_id,
            static_private=static_private,
            ephemeral_private=ephemeral_private,
        )
        self._noise: noise.NoiseTransport | None = None
        self._encrypt: Callable[[bytes], bytes] | None = None
        self._session = yamux.YamuxSession(
            is_client=initiator,
            max_streams=limits.max_streams,
            receive_window=limits.stream_receive_window,
            max_stream_pending=limits.max_stream_write_buffer,
            max_pending_total=limits.max_write_buffer,
        )
        self._out: list[bytes] = [self._ms.initiate()]  # the adapter sends it once connected
        self._now = now
        self._last_received = now
        self._handshake_deadline = now + limits.handshake_timeout
        self._keepalive_at = _INF
        self.next_timer = self._handshake_deadline  # read by the adapter after each call: O(1)
        # Streams that need the core's attention when data arrives: negotiating ones (their
        # _Negotiation) and abandoned ones (_DISCARD). Everything else passes straight through.
        self._special: dict[int, _Negotiation | str] = {}
        self._negotiations: deque[_Negotiation] = deque()  # creation order = deadline order
        self._negotiating = 0  # ours and the remote's...
        self._negotiating_in = 0  # ...and the remote's alone, which max_negotiating_streams bounds
        self._ping_counter = 0
        self._pings: dict[int, float] = {}
        self._open_bucket = TokenBucket(limits.stream_open_rate, limits.stream_open_burst, now)
        self.streams_refused = 0  # inbound streams reset for opening too fast
        self._outbound = OutboundBounds(limits)
        self._inbound = InboundBounds(limits, budget, wake)
        self.inbound_check_due = False

    # -- figures -----------------------------------------------------------------------
    @property
    def session(self) -> yamux.YamuxSession:
        return self._session

    @property
    def buffered_in(self) -> int:
        """Bytes received on agreed streams and not yet read by the application."""
        return self._session.unread

    @property
    def buffered_out(self) -> int:
        """Bytes the application wrote that wait for the peer's window (the socket's are the adapter's)."""
        return self._session.pending_total

    @property
    def negotiating(self) -> int:
        """Streams still agreeing on a protocol, opened by either side."""
        return self._negotiating

    @property
    def negotiating_in(self) -> int:
        """Of those, the ones the remote opened: at most ``max_negotiating_streams``."""
        return self._negotiating_in

    @property
    def negotiation_deadlines(self) -> int:
        """Deadlines still queued (finished negotiations are dropped from the front lazily)."""
        return len(self._negotiations)

    def pending_send(self, stream_id: int) -> int:
        return self._session.pending_send(stream_id)

    # -- bytes in and out ----------------------------------------------------------------
    def receive_data(self, data: bytes, now: float) -> list[CoreEvent]:
        """Feed bytes read from the socket; returns the events they caused, in order."""
        self._last_received = now
        if self.phase is OPEN:
            transport = self._noise
            assert transport is not None
            try:
                plain = transport.receive_data(data)
            except noise.NoiseError as exc:
                return self._closed_by(f"protocol error: {exc}")
            if not plain:
                return []
            session = self._session
            events = session.receive_data(plain)
            if session._unread > self._inbound.check_above:
                self.inbound_check_due = True  # the adapter calls check_inbound() once it has delivered
            special = self._special
            for event in events:
                if type(event) is not _DataReceived or event.stream_id in special:
                    return self._process(events, now)
            return events  # type: ignore[return-value]  # only DataReceived for agreed streams: passed through
        if self.phase is CLOSED:
            return []
        try:
            return self._advance_upgrade(data, now)
        except (noise.NoiseError, multistream.MultistreamError) as exc:
            return self._closed_by(f"protocol error: {exc}")

    def data_to_send(self) -> bytes:
        """Bytes to write to the socket, in order; b"" when there is nothing."""
        if self._out:
            return self._take_out()
        # YamuxSession.data_to_send, inlined: called after every read and write, mostly for nothing
        session = self._session
        frames = session._out
        if not frames:
            return b""
        session._out = []
        encrypt = self._encrypt
        return encrypt(b"".join(frames)) if encrypt is not None else b""

    def _take_out(self) -> bytes:
        parts = self._out
        self._out = []
        out = self._session.data_to_send()
        if out and self._encrypt is not None and self.phase is not CLOSED:
            parts.append(self._encrypt(out))
        return b"".join(parts)

    # -- the upgrade -------------------------------------------------------------------
    def _advance_upgrade(self, data: bytes, now: float) -> list[CoreEvent]:
        """multistream(/noise), Noise XX in the clear, then multistream(/yamux) inside Noise."""
        if self.phase is MS_SECURITY:
            out = self._ms.receive_data(data)
            if out:
                self._out.append(out)
            if self._ms.selected is None:
                return []
            data = self._ms.unconsumed()
            self.phase = NOISE
            first = self._handshake.initiate()
            if first:
                self._out.append(first)
            if not data:
                return []
        if self.phase is NOISE:
            handshake = self._handshake
            out = handshake.receive_data(data)
            if out:
                self._out.append(out)
            if not handshake.complete:
                return []
            transport = handshake.take_transport()
            self.remote_peer_id = handshake.remote_peer_id
            self._noise = transport
            self._encrypt = transport.encrypt
            self.phase = MS_MUXER
            if self.initiator:
                self._ms = multistream.MultistreamDialer([yamux.PROTOCOL_ID])
            else:
                self._ms = multistream.MultistreamListener(lambda p: p == yamux.PROTOCOL_ID)
            self._out.append(transport.encrypt(self._ms.initiate()))
            leftover = handshake.unconsumed()
            if not leftover:
                return []
            data = leftover
        assert self._noise is not None
        plain = self._noise.receive_data(data)
        if not plain:
            return []
        out = self._ms.receive_data(plain)
        if out:
            self._out.append(self._noise.encrypt(out))
        if self._ms.selected is None:
            return []
        rest = self._ms.unconsumed()
        self.phase = OPEN
        self._keepalive_at = now + self.limits.keepalive_interval
        self._recompute_timer()
        assert self.remote_peer_id is not None
        events: list[CoreEvent] = [ConnectionOpened(self.remote_peer_id)]
        if rest:
            events += self._process(self._session.receive_data(rest), now)
        return events

    # -- yamux events that need the core -------------------------------------------------
    def _process(self, events: list[yamux.Event], now: float) -> list[CoreEvent]:
        """The slow path: handle what is the core's, pass the rest through in order."""
        out: list[CoreEvent] = []
        special = self._special
        session = self._session
        for event in events:
            kind = type(event)
            if kind is _DataReceived:
                sid = event.stream_id  # type: ignore[union-attr]
                entry = special.get(sid)
                if entry is None:
                    out.append(event)  # type: ignore[arg-type]  # agreed stream: passed through
                elif entry is _DISCARD:
                    session.consume(sid, len(event.data))  # type: ignore[union-attr]
                else:
                    self._negotiate(entry, event.data, out)  # type: ignore[arg-type, union-attr]
            elif kind is yamux.StreamOpened:
                self._accept_stream(event.stream_id, now)  # type: ignore[union-attr]
            elif kind is yamux.StreamEnded or kind is yamux.StreamReset or kind is yamux.StreamWritable:
                sid = event.stream_id  # type: ignore[union-attr]
                entry = special.get(sid)
                if entry is None:
                    out.append(event)  # type: ignore[arg-type]  # agreed stream: passed through
                elif entry is _DISCARD:
                    if kind is not yamux.StreamWritable:
                        del special[sid]  # nothing more can arrive
                elif kind is yamux.StreamEnded:
                    self._abort(entry, "remote closed the stream during negotiation", out)  # type: ignore[arg-type]
                elif kind is yamux.StreamReset:
                    self._abort(entry, "stream reset during negotiation", out)  # type: ignore[arg-type]
            elif kind is yamux.PingAcknowledged:
                opaque = event.opaque  # type: ignore[union-attr]
                sent = self._pings.pop(opaque, None)
                if sent is not None:
                    out.append(PingAnswered(opaque, now - sent))
            elif kind is yamux.GoAwayReceived:
                if self.close_reason is None:
                    self.close_reason = f"remote sent go-away {event.code}"  # type: ignore[union-attr]
            elif kind is yamux.ConnectionTerminated:
                self._close(f"yamux: {event.reason}", out)  # type: ignore[union-attr]
                break
            # StreamAccepted: the remote acknowledged a stream we opened; nothing to do
        return out

    def _accept_stream(self, stream_id: int, now: float) -> None:
        """A remote-opened stream: refused at once if opened too fast or too many negotiate."""
        session = self._session
        if not session.has_stream(stream_id):
            return  # opened and reset in the same read: nothing to negotiate
        if self._open_bucket.take(now) > 0.0:
            self.streams_refused += 1
            session.reset_stream(stream_id)
            return
        if self._negotiating_in >= self.limits.max_negotiating_streams:  # our own dials do not count
            session.reset_stream(stream_id)
            return
        listener = multistream.MultistreamListener(self._supports)
        deadline = now + self.limits.stream_negotiation_timeout
        self._track(_Negotiation(stream_id, listener, deadline, False, "protocol negotiation timed out"))
        session.send_data(stream_id, listener.initiate(), False)

    def _track(self, entry: _Negotiation) -> None:
        self._special[entry.stream_id] = entry
        self._negotiating += 1
        self._negotiating_in += not entry.outbound
        self._negotiations.append(entry)
        if entry.deadline < self.next_timer:
            self.next_timer = entry.deadline

    def _negotiate(self, entry: _Negotiation, data: bytes, out: list[CoreEvent]) -> None:
        sid = entry.stream_id
        session = self._session
        negotiator = entry.negotiator
        try:
            reply = negotiator.receive_data(data)
        except multistream.MultistreamError as exc:
            self._abort(entry, str(exc), out)
            return
        if reply and session.has_stream(sid):  # it may be reset later in the same read
            session.send_data(sid, reply, False)
        protocol = negotiator.selected
        if protocol is None:
            session.consume(sid, len(data))  # negotiation bytes are the core's: read at once
            return
        # Lazy negotiation: what followed the agreement in this frame is the protocol's first
        # data. It is credited back when the application reads it, not now (once only).
        rest = negotiator.unconsumed()
        session.consume(sid, len(data) - len(rest))
        self._finish_negotiation(entry)
        out.append(StreamNegotiated(sid, protocol, not entry.outbound))
        if rest:
            out.append(_DataReceived(sid, rest))

    def _finish_negotiation(self, entry: _Negotiation) -> None:
        del self._special[entry.stream_id]
        self._negotiating -= 1
        self._negotiating_in -= not entry.outbound
        queue = self._negotiations
        special = self._special
        while queue and special.get(queue[0].stream_id) is not queue[0]:
            queue.popleft()  # finished ones at the front go now, so agreed streams leave nothing behind

    def _abort(self, entry: _Negotiation, reason: str, out: list[CoreEvent]) -> None:
        """A negotiation failed: reset the stream and tell the opener (if it was ours)."""
        self._finish_negotiation(entry)
        self._session.reset_stream(entry.stream_id)  # a no-op if the remote already reset it
        if entry.outbound:
            out.append(NegotiationFailed(entry.stream_id, reason))

    # -- streams -------------------------------------------------------------------------
    def open_stream(self, protocols: Sequence[str], now: float) -> int:
        """Open a stream proposing ``protocols`` in order; the answer arrives as an event."""
        if self.phase is not OPEN:
            raise ConnectionClosedError("connection is not open")
        self._now = now
        dialer = multistream.MultistreamDialer(protocols)  # checks the ids before a stream exists
        try:
            stream_id = self._session.open_stream()
        except yamux.YamuxError as exc:
            raise ConnectionClosedError(str(exc)) from None
        reason = f"no answer negotiating {protocols[0]}"
        self._track(_Negotiation(stream_id, dialer, now + self.limits.stream_negotiation_timeout, True, reason))
        self._session.send_data(stream_id, dialer.initiate(), False)
        return stream_id

    def send_data(self, stream_id: int, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` on an agreed stream; framed as the peer's window allows.

        Raises :class:`WriteBufferFullError` (and resets the stream) when the stream's or the
        connection's queue is already at its cap.
        """
        if self.phase is not OPEN:
            raise ConnectionClosedError(self.close_reason or "connection closed")
        session = self._session
        try:
            session.send_data(stream_id, data)
        except yamux.SendQueueFull as exc:
            self.reset_stream(stream_id)
            raise WriteBufferFullError(f"{exc}: the peer is not reading; stream reset") from None
        except yamux.YamuxError as exc:
            raise ConnectionError(str(exc)) from None
        if session._pending_total and self._outbound.check_at is None:
            when = self._outbound.schedule(self._now)
            if when < self.next_timer:
                self.next_timer = when

    def consume(self, stream_id: int, n: int) -> None:
        """The application read ``n`` bytes of the stream: grant them back to the peer."""
        session = self._session
        session.consume(stream_id, n)
        if session._unread < self._inbound.relax_below:
            self._inbound.relax(session)

    def close_stream(self, stream_id: int) -> None:
        """Half-close: FIN after anything queued. The remote may still send."""
        if self.phase is OPEN:
            self._session.close_stream(stream_id)

    def stop_reading(self, stream_id: int) -> None:
        """Nobody will read this stream again: drop what it holds and whatever arrives later."""
        session = self._session
        unread = session.stream_unread(stream_id)
        if unread:
            session.consume(stream_id, unread)
        if self.phase is OPEN and session.has_stream(stream_id) and stream_id not in self._special:
            self._special[stream_id] = _DISCARD
        if session._unread < self._inbound.relax_below:
            self._inbound.relax(session)

    def reset_stream(self, stream_id: int) -> None:
        """Abort a stream (agreed or negotiating): RST, queued and unread data dropped."""
        entry = self._special.get(stream_id)
        if entry is not None:
            if entry is _DISCARD:
                del self._special[stream_id]
            else:
                self._finish_negotiation(entry)  # type: ignore[arg-type]
        self._inbound.forget(stream_id)
        self._outbound.forget(stream_id)
        if self.phase is OPEN:
            self._session.reset_stream(stream_id)

    # -- pings, flow control, close -------------------------------------------------------
    def ping(self, now: float) -> int:
        """Send a yamux ping; :class:`PingAnswered` with the returned value carries its RTT."""
        if self.phase is not OPEN:
            raise ConnectionClosedError("connection is not open")
        self._now = now
        opaque = self._next_opaque()
        self._pings[opaque] = now
        self._session.ping(opaque)
        return opaque

    def forget_ping(self, opaque: int) -> None:
        """The caller stopped waiting for this ping (timed out): keep no state for it."""
        self._pings.pop(opaque, None)

    def _next_opaque(self) -> int:
        self._ping_counter = (self._ping_counter + 1) & 0xFFFFFFFF
        return self._ping_counter

    def pause_writing(self) -> None:
        """The socket's buffer is full: frame no more data; writes queue where the caps apply."""
        self._session.cork()

    def resume_writing(self) -> list[CoreEvent]:
        """The socket drained: frame queued data again; returns streams whose queue emptied."""
        if self.phase is not OPEN:
            self._session.uncork()
            return []
        return self._session.uncork()  # type: ignore[return-value]

    def close(self, reason: str = "closed locally") -> None:
        """Close gracefully: go-away, then the adapter sends :meth:`data_to_send` and hangs up."""
        if self.phase is OPEN:
            self._session.go_away(yamux.GO_AWAY_NORMAL)
        self._close(reason, [])

    def abort(self, reason: str) -> None:
        """The connection is gone or must go now (socket lost, refused by the host)."""
        self._close(reason, [])

    def _closed_by(self, reason: str) -> list[CoreEvent]:
        out: list[CoreEvent] = []
        self._close(reason, out)
        return out

    def _close(self, reason: str, out: list[CoreEvent]) -> None:
        if self.phase is CLOSED:
            return
        if self.phase is OPEN and self._encrypt is not None:
            final = self._session.data_to_send()  # a go-away, if one is due
            if final:
                self._out.append(self._encrypt(final))
        self.phase = CLOSED
        self._session.terminate()  # queued data is dropped now, not when the adapter is collected
        if self.close_reason is None:
            self.close_reason = reason
        self._special.clear()
        self._negotiations.clear()
        self._negotiating = self._negotiating_in = 0
        self._pings.clear()
        self._outbound.clear()
        self._inbound.release()
        self.next_timer = _INF
        out.append(ConnectionClosed(self.close_reason))

    # -- timers ----------------------------------------------------------------------------
    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due (it may be early; then it does nothing)."""
        return None if self.next_timer == _INF else self.next_timer

    def handle_timer(self, now: float) -> list[CoreEvent]:
        """Apply every deadline that has passed by ``now``."""
        self._now = now
        out: list[CoreEvent] = []
        if self.phase is not OPEN:
            if self.phase is not CLOSED and now >= self._handshake_deadline:
                self._close("handshake timed out", out)
            return out
        queue = self._negotiations
        special = self._special
        while queue:
            head = queue[0]
            if special.get(head.stream_id) is not head:
                queue.popleft()
            elif head.deadline <= now:
                self._abort(head, head.reason, out)
            else:
                break
        if now >= self._keepalive_at:
            silent = now - self._last_received
            if silent > self.limits.idle_timeout:
                self._close(f"remote silent for {silent:.0f}s", out)
                return out
            self._session.ping(self._next_opaque())  # its answer is just a sign of life
            self._keepalive_at = now + self.limits.keepalive_interval
        check = self._outbound.check_at
        if check is not None and now >= check:
            self._check_outbound(now, out)
        if self.phase is OPEN:
            self._recompute_timer()
        return out

    def _recompute_timer(self) -> None:
        when = self._keepalive_at
        queue = self._negotiations
        if queue and queue[0].deadline < when:
            when = queue[0].deadline
        check = self._outbound.check_at
        if check is not None and check < when:
            when = check
        self.next_timer = when

    # -- the bounds -------------------------------------------------------------------------
    def _check_outbound(self, now: float, out: list[CoreEvent]) -> None:
        reset, close = self._outbound.check(self._session, now, self._special, self.reset_stream)
        out += [StreamAborted(sid, why) for sid, why in reset]
        if close is not None:
            self._close(close, out)

    def check_inbound(self, now: float) -> list[CoreEvent]:
        """Hold unread inbound bytes within the connection's and the node's budget.

        Called by the adapter when ``inbound_check_due`` is set, after it delivered
        :meth:`receive_data`'s events (so data handed to receive callbacks is not counted), and
        soon after ``wake`` was called. The policy is
        :class:`~kosmesh.wire.connection_bounds.InboundBounds`'.
        """
        self.inbound_check_due = False
        out: list[CoreEvent] = []
        if self.phase is not OPEN:
            return out
        self._now = now
        reset, close = self._inbound.check(self._session, self.reset_stream)
        out += [StreamAborted(sid, why) for sid, why in reset]
        if close is not None:
            self._close(close, out)
        return out
