"""What the connection core tells its adapter, the limits it enforces, and the errors it raises.

Events are slotted classes, immutable by convention (like yamux's, for the same reason: some
are built per frame). The yamux events for streams whose protocol is agreed
(:class:`~kosmesh.wire.yamux.DataReceived`, ``StreamEnded``, ``StreamReset``,
``StreamWritable``) pass through the core unchanged, so they are events of the core too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

from kosmesh.identity import PeerId
from kosmesh.wire.yamux import DataReceived, SlottedEvent, StreamEnded, StreamReset, StreamWritable

MiB: Final = 1024 * 1024


class ConnectionClosedError(ConnectionError):
    """The connection is gone (closed locally, by the remote, or by a protocol error)."""


class StreamResetError(ConnectionError):
    """The stream was reset by either side."""


class WriteBufferFullError(StreamResetError):
    """A write found the stream's or the connection's send queue at its cap: the stream is reset.

    A writer that awaits ``drain()`` never sees this; one that does not is stopped here instead
    of queueing without bound for a peer that does not read.
    """


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
    stream_receive_window: int = 1 * MiB
    # Outbound. A write is refused (and its stream reset) once the stream already queues
    # max_stream_write_buffer unsent bytes, or the connection max_write_buffer: so each holds at
    # most its cap plus one write.
    max_write_buffer: int = 4 * MiB
    max_stream_write_buffer: int = 2 * MiB
    # A stream whose queued data makes no progress this long is reset; a connection that stays at
    # max_write_buffer this long is dropped (the peer does not read).
    write_stall_timeout: float = 30.0
    # Inbound: unread bytes (received, not read by the application) on all streams of the
    # connection. Over half of it the heaviest streams get no more window credit; over all of it
    # the biggest stream is reset; after max_budget_resets such resets the connection is dropped.
    max_buffered_in: int = 16 * MiB
    max_budget_resets: int = 8
    # Inbound stream opening, per connection: a token bucket; streams beyond it are reset at once.
    # Each stream costs a negotiation, so the rate bounds the CPU one peer can spend that way (the
    # benchmarks, which open streams as fast as they can, raise it); the burst matches
    # max_negotiating_streams (more could not negotiate at once anyway).
    stream_open_rate: float = 1000.0
    stream_open_burst: float = 256.0

    def __post_init__(self) -> None:
        for name in ("handshake_timeout", "stream_negotiation_timeout", "idle_timeout", "keepalive_interval",
                     "write_stall_timeout", "stream_open_rate", "stream_open_burst"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ConnectionLimits.{name} must be positive")
        for name in ("max_streams", "max_negotiating_streams", "max_write_buffer", "max_stream_write_buffer",
                     "max_buffered_in"):
            if getattr(self, name) < 1:
                raise ValueError(f"ConnectionLimits.{name} must be at least 1")


class ConnectionOpened(SlottedEvent):
    """Noise authenticated the remote and yamux was agreed: streams may be opened."""

    __slots__ = ("remote_peer_id",)
    __match_args__ = ("remote_peer_id",)

    def __init__(self, remote_peer_id: PeerId) -> None:
        self.remote_peer_id: Final = remote_peer_id


class StreamNegotiated(SlottedEvent):
    """A stream's protocol is agreed; ``inbound`` streams are new to the adapter."""

    __slots__ = ("inbound", "protocol", "stream_id")
    __match_args__ = ("stream_id", "protocol", "inbound")

    def __init__(self, stream_id: int, protocol: str, inbound: bool) -> None:
        self.stream_id: Final = stream_id
        self.protocol: Final = protocol
        self.inbound: Final = inbound


class NegotiationFailed(SlottedEvent):
    """A stream we opened agreed on no protocol (refused, reset, timed out); it is reset."""

    __slots__ = ("reason", "stream_id")
    __match_args__ = ("stream_id", "reason")

    def __init__(self, stream_id: int, reason: str) -> None:
        self.stream_id: Final = stream_id
        self.reason: Final = reason


class StreamAborted(SlottedEvent):
    """The core reset an agreed stream to enforce a limit (stalled writes, inbound budget)."""

    __slots__ = ("reason", "stream_id")
    __match_args__ = ("stream_id", "reason")

    def __init__(self, stream_id: int, reason: str) -> None:
        self.stream_id: Final = stream_id
        self.reason: Final = reason


class PingAnswered(SlottedEvent):
    """The remote answered the ping :meth:`ConnectionCore.ping` returned ``opaque`` for."""

    __slots__ = ("opaque", "rtt")
    __match_args__ = ("opaque", "rtt")

    def __init__(self, opaque: int, rtt: float) -> None:
        self.opaque: Final = opaque
        self.rtt: Final = rtt


class ConnectionClosed(SlottedEvent):
    """The core closed the connection (timeout, protocol error, remote go-away); always last."""

    __slots__ = ("reason",)
    __match_args__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason: Final = reason


CoreEvent: TypeAlias = (
    ConnectionOpened
    | StreamNegotiated
    | NegotiationFailed
    | StreamAborted
    | PingAnswered
    | ConnectionClosed
    | DataReceived
    | StreamEnded
    | StreamReset
    | StreamWritable
)
