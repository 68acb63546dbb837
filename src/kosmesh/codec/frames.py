"""Uvarint-length-prefixed frames (``uvarint(len) || body``), read sans-I/O from hostile streams.

multistream-select, identify and KLP all frame their messages this way; this is the one reader they
share. Feed it chunks as they arrive; it hands back whole frames. It never buffers more than one
frame: a length prefix announcing more than ``max_frame`` is refused as soon as it arrives, and so is
a prefix that is still incomplete but already too long to announce an acceptable size. After an
error the stream cannot be resynchronised, so the reader stays failed.
"""

from __future__ import annotations

from typing import ClassVar, NoReturn

from kosmesh.codec.varint import VarintError, decode_uvarint, encode_uvarint


class FrameError(ValueError):
    """A malformed or oversized length prefix; the stream cannot be resynchronised: reset it."""


def encode_frame(body: bytes, max_frame: int, error: type[FrameError] = FrameError) -> bytes:
    """``uvarint(len(body)) || body``; refuses what a reader with the same ``max_frame`` refuses."""
    if len(body) > max_frame:
        raise error(f"frame of {len(body)} bytes exceeds {max_frame}")
    return encode_uvarint(len(body)) + body


class LengthPrefixedReader:
    """Reassembles frames from arbitrary chunks of a stream, one frame of at most ``max_frame`` bytes
    buffered at a time.

    Two ways to read: :meth:`receive_data` (feed a chunk, get every frame it completes) for protocols
    that are frames to the end, and :meth:`feed` + :meth:`next_frame` for protocols that stop reading
    frames part-way (multistream hands what follows the agreement to another protocol:
    :meth:`take_rest`). ``max_frame`` may be changed between frames (identify lowers it as its total
    budget is spent). Errors are raised as ``error`` (a :class:`FrameError` subclass may set its own).
    """

    __slots__ = ("_buffer", "_failed", "_max_frame", "_max_prefix", "_pos")

    error: ClassVar[type[FrameError]] = FrameError

    def __init__(self, max_frame: int) -> None:
        self._max_frame = 0
        self._max_prefix = 1
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._pos = 0  # start of the unread bytes in _buffer
        self._failed: str | None = None

    @property
    def max_frame(self) -> int:
        return self._max_frame

    @max_frame.setter
    def max_frame(self, value: int) -> None:
        if value < 0:
            raise ValueError("max_frame must be non-negative")
        self._max_frame = value
        self._max_prefix = len(encode_uvarint(value))  # the longest prefix of an acceptable size

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a whole frame (or, after the last frame, are unread)."""
        return len(self._buffer) - self._pos

    @property
    def at_frame_boundary(self) -> bool:
        """True when no partial frame is pending (a clean place for the stream to end)."""
        return len(self._buffer) == self._pos

    def receive_data(self, data: bytes) -> list[bytes]:
        """Feed ``data``; return the frames it completes. Raises ``error`` (and stays failed)."""
        if self._failed is not None:
            raise self.error(f"reader already failed: {self._failed}")
        buf = self._buffer
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        if not buf:
            # The usual case: nothing pending. Read frames straight out of ``data``, keep only the tail.
            frames, pos = self._frames_in(data, 0)
            if pos < len(data):
                buf += data[pos:] if pos else data
            return frames
        buf += data
        frames, pos = self._frames_in(buf, 0)
        if pos:
            del buf[:pos]
        return frames

    def feed(self, data: bytes) -> None:
        """Buffer ``data`` for :meth:`next_frame`."""
        if self._failed is not None:
            raise self.error(f"reader already failed: {self._failed}")
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next whole frame fed so far, or None until more bytes arrive. Raises ``error``."""
        if self._failed is not None:
            raise self.error(f"reader already failed: {self._failed}")
        buf, pos = self._buffer, self._pos
        if pos == len(buf):
            return None
        got = self._prefix(buf, pos)
        if got is None:
            return None
        length, body = got
        end = body + length
        if end > len(buf):
            return None
        self._pos = end
        return bytes(buf[body:end])

    def take_rest(self) -> bytes:
        """Every byte fed and not yet returned as a frame; the reader is left empty."""
        rest = bytes(self._buffer[self._pos :])
        self._buffer = bytearray()
        self._pos = 0
        return rest

    def _frames_in(self, buf: bytes | bytearray, pos: int) -> tuple[list[bytes], int]:
        """Every whole frame in ``buf`` from ``pos``, and where the first incomplete one starts."""
        frames: list[bytes] = []
        end = len(buf)
        max_frame = self._max_frame
        while pos < end:
            first = buf[pos]
            if first < 0x80 and first <= max_frame:  # a one-byte prefix: no varint decoding
                length, body = first, pos + 1
            else:
                got = self._prefix(buf, pos)
                if got is None:
                    break
                length, body = got
            if end - body < length:
                break
            pos = body + length
            frames.append(bytes(buf[body:pos]))
        return frames, pos

    def _prefix(self, buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
        """(length, start of body) of the frame at ``pos``, or None while its prefix is incomplete."""
        try:
            got = decode_uvarint(buf, pos)
        except VarintError as exc:
            self._fail(f"malformed length prefix: {exc}")
        if got is None:
            if len(buf) - pos >= self._max_prefix:
                self._fail(f"length prefix announces more than {self._max_frame} bytes")
            return None
        if got[0] > self._max_frame:
            self._fail(f"frame of {got[0]} bytes exceeds {self._max_frame}")
        return got

    def _fail(self, reason: str) -> NoReturn:
        self._failed = reason
        self._buffer = bytearray()
        self._pos = 0
        raise self.error(reason)
