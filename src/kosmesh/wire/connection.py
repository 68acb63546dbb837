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
from collections import deque
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
DataCallback = Callable[[bytes], None]
EndCallback = Callable[[], None]


class Stream:
    """One yamux stream with an agreed protocol: an async byte pipe with half-close.

    Data is consumed either by awaiting :meth:`read` (and friends) or, protocol-style, by
    :meth:`set_receiver` callbacks that run inside the connection's ``data_received`` with no
    task wake-up per chunk. Writing is the same in both modes: :meth:`write` queues (and
    raises :class:`WriteBufferFullError` once the queue is at its cap), :meth:`drain` waits.
    """

    __slots__ = (
        "_buffer",
        "_conn",
        "_core",
        "_eof",
        "_on_data",
        "_on_end",
        "_reset",
        "_waiter",
        "_writable_waiter",
        "_write_closed",
        "protocol",
        "stream_id",
    )

    def __init__(self, conn: Connection, stream_id: int) -> None:
        self._conn = conn
        self._core = conn._core
        self.stream_id = stream_id
        self.protocol: str | None = None
        self._buffer: deque[bytes] = deque()
        self._eof = False
        self._reset = False
        self._write_closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._writable_waiter: asyncio.Future[None] | None = None
        self._on_data: DataCallback | None = None
        self._on_end: EndCallback | None = None

    @property
    def connection(self) -> Connection:
        return self._conn

    @property
    def remote_peer_id(self) -> PeerId:
        return self._conn.remote_peer_id

    # -- reading -------------------------------------------------------------------
    def set_receiver(self, on_data: DataCallback | None, on_eof: EndCallback | None = None) -> None:
        """Deliver incoming data by callback instead of :meth:`read`.

        ``on_data(chunk)`` is called from the connection's ``data_received`` for every chunk,
        in order, with no task wake-up in between; the chunk counts as consumed (the yamux
        window is granted back) before the call, so the receiver must bound its own buffering.
        Data already buffered is delivered before this method returns.

        ``on_eof()`` is called once when no more data will arrive: the remote half-closed the
        stream, the stream was reset (by either side; see :attr:`is_reset`) or the connection
        closed. It may be called before this method returns if that has already happened.

        An exception raised by either callback resets this stream only (and is logged); the
        connection and its other streams are unaffected. The callbacks may write, close or
        reset the stream. ``set_receiver(None)`` returns the stream to :meth:`read` mode;
        :meth:`read` raises ``RuntimeError`` while a receiver is set.
        """
        if on_data is None:
            self._on_data = None
            self._on_end = None
            return
        if self.protocol is None:
            raise RuntimeError("the stream's protocol is not agreed yet")
        self._on_data = on_data
        self._on_end = on_eof
        conn = self._conn
        buffer = self._buffer
        while buffer and self._on_data is on_data:
            chunk = buffer.popleft()
            conn._consumed(self.stream_id, len(chunk))
            conn._deliver(self, on_data, chunk)
        if self._on_data is on_data and (self._eof or self._reset or conn.closed):
            self._ended()

    def _ended(self) -> None:
        """No more data will arrive: tell the receiver once, then forget it."""
        on_end = self._on_end
        self._on_data = None
        self._on_end = None
        if on_end is not None:
            try:
                on_end()
            except Exception:
                log.exception("end-of-stream callback failed on stream %d", self.stream_id)
                self.reset()

    async def read(self, max_bytes: int = 65536) -> bytes:
        """Up to ``max_bytes`` of available data; ``b""`` once the remote has closed."""
        if self._on_data is not None:
            raise RuntimeError("the stream has a receiver: data is delivered to its callback")
        while not self._buffer:
            if self._reset:
                raise StreamResetError(f"stream {self.stream_id} was reset")
            if self._eof:
                self._conn._maybe_forget(self)
                return b""
            if self._conn.closed:
                raise ConnectionClosedError("connection closed")
            await self._wait_readable()
        chunk = self._buffer.popleft()
        if len(chunk) > max_bytes:
            self._buffer.appendleft(chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        self._conn._consumed(self.stream_id, len(chunk))
        return chunk

    async def readexactly(self, n: int) -> bytes:
        parts: list[bytes] = []
        need = n
        buffer = self._buffer
        conn = self._conn
        core = self._core
        while need:
            # What read(need) does, inlined for the common cases (no coroutine per chunk); the
            # receiver, reset, EOF and closed cases still go through read() for its exact behaviour.
            if self._on_data is None:
                if buffer:
                    chunk = buffer.popleft()
                    if len(chunk) > need:
                        buffer.appendleft(chunk[need:])
                        chunk = chunk[:need]
                    conn._consumed(self.stream_id, len(chunk))
                    parts.append(chunk)
                    need -= len(chunk)
                    continue
                if not self._reset and not self._eof and core.phase is not CLOSED:
                    await self._wait_readable()
                    continue
            chunk = await self.read(need)
            if not chunk:
                raise asyncio.IncompleteReadError(b"".join(parts), n)
            parts.append(chunk)
            need -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read_all(self, limit: int) -> bytes:
        """Everything until the remote closes; raises ValueError past ``limit`` bytes."""
        parts: list[bytes] = []
        total = 0
        while True:
            chunk = await self.read()
            if not chunk:
                return b"".join(parts)
            total += len(chunk)
            if total > limit:
                self.reset()
                raise ValueError(f"stream sent more than {limit} bytes")
            parts.append(chunk)

    def _wait_readable(self) -> asyncio.Future[None]:
        waiter = self._conn._loop.create_future()
        self._waiter = waiter
        return waiter

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- writing -------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; it is framed as the peer's window allows. Await :meth:`drain`.

        Raises :class:`WriteBufferFullError`, and resets the stream, when this stream or the
        connection already queues as much as its limits allow (a peer that does not read).
        """
        if self._reset:
            raise StreamResetError(f"stream {self.stream_id} was reset")
        if self._write_closed:
            raise ConnectionError("stream is closed for writing")
        conn = self._conn
        core = self._core
        # Straight to the core and flushed inline: this is the per-message hot path. Flushed at
        # once, not corked per loop iteration: measured, corking makes two busy peers take turns
        # on whole batches instead of overlapping, halving pipelined KLP throughput.
        try:
            core.send_data(self.stream_id, data)
        except WriteBufferFullError:
            self._aborted()
            conn._flush()
            raise
        out = core.data_to_send()
        if out:
            transport = conn._transport
            if transport is not None:
                transport.write(out)
        if core.next_timer < conn._timer_at:
            conn._arm_timer()

    async def drain(self) -> None:
        """Wait until the queued data has been framed (the peer's window allowed it) and the
        socket's buffer is below its low-water mark."""
        conn = self._conn
        session = conn._session
        while True:
            if self._reset:
                raise StreamResetError(f"stream {self.stream_id} was reset")
            if conn.closed:  # what was written may never have left
                raise ConnectionClosedError(conn.close_reason or "connection closed")
            if not session.pending_send(self.stream_id) and not conn._write_paused:
                return
            waiter = conn._loop.create_future()
            self._writable_waiter = waiter
            await waiter

    async def write_all(self, data: bytes | bytearray | memoryview) -> None:
        self.write(data)
        await self.drain()

    def _wake_writer(self) -> None:
        waiter = self._writable_waiter
        if waiter is not None:
            self._writable_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def close(self) -> None:
        """Half-close: we send no more; the remote may still send until it closes."""
        if not self._write_closed and not self._reset and not self._conn.closed:
            self._write_closed = True
            self._conn._close_stream(self)

    def reset(self) -> None:
        """Abort the stream both ways; unread data is dropped."""
        if not self._reset:
            self._conn._reset_stream(self.stream_id)
            self._aborted()

    def _aborted(self) -> None:
        """The stream is reset (by us, the remote or the core): wake everyone, keep nothing."""
        self._reset = True
        self._buffer.clear()
        self._conn._streams.pop(self.stream_id, None)
        self._wake()
        self._wake_writer()
        if self._on_data is not None:
            self._ended()

    @property
    def is_reset(self) -> bool:
        return self._reset


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
                transport = self._transport
                if transport is not None:
                    transport.write(out)
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
            transport = self._transport
            if transport is not None:
                transport.write(out)

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
            transport = self._transport
            if transport is not None:
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
        transport = self._transport
        if transport is not None:
            if out:
                transport.write(out)
            transport.close()
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

