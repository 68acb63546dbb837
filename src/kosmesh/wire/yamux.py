"""Yamux stream multiplexer (``/yamux/1.0.0``) as a sans-I/O state machine.

Bytes go in through :meth:`YamuxSession.receive_data` and come back as events; frames to
write are collected with :meth:`YamuxSession.data_to_send`. There are no sockets, clocks or
tasks here, so the asyncio adapter owns all I/O and tests can drive two sessions in memory.

The remote is treated as hostile: a data frame may never be longer than the window we
granted, so unparsed input stays below one window plus a header, and every protocol
violation ends the session with a ``ConnectionTerminated`` event and a GoAway(protocol
error) frame instead of an exception. Exceptions (:class:`YamuxError`) are reserved for
misuse of the local API.

This sits on the hot path (every message goes through it), hence the precompiled header
struct, the inlined fast path for plain data frames and the lazily joined output chunks.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Final, TypeAlias

PROTOCOL_ID: Final = "/yamux/1.0.0"
INITIAL_WINDOW: Final = 256 * 1024
HEADER_SIZE: Final = 12
MAX_U32: Final = 0xFFFFFFFF
MAX_U64: Final = 0xFFFFFFFFFFFFFFFF  # "no cap" for the send queue limits

TYPE_DATA: Final = 0
TYPE_WINDOW_UPDATE: Final = 1
TYPE_PING: Final = 2
TYPE_GO_AWAY: Final = 3

FLAG_SYN: Final = 0x1
FLAG_ACK: Final = 0x2
FLAG_FIN: Final = 0x4
FLAG_RST: Final = 0x8

GO_AWAY_NORMAL: Final = 0
GO_AWAY_PROTOCOL_ERROR: Final = 1
GO_AWAY_INTERNAL_ERROR: Final = 2

# The public codec spells out version and type; internally they are read as one u16 because
# version is always 0, which makes "version 0 and type Data" a single comparison.
_HEADER: Final = struct.Struct(">BBHII")
_HEADER_VT: Final = struct.Struct(">HHII")
_pack = _HEADER_VT.pack
_unpack_from = _HEADER_VT.unpack_from

_GO_AWAY_PROTOCOL_FRAME: Final = _pack(TYPE_GO_AWAY, 0, 0, GO_AWAY_PROTOCOL_ERROR)


def encode_header(frame_type: int, flags: int, stream_id: int, length: int, version: int = 0) -> bytes:
    """Encode a 12-byte frame header (exposed for tests and diagnostics)."""
    return _HEADER.pack(version, frame_type, flags, stream_id, length)


def decode_header(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int, int, int, int]:
    """Decode ``(version, type, flags, stream_id, length)`` from 12 bytes at ``offset``."""
    version, frame_type, flags, stream_id, length = _HEADER.unpack_from(data, offset)
    return version, frame_type, flags, stream_id, length


class YamuxError(Exception):
    """Local API misuse (e.g. sending on a reset stream); never raised for remote input."""


class SendQueueFull(YamuxError):
    """``send_data`` refused: the stream's or the session's queue of unsent bytes is at its cap."""


class SlottedEvent:
    """Base of the events: immutable by convention, compared and hashed by type and fields.

    Plain ``__slots__`` classes with an ordinary ``__init__`` rather than frozen dataclasses:
    one is built per received frame, and a frozen dataclass costs about 2.5x as much to create
    (its ``__init__`` goes through ``object.__setattr__``). Equality, hashing, ``repr`` and
    ``match`` support behave as they did for the dataclasses.
    """

    __slots__ = ()
    __match_args__: tuple[str, ...] = ()

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self.__match_args__)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, SlottedEvent)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__match_args__)
        return f"{self.__class__.__qualname__}({args})"


class StreamOpened(SlottedEvent):
    """The remote opened a stream (SYN); the session has already acknowledged it."""

    __slots__ = ("stream_id",)
    __match_args__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id: Final = stream_id


class StreamAccepted(SlottedEvent):
    """The remote acknowledged a stream we opened."""

    __slots__ = ("stream_id",)
    __match_args__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id: Final = stream_id


class DataReceived(SlottedEvent):
    """Payload of one data frame; call :meth:`YamuxSession.consume` once it is used."""

    __slots__ = ("data", "stream_id")
    __match_args__ = ("stream_id", "data")

    def __init__(self, stream_id: int, data: bytes) -> None:
        self.stream_id: Final = stream_id
        self.data: Final = data


class StreamEnded(SlottedEvent):
    """The remote half-closed the stream (FIN): no more data will arrive on it."""

    __slots__ = ("stream_id",)
    __match_args__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id: Final = stream_id


class StreamReset(SlottedEvent):
    """The remote reset the stream (RST); its state is already freed."""

    __slots__ = ("stream_id",)
    __match_args__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id: Final = stream_id


class StreamWritable(SlottedEvent):
    """The send window reopened and everything queued by ``send_data`` has been framed."""

    __slots__ = ("stream_id",)
    __match_args__ = ("stream_id",)

    def __init__(self, stream_id: int) -> None:
        self.stream_id: Final = stream_id


class PingAcknowledged(SlottedEvent):
    """The remote answered one of our pings."""

    __slots__ = ("opaque",)
    __match_args__ = ("opaque",)

    def __init__(self, opaque: int) -> None:
        self.opaque: Final = opaque


class GoAwayReceived(SlottedEvent):
    """The remote sent GoAway with this code."""

    __slots__ = ("code",)
    __match_args__ = ("code",)

    def __init__(self, code: int) -> None:
        self.code: Final = code


class ConnectionTerminated(SlottedEvent):
    """The session is dead (remote protocol violation or remote go-away)."""

    __slots__ = ("code", "reason")
    __match_args__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code: Final = code
        self.reason: Final = reason


Event: TypeAlias = (
    StreamOpened
    | StreamAccepted
    | DataReceived
    | StreamEnded
    | StreamReset
    | StreamWritable
    | PingAcknowledged
    | GoAwayReceived
    | ConnectionTerminated
)

_Chunk: TypeAlias = bytes | memoryview


class _Stream:
    """Per-stream flow-control and close state; plain slots so the hot path stays cheap."""

    __slots__ = (
        "acked",
        "consumed",
        "fin_queued",
        "flushed",
        "hold_credit",
        "local_closed",
        "pending",
        "pending_len",
        "recv_window",
        "remote_closed",
        "send_window",
        "stream_id",
    )

    def __init__(self, stream_id: int, recv_window: int, acked: bool) -> None:
        self.stream_id = stream_id
        self.send_window = INITIAL_WINDOW  # what the peer still lets us send
        self.recv_window = recv_window  # what we still let the peer send
        self.consumed = 0  # consumed by the application but not yet granted back
        self.pending: deque[memoryview] = deque()  # queued by send_data, not yet framed
        self.pending_len = 0
        self.flushed = 0  # bytes framed out of ``pending`` so far: progress of a queued stream
        self.hold_credit = False  # consumed bytes are not granted back while set
        self.acked = acked
        self.fin_queued = False  # close_stream called: FIN goes out after the queue drains
        self.local_closed = False  # FIN sent
        self.remote_closed = False  # FIN received


class YamuxSession:
    """One side of a yamux connection (client = dialer, odd stream ids)."""

    __slots__ = (
        "_corked",
        "_frame_limit",
        "_inbuf",
        "_is_client",
        "_last_remote_id",
        "_local_go_away",
        "_max_frame",
        "_max_pending_total",
        "_max_stream_pending",
        "_max_streams",
        "_next_id",
        "_out",
        "_pending_total",
        "_receive_window",
        "_remote_parity",
        "_streams",
        "_terminated",
        "_unread",
        "_update_threshold",
        "_window_delta",
    )

    def __init__(
        self,
        *,
        is_client: bool,
        max_streams: int = 1024,
        receive_window: int = INITIAL_WINDOW,
        max_frame_data: int = 64 * 1024,
        max_stream_pending: int = MAX_U64,
        max_pending_total: int = MAX_U64,
    ) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        # Both sides start from 256 KiB and windows can only grow, so smaller is impossible.
        if not INITIAL_WINDOW <= receive_window <= MAX_U32:
            raise ValueError("receive_window must be between 256 KiB and 2**32 - 1")
        if max_frame_data < 1:
            raise ValueError("max_frame_data must be positive")
        if max_stream_pending < 0 or max_pending_total < 0:
            raise ValueError("send queue caps cannot be negative")
        self._is_client = is_client
        self._next_id = 1 if is_client else 2
        self._remote_parity = 0 if is_client else 1
        # Peers allocate ids in increasing order; refusing reuse means a stale id can never
        # alias a new stream (and the application's late consume() on it).
        self._last_remote_id = 0
        self._max_streams = max_streams
        self._receive_window = receive_window
        self._window_delta = receive_window - INITIAL_WINDOW
        self._update_threshold = receive_window // 2
        self._max_frame = max_frame_data
        # The fast path frames a write at once only if it is at most this long; 0 while corked,
        # so the check costs nothing extra.
        self._frame_limit = max_frame_data
        self._corked = False
        self._max_stream_pending = max_stream_pending
        self._max_pending_total = max_pending_total
        self._pending_total = 0  # bytes queued by send_data on all streams, not yet framed
        self._unread = 0  # bytes delivered in DataReceived events and not yet consumed
        self._streams: dict[int, _Stream] = {}
        self._inbuf = bytearray()
        self._out: list[_Chunk] = []
        self._terminated = False
        self._local_go_away = False

    # ------------------------------------------------------------------ properties

    @property
    def is_terminated(self) -> bool:
        """True once the session is dead; nothing more is parsed or may be sent."""
        return self._terminated

    @property
    def buffered_input(self) -> int:
        """Bytes of an incomplete frame held back; at most one receive window plus a header."""
        return len(self._inbuf)

    def stream_ids(self) -> list[int]:
        """Ids of streams that still hold state (not reset, not closed both ways)."""
        return list(self._streams)

    def has_stream(self, stream_id: int) -> bool:
        """True while the stream holds state here (not reset, not closed both ways and read)."""
        return stream_id in self._streams

    def pending_send(self, stream_id: int) -> int:
        """Bytes accepted by ``send_data`` but still waiting for send window (backpressure)."""
        st = self._streams.get(stream_id)
        return 0 if st is None else st.pending_len

    @property
    def pending_total(self) -> int:
        """Bytes queued by ``send_data`` on every stream and not framed yet."""
        return self._pending_total

    @property
    def unread(self) -> int:
        """Bytes handed out in :class:`DataReceived` events and not yet consumed, all streams."""
        return self._unread

    def stream_unread(self, stream_id: int) -> int:
        """Bytes of this stream handed out and not yet consumed (0 for an unknown stream)."""
        st = self._streams.get(stream_id)
        return 0 if st is None else self._receive_window - st.recv_window - st.consumed

    def unread_by_stream(self) -> list[tuple[int, int]]:
        """``(unread bytes, stream id)`` for every stream holding unread data."""
        window = self._receive_window
        out = []
        for sid, st in self._streams.items():
            held = window - st.recv_window - st.consumed
            if held:
                out.append((held, sid))
        return out

    def send_progress(self) -> list[tuple[int, int, int]]:
        """``(stream id, queued bytes, bytes framed from the queue so far)`` for streams with a queue."""
        return [(sid, st.pending_len, st.flushed) for sid, st in self._streams.items() if st.pending_len]

    @property
    def corked(self) -> bool:
        return self._corked

    # ------------------------------------------------------------------ output

    def data_to_send(self) -> bytes:
        """Return and clear every frame queued for the wire."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return b"".join(out)

    # ------------------------------------------------------------------ local API

    def open_stream(self) -> int:
        """Open an outbound stream: the SYN goes out now, data may follow before the ACK."""
        if self._terminated:
            raise YamuxError("session is terminated")
        if self._local_go_away:
            raise YamuxError("session is going away")
        if len(self._streams) >= self._max_streams:
            raise YamuxError("too many streams")
        sid = self._next_id
        if sid > MAX_U32:
            raise YamuxError("stream ids exhausted")
        self._next_id = sid + 2
        self._streams[sid] = _Stream(sid, self._receive_window, False)
        self._out.append(_pack(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, self._window_delta))
        return sid

    def send_data(self, stream_id: int, data: bytes | bytearray | memoryview, capped: bool = True) -> None:
        """Frame as much as the peer's window allows now and queue the rest in order.

        Raises :class:`SendQueueFull` when the stream's or the session's queue is already at its
        cap, unless ``capped`` is false (small control messages such as protocol negotiation).
        """
        st = self._streams.get(stream_id)
        if st is None or self._terminated:
            raise YamuxError(f"stream {stream_id} is not open")
        if st.fin_queued:
            raise YamuxError(f"stream {stream_id} is closed for writing")
        if type(data) is not bytes:
            # Copy once so a caller reusing its buffer cannot change bytes we have queued.
            data = bytes(data)
        n = len(data)
        if not n:
            return
        if not st.pending_len and n <= st.send_window and n <= self._frame_limit:
            self._out += (_pack(TYPE_DATA, 0, stream_id, n), data)
            st.send_window -= n
            return
        # A write is refused once a queue is already at its cap, not when this write would cross
        # it: so one message of any size still goes through, and a queue never holds more than
        # its cap plus one write.
        if capped:
            if st.pending_len >= self._max_stream_pending:
                raise SendQueueFull(f"stream {stream_id} already holds {st.pending_len} unsent bytes")
            if self._pending_total >= self._max_pending_total:
                raise SendQueueFull(f"the session already holds {self._pending_total} unsent bytes")
        st.pending.append(memoryview(data))
        st.pending_len += n
        self._pending_total += n
        self._flush(st)  # cannot send FIN: fin_queued is False here, so the stream stays live

    def close_stream(self, stream_id: int) -> None:
        """Half-close: FIN follows any queued data. Unknown or already closed is a no-op."""
        st = self._streams.get(stream_id)
        if st is None or st.fin_queued or self._terminated:
            return
        st.fin_queued = True
        if not st.pending_len:
            self._out.append(_pack(TYPE_WINDOW_UPDATE, FLAG_FIN, stream_id, 0))
            st.local_closed = True
            if st.remote_closed:
                self._forget_if_done(st)

    def reset_stream(self, stream_id: int) -> None:
        """Abort the stream: RST now, queued and unread data dropped, state freed."""
        st = self._streams.get(stream_id)
        if st is None or self._terminated:
            return
        self._forget(st)
        self._out.append(_pack(TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, 0))

    def consume(self, stream_id: int, n: int) -> None:
        """Credit ``n`` received bytes back to the peer, batched to half a window per update."""
        if n < 0:
            raise YamuxError("cannot consume a negative amount")
        st = self._streams.get(stream_id)
        if st is None:
            return  # stream already gone: nothing left to grant
        c = st.consumed + n
        if c + st.recv_window > self._receive_window:
            raise YamuxError("consumed more bytes than were received")
        self._unread -= n
        if c >= self._update_threshold and not st.remote_closed and not self._terminated and not st.hold_credit:
            self._out.append(_pack(TYPE_WINDOW_UPDATE, 0, stream_id, c))
            st.recv_window += c
            c = 0
        st.consumed = c
        if st.remote_closed and st.local_closed:  # closed both ways: it goes once read to the end
            self._forget_if_done(st)

    def hold_credit(self, stream_id: int, hold: bool) -> None:
        """Stop (or resume) granting consumed bytes back to the peer on this stream.

        While held, the peer can send only what the window it already has allows; on release
        the credit saved up is granted at once if it reached the usual batch size.
        """
        st = self._streams.get(stream_id)
        if st is None or st.hold_credit is hold:
            return
        st.hold_credit = hold
        c = st.consumed
        if not hold and c >= self._update_threshold and not st.remote_closed and not self._terminated:
            self._out.append(_pack(TYPE_WINDOW_UPDATE, 0, stream_id, c))
            st.recv_window += c
            st.consumed = 0

    def cork(self) -> None:
        """Frame no more data (control frames still go out): the transport below is full.

        Writes made meanwhile wait in the streams' queues, where the send caps apply, instead
        of piling up in a socket buffer nobody bounds.
        """
        self._corked = True
        self._frame_limit = 0

    def uncork(self) -> list[Event]:
        """Resume framing; returns :class:`StreamWritable` for every queue that drained."""
        self._corked = False
        self._frame_limit = self._max_frame
        events: list[Event] = []
        if self._pending_total and not self._terminated:
            for st in list(self._streams.values()):
                if st.pending_len and st.send_window > 0:
                    self._flush(st)
                    if not st.pending_len:
                        events.append(StreamWritable(st.stream_id))
                    if st.local_closed and st.remote_closed:
                        self._forget_if_done(st)
        return events

    def ping(self, opaque: int) -> None:
        """Send a ping; the answer arrives as :class:`PingAcknowledged` with the same value."""
        if not 0 <= opaque <= MAX_U32:
            raise YamuxError("ping opaque value must fit in 32 bits")
        if self._terminated:
            raise YamuxError("session is terminated")
        self._out.append(_pack(TYPE_PING, FLAG_SYN, 0, opaque))

    def go_away(self, code: int = GO_AWAY_NORMAL) -> None:
        """Tell the peer we open and accept no more streams.

        Code 0 lets existing streams finish; an error code also ends the session here.
        """
        if not 0 <= code <= MAX_U32:
            raise YamuxError("go-away code must fit in 32 bits")
        if self._terminated:
            return
        if not self._local_go_away:
            self._local_go_away = True
            self._out.append(_pack(TYPE_GO_AWAY, 0, 0, code))
        if code != GO_AWAY_NORMAL:
            self._terminate()

    def terminate(self) -> None:
        """The connection below is gone: drop every stream's state (queues included), send nothing."""
        if not self._terminated:
            self._out = []
            self._terminate()

    # ------------------------------------------------------------------ input

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Parse every complete frame in ``data`` (plus buffered input) and return events."""
        if self._terminated:
            return []
        inbuf = self._inbuf
        buf: bytes | bytearray | memoryview
        if inbuf:
            inbuf += data
            buf = inbuf
        else:
            buf = data
        total = len(buf)
        if total < HEADER_SIZE:
            if buf is not inbuf:
                inbuf += data
            return []

        events: list[Event] = []
        streams = self._streams
        received = 0  # payload handed out in DataReceived, added to the unread total once
        # Slicing bytes copies once; a bytearray (buffered input) is sliced through a view so it
        # is copied only once as well, and the view is released before the buffer is trimmed.
        mv: bytes | memoryview = buf if type(buf) is bytes else memoryview(buf)
        pos = 0
        while total - pos >= HEADER_SIZE:
            vt, flags, sid, length = _unpack_from(buf, pos)
            if not vt and not flags:
                # Fast path: a plain data frame on a live stream.
                st = streams.get(sid)
                if st is not None:
                    if length > st.recv_window:
                        self._fail(events, "data exceeds the receive window")
                        break
                    end = pos + HEADER_SIZE + length
                    if end > total:
                        break
                    if length and not st.remote_closed:  # data after FIN is ignored, window too
                        st.recv_window -= length
                        events.append(DataReceived(sid, bytes(mv[pos + HEADER_SIZE : end])))
                        received += length
                    pos = end
                    continue
            if vt > TYPE_GO_AWAY:
                self._fail(events, "unsupported version" if vt > 0xFF else "unknown frame type")
                break
            if vt == TYPE_DATA:
                # Bound the frame before waiting for its payload so a header cannot make us buffer
                # more than one window.
                if sid == 0:
                    self._fail(events, "data frame on the session stream")
                    break
                if length > self._receive_window:
                    self._fail(events, "data frame larger than the receive window")
                    break
                end = pos + HEADER_SIZE + length
                if end > total:
                    break
                self._on_stream_frame(vt, flags, sid, length, mv, pos + HEADER_SIZE, events)
            elif vt == TYPE_WINDOW_UPDATE:
                end = pos + HEADER_SIZE
                self._on_stream_frame(vt, flags, sid, length, mv, end, events)
            elif vt == TYPE_PING:
                end = pos + HEADER_SIZE
                if flags & FLAG_SYN:
                    self._out.append(_pack(TYPE_PING, FLAG_ACK, 0, length))
                elif flags & FLAG_ACK:
                    events.append(PingAcknowledged(length))
            else:  # go away
                events.append(GoAwayReceived(length))
                events.append(ConnectionTerminated(length, "remote sent go-away"))
                self._terminate()
                break
            pos = end
            if self._terminated:
                break
        if type(mv) is memoryview:
            mv.release()

        if not self._terminated:
            self._unread += received
            if buf is inbuf:
                if pos:
                    del inbuf[:pos]
            elif pos < total:
                inbuf += data[pos:]
        return events

    def _on_stream_frame(
        self,
        vt: int,
        flags: int,
        sid: int,
        length: int,
        mv: bytes | memoryview,
        start: int,
        events: list[Event],
    ) -> None:
        """Apply a Data or WindowUpdate frame with flags, or for a stream not on the fast path."""
        streams = self._streams
        st = streams.get(sid)
        if flags & FLAG_SYN:
            if sid == 0 or sid & 1 != self._remote_parity:
                self._fail(events, "SYN with a stream id of the wrong parity")
                return
            if st is not None:
                self._fail(events, "SYN for a stream that is already open")
                return
            if sid <= self._last_remote_id:
                self._fail(events, "SYN reuses an old stream id")
                return
            self._last_remote_id = sid
            if flags & FLAG_RST:
                return  # opened and aborted in one frame: nothing to track
            if self._local_go_away or len(streams) >= self._max_streams:
                self._out.append(_pack(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0))
                return
            st = _Stream(sid, self._receive_window, True)
            streams[sid] = st
            self._out.append(_pack(TYPE_WINDOW_UPDATE, FLAG_ACK, sid, self._window_delta))
            events.append(StreamOpened(sid))
        elif st is None:
            return  # unknown, reset or closed stream: late frames are harmless, drop them
        if flags & FLAG_ACK and not st.acked:
            st.acked = True
            events.append(StreamAccepted(sid))
        if vt == TYPE_DATA:
            if length > st.recv_window:
                self._fail(events, "data exceeds the receive window")
                return
            if length and not st.remote_closed:
                st.recv_window -= length
                self._unread += length
                events.append(DataReceived(sid, bytes(mv[start : start + length])))
        elif length:
            window = st.send_window + length
            if window > MAX_U32:
                self._fail(events, "send window overflow")
                return
            st.send_window = window
            if st.pending_len:
                self._flush(st)
                if not st.pending_len:
                    events.append(StreamWritable(sid))
        if flags & FLAG_RST:
            self._forget(st)
            events.append(StreamReset(sid))
            return
        if flags & FLAG_FIN and not st.remote_closed:
            st.remote_closed = True
            events.append(StreamEnded(sid))
        if st.remote_closed and st.local_closed:
            self._forget_if_done(st)

    # ------------------------------------------------------------------ internals

    def _forget(self, st: _Stream) -> None:
        """Drop a stream's state, and its queued and unread bytes from the session's totals."""
        if self._streams.pop(st.stream_id, None) is not None:
            self._pending_total -= st.pending_len
            self._unread -= self._receive_window - st.recv_window - st.consumed

    def _forget_if_done(self, st: _Stream) -> None:
        """A stream closed both ways goes once its data is read (consume() still needs it before)."""
        if st.recv_window + st.consumed == self._receive_window:
            self._forget(st)

    def _flush(self, st: _Stream) -> None:
        """Frame queued data up to the send window; FIN rides on the frame that empties the queue."""
        if self._corked:
            return
        queue = st.pending
        window = st.send_window
        out = self._out
        max_frame = self._max_frame
        sid = st.stream_id
        while queue and window > 0:
            n = min(window, max_frame, st.pending_len)
            header_at = len(out)
            out.append(b"")  # placeholder: flags are known only once the queue is drained
            take = n
            while take:
                head = queue[0]
                size = len(head)
                if size <= take:
                    queue.popleft()
                    out.append(head)
                    take -= size
                else:
                    out.append(head[:take])
                    queue[0] = head[take:]
                    take = 0
            st.pending_len -= n
            st.flushed += n
            self._pending_total -= n
            window -= n
            flags = 0
            if not st.pending_len and st.fin_queued:
                flags = FLAG_FIN
                st.local_closed = True
            out[header_at] = _pack(TYPE_DATA, flags, sid, n)
        st.send_window = window

    def _fail(self, events: list[Event], reason: str) -> None:
        """Remote protocol violation: queue GoAway(protocol error) and end the session."""
        self._out.append(_GO_AWAY_PROTOCOL_FRAME)
        events.append(ConnectionTerminated(GO_AWAY_PROTOCOL_ERROR, reason))
        self._terminate()

    def _terminate(self) -> None:
        """Drop all stream state; the session accepts no more input or sends."""
        self._terminated = True
        self._local_go_away = True
        self._streams.clear()
        self._pending_total = 0
        self._unread = 0
        self._inbuf = bytearray()  # a fresh buffer: the old one may still be exported to a memoryview
