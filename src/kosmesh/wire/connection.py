"""The asyncio adapter for one libp2p connection: TCP bytes in, streams out.

Every rule (upgrade, deadlines, keepalive, stream negotiation, buffer bounds) lives in the
sans-I/O :class:`~kosmesh.wire.connection_core.ConnectionCore`; this module moves bytes
between the socket and the core, turns the core's events into :class:`Stream` objects,
futures and woken readers and writers, and keeps one asyncio timer armed at the core's next
deadline (re-armed only when the core's deadline moves earlier; an early fire re-arms).

Upgrade order, as in the libp2p connections spec:
``multistream(/noise) -> Noise XX -> multistream(/yamux/1.0.0) -> yamux``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal, cast

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.wire import yamux
from kosmesh.wire.buffers import BufferBudget
from kosmesh.wire.connection_core import CLOSED, ConnectionCore
from kosmesh.wire.connection_events import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionLimits,
    ConnectionOpened,
    CoreEvent,
    NegotiationFailed,
    PingAnswered,
    ProtocolNegotiationError,
    StreamAborted,
    StreamNegotiated,
    StreamResetError,
    WriteBufferFullError,
)
from kosmesh.wire.stream import DataCallback, EndCallback, Stream

__all__ = [
    "Connection",
    "ConnectionClosedError",
    "ConnectionLimits",
    "DataCallback",
    "Direction",
    "EndCallback",
    "ProtocolNegotiationError",
    "Stream",
    "StreamHandler",
    "StreamResetError",
    "WriteBufferFullError",
]

log = logging.getLogger(__name__)

_DataReceived = yamux.DataReceived
_StreamWritable = yamux.StreamWritable
_monotonic = time.monotonic
_INF = float("inf")

Direction = Literal["inbound", "outbound"]
StreamHandler = Callable[["Stream"], Awaitable[None]]


class Connection(asyncio.Protocol):
    """A secured, multiplexed connection to one authenticated peer."""

    def __init__(
        self,
        *,
        identity: Ed25519PrivateKey,
        direction: Direction,
        limits: ConnectionLimits,
        expected_peer_id: PeerId | None = None,
        stream_handler: Callable[[str], StreamHandler | None],
        on_closed: Callable[[Connection], None] | None = None,
        budget: BufferBudget | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.direction: Direction = direction
        self.limits = limits
        self.connection_id = os.urandom(8).hex()
        self._lookup_handler = stream_handler
        self._on_closed = on_closed
        self._budget = budget
        self._core = ConnectionCore(
            identity=identity,
            initiator=direction == "outbound",
            limits=limits,
            supports=self._supports,
            now=_monotonic(),
            expected_peer_id=expected_peer_id,
            budget=budget,
            wake=self._request_inbound_check,
        )
        self._inbound_check_scheduled = False
        self._session = self._core.session  # read-only queries on the drain path
        self._transport: asyncio.Transport | None = None
        self._streams: dict[int, Stream] = {}
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self._pending_accept: dict[int, asyncio.Future[None]] = {}
        self._ping_waiters: dict[int, asyncio.Future[float]] = {}
        self._write_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = _INF  # the core deadline the armed timer is for
        self._opened = False
        self._torn_down = False
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.closed_event = asyncio.Event()
        self.remote_peer_id: PeerId = PeerId.from_public_key(identity.public_key)  # replaced after handshake
        self.remote_address: tuple[str, int] | None = None
        self.local_address: tuple[str, int] | None = None
        self.established_at = 0.0
        if budget is not None:
            budget.join(self)

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # any asyncio-compatible loop's stream transport (uvloop's are not asyncio.Transport subclasses)
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.remote_address = (peer[0], peer[1]) if peer else None
        self.local_address = (sock[0], sock[1]) if sock else None
        if self._core.phase is CLOSED:  # refused before the socket arrived
            self._transport.close()
            return
        self._flush()
        self._arm_timer()

    def data_received(self, data: bytes) -> None:
        core = self._core
        try:
            events = core.receive_data(data, _monotonic())
            if events:
                self._handle_events(events)
            if core.inbound_check_due:
                self._handle_events(core.check_inbound(_monotonic()))
            out = core.data_to_send()
            if out:
                self._send(out)
            if core.next_timer < self._timer_at:
                self._arm_timer()
        except Exception as exc:  # one bad connection must never take the node down
            log.exception("unexpected error on connection %s", self.connection_id)
            self._fail(f"internal error: {exc.__class__.__name__}")

    def eof_received(self) -> bool | None:
        self._fail("remote closed the connection")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail("connection lost" if exc is None else f"connection lost: {exc}")

    def pause_writing(self) -> None:
        self._write_paused = True
        self._core.pause_writing()

    def resume_writing(self) -> None:
        self._write_paused = False
        events = self._core.resume_writing()
        if events:
            self._handle_events(events)
        self._flush()
        for stream in list(self._streams.values()):
            stream._wake_writer()

    # -- the core's events -------------------------------------------------------------
    def _handle_events(self, events: list[CoreEvent]) -> None:
        streams = self._streams
        core = self._core
        for event in events:
            kind = type(event)
            if kind is _DataReceived:
                sid = event.stream_id  # type: ignore[union-attr]
                data = event.data  # type: ignore[union-attr]
                stream = streams.get(sid)
                if stream is None:
                    core.stop_reading(sid)  # nobody here will read it
                    continue
                on_data = stream._on_data
                if on_data is not None:
                    core.consume(sid, len(data))  # flushed by data_received once every event is handled
                    try:  # _deliver, inlined
                        on_data(data)
                    except ConnectionError as exc:  # the stream or connection is gone (e.g. a full send queue)
                        log.debug("receiver for %s on stream %d stopped: %s", stream.protocol, sid, exc)
                        stream.reset()
                    except Exception:
                        log.exception("receiver for %s failed on stream %d", stream.protocol, sid)
                        stream.reset()
                    if core.phase is CLOSED:
                        return
                else:
                    stream._buffer.append(data)
                    stream._wake()
            elif kind is _StreamWritable:
                stream = streams.get(event.stream_id)  # type: ignore[union-attr]
                if stream is not None:
                    stream._wake_writer()
            elif kind is StreamNegotiated:
                self._on_negotiated(event)  # type: ignore[arg-type]
            elif kind is yamux.StreamEnded:
                stream = streams.get(event.stream_id)  # type: ignore[union-attr]
                if stream is not None:
                    stream._eof = True
                    stream._wake()
                    if stream._on_data is not None:
                        stream._ended()
            elif kind is yamux.StreamReset or kind is StreamAborted:
                stream = streams.get(event.stream_id)  # type: ignore[union-attr]
                if stream is not None:
                    if kind is StreamAborted:
                        log.info("stream %d (%s) to %s reset: %s", stream.stream_id, stream.protocol,
                                 self.remote_peer_id, event.reason)  # type: ignore[union-attr]
                    stream._aborted()
            elif kind is NegotiationFailed:
                sid = event.stream_id  # type: ignore[union-attr]
                stream = streams.get(sid)
                if stream is not None:
                    stream._aborted()
                waiter = self._pending_accept.pop(sid, None)
                if waiter is not None and not waiter.done():
                    waiter.set_exception(ProtocolNegotiationError(event.reason))  # type: ignore[union-attr]
            elif kind is PingAnswered:
                ping_waiter = self._ping_waiters.pop(event.opaque, None)  # type: ignore[union-attr]
                if ping_waiter is not None and not ping_waiter.done():
                    ping_waiter.set_result(event.rtt)  # type: ignore[union-attr]
            elif kind is ConnectionOpened:
                self.remote_peer_id = event.remote_peer_id  # type: ignore[union-attr]
                self.established_at = time.time()
                self._opened = True
                if not self.ready.done():
                    self.ready.set_result(None)
            elif kind is ConnectionClosed:
                self._teardown()
                return

    def _on_negotiated(self, event: StreamNegotiated) -> None:
        sid = event.stream_id
        if event.inbound:
            stream = Stream(self, sid)
            stream.protocol = event.protocol
            self._streams[sid] = stream
            handler = self._lookup_handler(event.protocol)
            if handler is None:  # handler removed meanwhile
                stream.reset()
                return
            # Referenced until done: asyncio keeps only weak references to tasks, and a handler
            # waiting on something only it can reach would otherwise be collected mid-wait.
            task = self._loop.create_task(self._run_handler(handler, stream))
            self._handler_tasks.add(task)
            task.add_done_callback(self._handler_tasks.discard)
            return
        found = self._streams.get(sid)
        if found is None:  # the opener gave up meanwhile
            self._core.reset_stream(sid)
            return
        found.protocol = event.protocol
        waiter = self._pending_accept.pop(sid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _request_inbound_check(self) -> None:
        """Another connection needs room in the node budget: check ours soon (not from inside its call)."""
        if not self._inbound_check_scheduled:
            self._inbound_check_scheduled = True
            self._loop.call_soon(self._run_inbound_check)

    def _run_inbound_check(self) -> None:
        self._inbound_check_scheduled = False
        if not self.closed:
            self._handle_events(self._core.check_inbound(_monotonic()))
            self._flush()

    def _deliver(self, stream: Stream, on_data: DataCallback, data: bytes) -> None:
        try:
            on_data(data)
        except ConnectionError as exc:
            log.debug("receiver for %s on stream %d stopped: %s", stream.protocol, stream.stream_id, exc)
            stream.reset()
        except Exception:
            log.exception("receiver for %s failed on stream %d", stream.protocol, stream.stream_id)
            stream.reset()

    def _supports(self, protocol: str) -> bool:
        return self._lookup_handler(protocol) is not None

    async def _run_handler(self, handler: StreamHandler, stream: Stream) -> None:
        try:
            await handler(stream)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            stream.reset()
        except Exception:
            log.exception("handler for %s failed on stream %d", stream.protocol, stream.stream_id)
            stream.reset()
        else:
            await stream.close()
        finally:
            self._handler_done(stream)

    def _handler_done(self, stream: Stream) -> None:
        """The handler returned: unless it left a receiver in charge, nobody reads the stream again."""
        if stream._reset or stream._on_data is not None:
            return
        stream._buffer.clear()
        stream._eof = True
        self._streams.pop(stream.stream_id, None)
        if not self.closed:
            self._core.stop_reading(stream.stream_id)
            self._flush()

    def _maybe_forget(self, stream: Stream) -> None:
        if stream._reset or (stream._eof and stream._write_closed and not stream._buffer):
            self._streams.pop(stream.stream_id, None)

    # -- public API -------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._core.phase is CLOSED

    @property
    def close_reason(self) -> str | None:
        return self._core.close_reason

    @property
    def num_streams(self) -> int:
        return len(self._streams)

    @property
    def buffered_in(self) -> int:
        """Bytes received and not yet read by the application, all streams."""
        return self._core.buffered_in

    @property
    def buffered_out(self) -> int:
        """Bytes written by the application and not yet handed to the kernel."""
        transport = self._transport
        socket = transport.get_write_buffer_size() if transport is not None else 0
        return self._core.buffered_out + socket

    @property
    def streams_refused(self) -> int:
        """Inbound streams reset at once because the remote opened them too fast."""
        return self._core.streams_refused

    async def open_stream(self, protocols: Sequence[str] | str) -> Stream:
        """Open a stream and agree on the first of ``protocols`` the remote supports."""
        if isinstance(protocols, str):
            protocols = [protocols]
        stream_id = self._core.open_stream(protocols, _monotonic())
        stream = Stream(self, stream_id)
        self._streams[stream_id] = stream
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._pending_accept[stream_id] = waiter
        self._flush()
        if self._core.next_timer < self._timer_at:
            self._arm_timer()
        try:
            await waiter
        except asyncio.CancelledError:
            self._pending_accept.pop(stream_id, None)
            if stream.protocol is None:
                self._streams.pop(stream_id, None)
                self._core.reset_stream(stream_id)  # nobody will use it: leave nothing open
                self._flush()
            raise
        return stream

    async def ping(self, timeout: float = 10.0) -> float:
        """Round-trip time (seconds) of a yamux ping on this connection."""
        opaque = self._core.ping(_monotonic())
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._ping_waiters[opaque] = waiter
        self._flush()
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        finally:
            self._ping_waiters.pop(opaque, None)
            self._core.forget_ping(opaque)

    async def close(self, reason: str = "closed locally") -> None:
        self._core.close(reason)
        self._teardown()
        await self.closed_event.wait()

    def abort(self, reason: str) -> None:
        self._fail(reason)

    # -- internals --------------------------------------------------------------------
    def _consumed(self, stream_id: int, n: int) -> None:
        core = self._core
        core.consume(stream_id, n)
        # a window update is due only every half window: flushing here costs nothing otherwise
        out = core.data_to_send()
        if out:
            self._send(out)

    def _close_stream(self, stream: Stream) -> None:
        self._core.close_stream(stream.stream_id)
        self._flush()
        self._maybe_forget(stream)

    def _reset_stream(self, stream_id: int) -> None:
        self._core.reset_stream(stream_id)
        self._flush()

    def _flush(self) -> None:
        out = self._core.data_to_send()
        if out:
            self._send(out)

    def _send(self, out: bytes) -> None:
        """Hand ``out`` to the socket, unless it is gone or closing (a failed send closes it before
        ``connection_lost`` arrives: writing then is lost anyway, and asyncio warns each time)."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(out)

    def _arm_timer(self) -> None:
        """Arm the asyncio timer at the core's next deadline, if that is earlier than the armed one."""
        when = self._core.next_timer
        if when >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_later(max(0.0, when - _monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = _INF
        core = self._core
        try:
            events = core.handle_timer(_monotonic())
            if events:
                self._handle_events(events)
            self._flush()
        except Exception as exc:
            log.exception("unexpected error in the timers of connection %s", self.connection_id)
            self._fail(f"internal error: {exc.__class__.__name__}")
            return
        if core.phase is not CLOSED:
            self._arm_timer()

    def _fail(self, reason: str) -> None:
        self._core.abort(reason)
        self._teardown()

    def _teardown(self) -> None:
        """The core is closed: send its last bytes, hang up, fail everything that waits."""
        if self._torn_down:
            return
        self._torn_down = True
        out = self._core.data_to_send()
        if out:
            self._send(out)
        if self._transport is not None:
            self._transport.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = -_INF  # never re-armed
        if self._budget is not None:
            self._budget.leave(self)
        error = ConnectionClosedError(self.close_reason or "connection closed")
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # mark retrieved: a failed dial is reported by the dialer
        for waiter in self._pending_accept.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._pending_accept.clear()
        for ping_waiter in self._ping_waiters.values():
            if not ping_waiter.done():
                ping_waiter.set_exception(error)
        self._ping_waiters.clear()
        for stream in list(self._streams.values()):
            stream._wake()
            stream._wake_writer()
            if stream._on_data is not None:
                stream._ended()
        self.closed_event.set()
        if self._on_closed is not None and self._opened:
            try:
                self._on_closed(self)
            except Exception:
                log.exception("on_closed callback failed for connection %s", self.connection_id)

