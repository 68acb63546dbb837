"""The asyncio adapter for one libp2p connection: TCP bytes in, streams out.

All protocol decisions are made by the sans-I/O cores (multistream, Noise, yamux); this
module only moves bytes between the socket and those cores, wakes waiting readers and
arms the timers the cores cannot (handshake deadline, silent-peer detection).

Upgrade order, as in the libp2p connections spec:
``multistream(/noise) -> Noise XX -> multistream(/yamux/1.0.0) -> yamux``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.wire import multistream, noise, yamux

log = logging.getLogger(__name__)

_DataReceived = yamux.DataReceived
_monotonic = time.monotonic

Direction = Literal["inbound", "outbound"]
StreamHandler = Callable[["Stream"], Awaitable[None]]
DataCallback = Callable[[bytes], None]
EndCallback = Callable[[], None]


class ConnectionClosedError(ConnectionError):
    """The connection is gone (closed locally, by the remote, or by a protocol error)."""


class StreamResetError(ConnectionError):
    """The stream was reset by either side."""


class ProtocolNegotiationError(ConnectionError):
    """The remote supports none of the protocols we proposed for a stream."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds every connection enforces, whatever the remote does."""

    handshake_timeout: float = 10.0
    stream_negotiation_timeout: float = 10.0
    idle_timeout: float = 60.0  # a remote silent this long (no bytes, not even pong) is dropped
    keepalive_interval: float = 15.0
    max_streams: int = 1024
    max_negotiating_streams: int = 256
    stream_receive_window: int = 1024 * 1024
    max_write_buffer: int = 4 * 1024 * 1024


