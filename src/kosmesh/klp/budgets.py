"""Per-peer budgets: what one peer may make this node do before it is answered ``deferred``.

Token buckets (sans-I/O, ``now`` passed in) of messages, bytes, and the CPU seconds a peer's
messages actually cost, measured as they are handled: a message that is cheap to send but dear
to refuse (a forged signature, a payload bomb) counts for what it cost. Trusted peers get more.
"""

from __future__ import annotations

from dataclasses import dataclass

from kosmesh.identity import PeerId
from kosmesh.wire.ratelimit import BucketTable


@dataclass(frozen=True, slots=True)
class RateLimits:
    """What one peer may make this node do, per second and in a burst, before it is answered
    ``deferred``: messages, bytes, and the CPU seconds its messages actually cost (measured, so a
    message that is expensive to refuse counts for what it cost). A peer this node trusts at least
    ``trusted_from`` gets ``trusted_multiplier`` times as much."""

    messages_per_s: float = 2_000.0
    message_burst: float = 4_000.0
    bytes_per_s: float = 32 * 1024 * 1024
    byte_burst: float = 64 * 1024 * 1024
    cpu_per_s: float = 0.25  # a quarter of a core
    cpu_burst: float = 0.5
    trusted_from: float = 8.0
    trusted_multiplier: float = 10.0
    # A sender that keeps going once deferred has its stream reset: this many deferrals a second.
    deferrals_per_s: float = 200.0
    deferral_burst: float = 1_000.0


class PeerBudget:
    """One set of per-peer token buckets (messages, bytes, CPU seconds), at a given scale."""

    __slots__ = ("bytes", "cpu", "messages")

    def __init__(self, limits: RateLimits, scale: float) -> None:
        self.messages: BucketTable[PeerId] = BucketTable(limits.messages_per_s * scale, limits.message_burst * scale)
        self.bytes: BucketTable[PeerId] = BucketTable(limits.bytes_per_s * scale, limits.byte_burst * scale)
        self.cpu: BucketTable[PeerId] = BucketTable(limits.cpu_per_s * scale, limits.cpu_burst * scale)

    def admit(self, peer: PeerId, now: float, size: int) -> float:
        """0.0 if ``peer`` may send one more message of ``size`` bytes now, else the seconds to wait."""
        return (
            self.messages.take(peer, now)
            or self.bytes.take(peer, now, size)
            or self.cpu.bucket(peer, now).wait(now)
        )
