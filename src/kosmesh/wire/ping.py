"""libp2p ping (``/ipfs/ping/1.0.0``): 32-byte payloads echoed verbatim.

The initiator times the round trip itself (this core has no clock); it only checks that
echoes come back intact and in order, and refuses data it never asked for, so a hostile
peer can make neither side buffer more than one payload.
"""

from __future__ import annotations

from collections import deque

PROTOCOL_ID = "/ipfs/ping/1.0.0"
PING_SIZE = 32
MAX_OUTSTANDING = 16


class PingError(ValueError):
    """A wrong, unsolicited or misframed ping echo."""


class PingResponder:
    """Echoes every complete 32-byte payload; keeps at most 31 bytes between calls."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = b""

    def receive_data(self, data: bytes) -> bytes:
        """Bytes to send back: the complete payloads received so far, unchanged."""
        if self._partial:
            data = self._partial + data
        cut = len(data) - len(data) % PING_SIZE
        self._partial = bytes(data[cut:])
        return bytes(data[:cut])


class PingInitiator:
    """Tracks outstanding pings (at most ``MAX_OUTSTANDING``) and matches their echoes."""

    __slots__ = ("_buf", "_failed", "_pending")

    def __init__(self) -> None:
        self._pending: deque[bytes] = deque()
        self._buf = b""
        self._failed: str | None = None

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def request(self, payload: bytes) -> bytes:
        """Record a ping (normally 32 random bytes) and return the bytes to send."""
        if len(payload) != PING_SIZE:
            raise PingError(f"a ping payload is {PING_SIZE} bytes, got {len(payload)}")
        if len(self._pending) >= MAX_OUTSTANDING:
            raise PingError(f"more than {MAX_OUTSTANDING} pings outstanding")
        payload = bytes(payload)
        self._pending.append(payload)
        return payload

    def receive_data(self, data: bytes) -> list[bytes]:
        """The payloads whose echoes completed, oldest first."""
        if self._failed is not None:
            raise PingError(self._failed)
        buf = self._buf + data if self._buf else bytes(data)
        if len(buf) > PING_SIZE * len(self._pending):
            self._failed = "remote sent ping data that was never requested"
            raise PingError(self._failed)
        done: list[bytes] = []
        pos = 0
        while len(buf) - pos >= PING_SIZE:
            echo = buf[pos : pos + PING_SIZE]
            pos += PING_SIZE
            if echo != self._pending.popleft():
                self._failed = "ping echo does not match the payload sent"
                raise PingError(self._failed)
            done.append(echo)
        self._buf = buf[pos:]
        return done