class Stream:
    """One yamux stream with an agreed protocol: an async byte pipe with half-close.

    Data is consumed either by awaiting :meth:`read` (and friends) or, protocol-style, by
    :meth:`set_receiver` callbacks that run inside the connection's ``data_received`` with no
    task wake-up per chunk. Writing is the same in both modes.
    """

    __slots__ = (
        "_buffer",
        "_conn",
        "_eof",
        "_negotiator",
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
        self.stream_id = stream_id
        self.protocol: str | None = None
        self._buffer: deque[bytes] = deque()
        self._eof = False
        self._reset = False
        self._write_closed = False
        self._waiter: asyncio.Future[None] | None = None
        self._writable_waiter: asyncio.Future[None] | None = None
        self._negotiator: multistream.MultistreamDialer | multistream.MultistreamListener | None = None
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
                if not self._reset and not self._eof and conn._phase != "closed":
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
        """Queue ``data``; it is framed as the peer's window allows. Await :meth:`drain`."""
        if self._reset:
            raise StreamResetError(f"stream {self.stream_id} was reset")
        if self._write_closed:
            raise ConnectionError("stream is closed for writing")
        conn = self._conn
        if conn._phase != "open":
            raise ConnectionClosedError("connection closed")
        # Straight to the session and flushed inline: this is the per-message hot path. send_data copies
        # anything that is not bytes. Flushed at once, not corked per loop iteration: measured,
        # corking makes two busy peers take turns on whole batches instead of overlapping, halving
        # pipelined KLP throughput.
        session = conn._session
        session.send_data(self.stream_id, data)
        out = session.data_to_send()
        if out:
            conn._write_secured(out)

    async def drain(self) -> None:
        """Wait until the queued data has been framed (the peer's window allowed it)."""
        conn = self._conn
        while conn._session.pending_send(self.stream_id) > 0 or conn._write_paused:
            if self._reset:
                raise StreamResetError(f"stream {self.stream_id} was reset")
            if conn.closed:
                raise ConnectionClosedError("connection closed")
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
            self._conn._close_stream(self.stream_id)

    def reset(self) -> None:
        if not self._reset:
            self._reset = True
            self._conn._reset_stream(self.stream_id)
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
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._identity = identity
        self.direction: Direction = direction
        self.limits = limits
        self.connection_id = os.urandom(8).hex()
        self._expected = expected_peer_id
        self._lookup_handler = stream_handler
        self._on_closed = on_closed
        self._transport: asyncio.Transport | None = None
        self._phase: Literal["ms-security", "noise", "ms-muxer", "open", "closed"] = "ms-security"
        initiator = direction == "outbound"
        self._ms: multistream.MultistreamDialer | multistream.MultistreamListener
        if initiator:
            self._ms = multistream.MultistreamDialer([noise.PROTOCOL_ID])
        else:
            self._ms = multistream.MultistreamListener(lambda p: p == noise.PROTOCOL_ID)
        self._handshake = noise.NoiseHandshake(
            initiator=initiator, identity=identity, remote_peer_id=expected_peer_id
        )
        self._noise: noise.NoiseTransport | None = None
        self._session = yamux.YamuxSession(
            is_client=initiator,
            max_streams=limits.max_streams,
            receive_window=limits.stream_receive_window,
        )
        self._streams: dict[int, Stream] = {}
        self._negotiating = 0
        self._pending_accept: dict[int, asyncio.Future[None]] = {}
        self._negotiation_timers: dict[int, asyncio.TimerHandle] = {}
        self._write_paused = False
        self.ready: asyncio.Future[None] = self._loop.create_future()
        self.closed_event = asyncio.Event()
        self.remote_peer_id: PeerId = PeerId.from_public_key(identity.public_key)  # replaced after handshake
        self.remote_address: tuple[str, int] | None = None
        self.local_address: tuple[str, int] | None = None
        self.established_at = 0.0
        self.last_received = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._ping_waiters: dict[int, asyncio.Future[float]] = {}
        self._ping_sent: dict[int, float] = {}
        self._ping_counter = 0
        self.close_reason: str | None = None

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # any asyncio-compatible loop's stream transport (uvloop's are not asyncio.Transport subclasses)
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        self.remote_address = (peer[0], peer[1]) if peer else None
        self.local_address = (sock[0], sock[1]) if sock else None
        self._timer = self._loop.call_later(self.limits.handshake_timeout, self._on_handshake_timeout)
        self._write_raw(self._ms.initiate())

    def data_received(self, data: bytes) -> None:
        self.last_received = _monotonic()
        try:
            transport = self._noise
            if transport is None:
                self._advance_insecure(data)
            elif self._phase == "open":
                plain = transport.receive_data(data)
                session = self._session
                if plain:
                    self._handle_yamux(session.receive_data(plain))
                if self._phase == "open":  # _flush, inlined: most reads leave nothing to send
                    out = session.data_to_send()
                    if out:
                        self._write_secured(out)
            elif self._phase == "ms-muxer":
                self._advance_secured(transport.receive_data(data))
        except (noise.NoiseError, multistream.MultistreamError) as exc:
            self._fail(f"protocol error: {exc}")
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

    def resume_writing(self) -> None:
        self._write_paused = False
        for stream in list(self._streams.values()):
            stream._wake_writer()

    # -- handshake -------------------------------------------------------------------
    def _advance_insecure(self, data: bytes) -> None:
        """multistream(/noise) then the Noise handshake, both in the clear."""
        if self._phase == "ms-security":
            out = self._ms.receive_data(data)
            self._write_raw(out)
            if self._ms.selected is None:
                return
            data = self._ms.unconsumed()
            self._phase = "noise"
            self._write_raw(self._handshake.initiate())
            if not data:
                return
        if self._phase != "noise":
            return
        self._write_raw(self._handshake.receive_data(data))
        if not self._handshake.complete:
            return
        transport = self._handshake.take_transport()
        assert self._handshake.remote_peer_id is not None
        self.remote_peer_id = self._handshake.remote_peer_id
        self._noise = transport
        self._phase = "ms-muxer"
        if self.direction == "outbound":
            self._ms = multistream.MultistreamDialer([yamux.PROTOCOL_ID])
        else:
            self._ms = multistream.MultistreamListener(lambda p: p == yamux.PROTOCOL_ID)
        self._write_secured(self._ms.initiate())
        leftover = self._handshake.unconsumed()
        if leftover:
            self._advance_secured(transport.receive_data(leftover))

    def _advance_secured(self, plain: bytes) -> None:
        """multistream(/yamux/1.0.0) inside Noise; then the connection is open."""
        if not plain:
            return
        self._write_secured(self._ms.receive_data(plain))
        if self._ms.selected is None:
            return
        rest = self._ms.unconsumed()
        self._phase = "open"
        self._on_open()
        if rest:
            self._handle_yamux(self._session.receive_data(rest))
        self._flush()

    def _on_open(self) -> None:
        self.established_at = time.time()
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self.limits.keepalive_interval, self._on_keepalive)
        if not self.ready.done():
            self.ready.set_result(None)

    def _on_handshake_timeout(self) -> None:
        if self._phase != "open":
            self._fail("handshake timed out")

    def _on_keepalive(self) -> None:
        if self._phase != "open":
            return
        silent = time.monotonic() - self.last_received
        if silent > self.limits.idle_timeout:
            self._fail(f"remote silent for {silent:.0f}s")
            return
        self._ping_counter = (self._ping_counter + 1) & 0xFFFFFFFF
        self._session.ping(self._ping_counter)
        self._flush()
        self._timer = self._loop.call_later(self.limits.keepalive_interval, self._on_keepalive)

    # -- yamux events ----------------------------------------------------------------
    def _handle_yamux(self, events: list[yamux.Event]) -> None:
        streams = self._streams
        for event in events:
            kind = type(event)
            if kind is _DataReceived:
                sid = event.stream_id  # type: ignore[union-attr]
                stream = streams.get(sid)
                if stream is None:
                    continue
                on_data = stream._on_data
                if on_data is not None:
                    data = event.data  # type: ignore[union-attr]
                    # flushed by data_received once every event is handled
                    self._session.consume(sid, len(data))
                    try:  # _deliver, inlined
                        on_data(data)
                    except Exception:
                        log.exception("receiver for %s failed on stream %d", stream.protocol, sid)
                        stream.reset()
                    if self._phase == "closed":
                        return
                elif stream.protocol is None:
                    self._negotiate_data(stream, event.data)  # type: ignore[union-attr]
                else:
                    stream._buffer.append(event.data)  # type: ignore[union-attr]
                    stream._wake()
            elif kind is yamux.StreamOpened:
                self._on_inbound_stream(event.stream_id)  # type: ignore[union-attr]
            elif kind is yamux.StreamWritable:
                stream = streams.get(event.stream_id)  # type: ignore[union-attr]
                if stream is not None:
                    stream._wake_writer()
            elif kind is yamux.StreamEnded:
                stream = streams.get(event.stream_id)  # type: ignore[union-attr]
                if stream is not None:
                    stream._eof = True
                    stream._wake()
                    if stream._on_data is not None:
                        stream._ended()
                    if stream.protocol is None:
                        self._abort_negotiation(stream, "remote closed the stream during negotiation")
            elif kind is yamux.StreamReset:
                stream = streams.pop(event.stream_id, None)  # type: ignore[union-attr]
                if stream is not None:
                    stream._reset = True
                    stream._wake()
                    stream._wake_writer()
                    if stream._on_data is not None:
                        stream._ended()
                    if stream.protocol is None:
                        self._abort_negotiation(stream, "stream reset during negotiation")
            elif kind is yamux.PingAcknowledged:
                opaque = event.opaque  # type: ignore[union-attr]
                waiter = self._ping_waiters.pop(opaque, None)
                sent = self._ping_sent.pop(opaque, None)
                if waiter is not None and sent is not None and not waiter.done():
                    waiter.set_result(time.monotonic() - sent)
            elif kind is yamux.GoAwayReceived:
                self.close_reason = f"remote sent go-away {event.code}"  # type: ignore[union-attr]
            elif kind is yamux.ConnectionTerminated:
                self._flush()
                self._fail(f"yamux: {event.reason}")  # type: ignore[union-attr]
                return

    def _deliver(self, stream: Stream, on_data: DataCallback, data: bytes) -> None:
        try:
            on_data(data)
        except Exception:
            log.exception("receiver for %s failed on stream %d", stream.protocol, stream.stream_id)
            stream.reset()

    def _on_inbound_stream(self, stream_id: int) -> None:
        if self._negotiating >= self.limits.max_negotiating_streams:
            self._session.reset_stream(stream_id)
            return
        stream = Stream(self, stream_id)
        listener = multistream.MultistreamListener(self._supports)
        stream._negotiator = listener
        self._streams[stream_id] = stream
        self._negotiating += 1
        self._session.send_data(stream_id, listener.initiate())
        stream._negotiator = listener
        self._arm_negotiation_timeout(stream)

    def _supports(self, protocol: str) -> bool:
        return self._lookup_handler(protocol) is not None

    def _arm_negotiation_timeout(self, stream: Stream, reason: str = "protocol negotiation timed out") -> None:
        def expire() -> None:
            self._negotiation_timers.pop(stream.stream_id, None)
            if stream.protocol is None and not stream._reset:
                self._abort_negotiation(stream, reason)

        # cancelled once the protocol is agreed, so thousands of streams/s leave no timers behind
        self._negotiation_timers[stream.stream_id] = self._loop.call_later(
            self.limits.stream_negotiation_timeout, expire
        )

    def _disarm_negotiation_timeout(self, stream_id: int) -> None:
        timer = self._negotiation_timers.pop(stream_id, None)
        if timer is not None:
            timer.cancel()

    def _negotiate_data(self, stream: Stream, data: bytes) -> None:
        negotiator = stream._negotiator
        assert negotiator is not None
        self._consumed(stream.stream_id, len(data))
        try:
            out = negotiator.receive_data(data)
        except multistream.MultistreamError as exc:
            self._abort_negotiation(stream, str(exc))
            return
        if out:
            self._session.send_data(stream.stream_id, out)
        if negotiator.selected is None:
            return
        stream.protocol = negotiator.selected
        stream._negotiator = None
        self._negotiating -= 1
        self._disarm_negotiation_timeout(stream.stream_id)
        rest = negotiator.unconsumed()
        if rest:
            stream._buffer.append(rest)
        if isinstance(negotiator, multistream.MultistreamListener):
            handler = self._lookup_handler(stream.protocol)
            if handler is None:  # handler removed meanwhile
                stream.reset()
                return
            self._loop.create_task(self._run_handler(handler, stream))
        else:
            waiter = self._pending_accept.pop(stream.stream_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        stream._wake()

    def _abort_negotiation(self, stream: Stream, reason: str) -> None:
        if stream._negotiator is None:
            return
        stream._negotiator = None
        self._negotiating -= 1
        self._disarm_negotiation_timeout(stream.stream_id)
        waiter = self._pending_accept.pop(stream.stream_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(ProtocolNegotiationError(reason))
        if not stream._reset:
            stream.reset()
        self._flush()

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
            self._maybe_forget(stream)

    def _maybe_forget(self, stream: Stream) -> None:
        if stream._reset or (stream._eof and stream._write_closed):
            self._streams.pop(stream.stream_id, None)

    # -- public API -------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._phase == "closed"

    @property
    def num_streams(self) -> int:
        return len(self._streams)

    async def open_stream(self, protocols: Sequence[str] | str) -> Stream:
        """Open a stream and agree on the first of ``protocols`` the remote supports."""
        if isinstance(protocols, str):
            protocols = [protocols]
        if self._phase != "open":
            raise ConnectionClosedError("connection is not open")
        try:
            stream_id = self._session.open_stream()
        except yamux.YamuxError as exc:
            raise ConnectionClosedError(str(exc)) from None
        stream = Stream(self, stream_id)
        dialer = multistream.MultistreamDialer(list(protocols))
        stream._negotiator = dialer
        self._streams[stream_id] = stream
        self._negotiating += 1
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._pending_accept[stream_id] = waiter
        self._session.send_data(stream_id, dialer.initiate())
        self._flush()
        # A plain timer rather than asyncio.timeout (cheaper per stream): on expiry it aborts the
        # negotiation, which fails the waiter with this reason; agreement or reset disarms it.
        self._arm_negotiation_timeout(stream, f"no answer negotiating {protocols[0]}")
        try:
            await waiter
        except asyncio.CancelledError:
            self._abort_negotiation(stream, "cancelled")  # nobody will use it: leave nothing open
            raise
        return stream

    async def ping(self, timeout: float = 10.0) -> float:
        """Round-trip time (seconds) of a yamux ping on this connection."""
        if self._phase != "open":
            raise ConnectionClosedError("connection is not open")
        self._ping_counter = (self._ping_counter + 1) & 0xFFFFFFFF
        opaque = self._ping_counter
        waiter: asyncio.Future[float] = self._loop.create_future()
        self._ping_waiters[opaque] = waiter
        self._ping_sent[opaque] = time.monotonic()
        self._session.ping(opaque)
        self._flush()
        async with asyncio.timeout(timeout):
            return await waiter

    async def close(self, reason: str = "closed locally") -> None:
        if self._phase == "open":
            self._session.go_away(0)
            self._flush()
        self._fail(reason)
        await self.closed_event.wait()

    def abort(self, reason: str) -> None:
        self._fail(reason)

    # -- internals --------------------------------------------------------------------
    def _consumed(self, stream_id: int, n: int) -> None:
        if self._phase == "open":
            session = self._session
            session.consume(stream_id, n)
            # a window update is due only every half window: flushing here costs nothing otherwise
            out = session.data_to_send()
            if out:
                self._write_secured(out)

    def _close_stream(self, stream_id: int) -> None:
        self._session.close_stream(stream_id)
        self._flush()
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._maybe_forget(stream)

    def _reset_stream(self, stream_id: int) -> None:
        if self._phase == "open":
            self._session.reset_stream(stream_id)
            self._flush()
        self._streams.pop(stream_id, None)

    def _flush(self) -> None:
        if self._phase != "open" and self._phase != "ms-muxer":
            return
        out = self._session.data_to_send()
        if out:
            self._write_secured(out)

    def _write_raw(self, data: bytes) -> None:
        if self._transport is not None and data:
            self._transport.write(data)

    def _write_secured(self, data: bytes) -> None:
        transport = self._transport
        secure = self._noise
        if secure is not None and transport is not None and data:
            transport.write(secure.encrypt(data))

    def _fail(self, reason: str) -> None:
        if self._phase == "closed":
            return
        was_open = self._phase == "open"
        self._phase = "closed"
        if self.close_reason is None:
            self.close_reason = reason
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
        error = ConnectionClosedError(self.close_reason)
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # mark retrieved: a failed dial is reported by the dialer
        for waiter in self._pending_accept.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._pending_accept.clear()
        for timer in self._negotiation_timers.values():
            timer.cancel()
        self._negotiation_timers.clear()
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
        if self._on_closed is not None and was_open:
            with contextlib.suppress(Exception):
                self._on_closed(self)
