"""One agreed yamux stream as an async byte pipe with half-close: the application's side of it.

Reading is by awaiting :meth:`Stream.read` (and friends) or by :meth:`Stream.set_receiver`
callbacks; writing queues into the connection core, whose caps bound what a peer that does
not read can make us hold. The owning :class:`~kosmesh.wire.connection.Connection` feeds the
stream from the core's events.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from kosmesh.identity import PeerId
from kosmesh.wire.connection_core import CLOSED
from kosmesh.wire.connection_events import ConnectionClosedError, StreamResetError, WriteBufferFullError

if TYPE_CHECKING:
    from kosmesh.wire.connection import Connection

log = logging.getLogger(__name__)

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
            conn._send(out)
        if core.next_timer < conn._timer_at:
            conn._arm_timer()

    @property
    def buffered_out(self) -> int:
        """Bytes written to this stream and not yet framed (waiting for the peer's window)."""
        return self._conn._session.pending_send(self.stream_id)

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
