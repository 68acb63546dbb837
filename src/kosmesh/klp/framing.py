"""KLP on a libp2p stream: protocol ``/kos/klp/1.0.0``, one uvarint-length-prefixed message per frame.

The reader is sans-I/O (feed it bytes, get whole frames) and refuses an oversized frame as soon as
its length prefix arrives, so a hostile peer cannot make us buffer a body we would reject anyway.
"""

from __future__ import annotations

from kosmesh.klp.envelope import MAX_MESSAGE_BYTES
from kosmesh.wire.varint import VarintError, decode_uvarint, encode_uvarint

PROTOCOL_ID = "/kos/klp/1.0.0"


class FramingError(ValueError):
    """A malformed or oversized length prefix; the stream cannot be resynchronised: reset it."""


def encode_frame(payload: bytes, max_frame: int = MAX_MESSAGE_BYTES) -> bytes:
    """``uvarint(len(payload)) || payload``."""
    if len(payload) > max_frame:
        raise FramingError(f"frame of {len(payload)} bytes exceeds {max_frame}")
    return encode_uvarint(len(payload)) + payload


def _prefix_bytes(max_frame: int) -> int:
    """How many bytes the longest acceptable length prefix takes."""
    return len(encode_uvarint(max_frame))


class FrameReader:
    """Reassembles frames from arbitrary chunks of a stream."""

    def __init__(self, max_frame: int = MAX_MESSAGE_BYTES) -> None:
        if max_frame < 0:
            raise ValueError("max_frame must be non-negative")
        self.max_frame = max_frame
        self._max_prefix = _prefix_bytes(max_frame)
        self._buffer = bytearray()
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    @property
    def at_frame_boundary(self) -> bool:
        """True when no partial frame is pending (a clean place for the stream to end)."""
        return not self._buffer

    def receive_data(self, data: bytes) -> list[bytes]:
        """Feed bytes; return the frames they complete. Raises FramingError (and stays failed)."""
        if self._failed is not None:
            raise FramingError(f"reader already failed: {self._failed}")
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        try:
            while pos < end:
                try:
                    got = decode_uvarint(buf, pos)
                except VarintError as exc:
                    raise FramingError(f"malformed length prefix: {exc}") from None
                if got is None:
                    # Incomplete prefix: already too long to announce an acceptable size?
                    if end - pos >= self._max_prefix:
                        raise FramingError(f"length prefix announces more than {self.max_frame} bytes")
                    break
                length, body = got
                if length > self.max_frame:
                    raise FramingError(f"frame of {length} bytes exceeds {self.max_frame}")
                if end - body < length:
                    break
                frames.append(bytes(buf[body : body + length]))
                pos = body + length
        except FramingError as exc:
            self._failed = str(exc)
            self._buffer = bytearray()
            raise
        if pos:
            del buf[:pos]
        return frames
