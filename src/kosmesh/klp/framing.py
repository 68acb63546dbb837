"""KLP on a libp2p stream: protocol ``/kos/klp/1.0.0``, one uvarint-length-prefixed message per frame.

The reader is the codec's shared sans-I/O frame reader (feed it bytes, get whole frames), bounded by
the KLP message limit: it refuses an oversized frame as soon as its length prefix arrives, so a
hostile peer cannot make us buffer a body we would reject anyway.
"""

from __future__ import annotations

from kosmesh.codec.frames import FrameError, LengthPrefixedReader
from kosmesh.codec.frames import encode_frame as _encode_frame
from kosmesh.klp.model import MAX_MESSAGE_BYTES

PROTOCOL_ID = "/kos/klp/1.0.0"


class FramingError(FrameError):
    """A malformed or oversized length prefix; the stream cannot be resynchronised: reset it."""


def encode_frame(payload: bytes, max_frame: int = MAX_MESSAGE_BYTES) -> bytes:
    """``uvarint(len(payload)) || payload``."""
    return _encode_frame(payload, max_frame, FramingError)


class FrameReader(LengthPrefixedReader):
    """Reassembles KLP frames (at most ``max_frame`` bytes each) from arbitrary chunks of a stream."""

    __slots__ = ()
    error = FramingError

    def __init__(self, max_frame: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_frame)
