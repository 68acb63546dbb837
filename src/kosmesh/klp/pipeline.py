"""The KLP processing pipeline (seed III.B) as a sans-I/O core.

``KLPProcessor.check(raw, now)`` takes the bytes of one message and the current time and answers
``Accepted(message)`` or ``Rejected(reason)``. It runs the stages cheapest-and-most-basic first:

    size → structure → message id → signature → payload → timestamp window → TTL → replay
    → trust requirements → type supported

The payload (decompression, CBOR) is decoded only once the signature has verified, so an
unauthenticated sender cannot make us inflate anything. No clock is read and nothing blocks: the
node adapter passes ``now`` and does the I/O. Dispatch by type belongs to the node; the result of
handling a request travels back as a signed TASK_RESPONSE built by :func:`make_response`.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from kosmesh.identity.keys import Ed25519PrivateKey
from kosmesh.identity.peer_id import PeerId
from kosmesh.klp.address import KLPAddress, signer_key_for
from kosmesh.klp.envelope import build_message as _build_message
from kosmesh.klp.envelope import decode_envelope
from kosmesh.klp.model import MAX_MESSAGE_BYTES, KLPMessage, MessageType
from kosmesh.klp.reasons import (
    REASON_EXPIRED,
    REASON_INSUFFICIENT_ENDORSEMENTS,
    REASON_INSUFFICIENT_TRUST,
    REASON_INVALID_SIGNATURE,
    REASON_INVALID_STRUCTURE,
    REASON_MESSAGE_ID_MISMATCH,
    REASON_MESSAGE_TOO_LARGE,
    REASON_REPLAY,
    REASON_REPLAY_CACHE_FULL,
    REASON_TIMESTAMP_OUT_OF_WINDOW,
    REASON_UNKNOWN_SIGNER,
    REASON_UNSUPPORTED_MESSAGE_TYPE,
    EnvelopeError,
)

__all__ = [
    "Accepted",
    "CheckResult",
    "KLPProcessor",
    "ProcessingResult",
    "Rejected",
    "ReplayCache",
    "make_response",
    "parse_response",
]


@dataclass(frozen=True)
class Accepted:
    """The message passed every stage; the node dispatches it by type."""

    message: KLPMessage


@dataclass(frozen=True)
class Rejected:
    """The message failed a stage. ``reason`` is from :data:`~kosmesh.klp.reasons.REJECTION_REASONS`.

    ``message`` is set only when the signature verified (rejections from the timestamp stage on),
    so the node answers authenticated senders and never reflects forged traffic.
    """

    reason: str
    message: KLPMessage | None = None
    detail: str = ""


CheckResult = Accepted | Rejected


class ReplayCache:
    """Message ids seen and still fresh, each forgotten once it could no longer be accepted.

    Bounded: when full of live entries it refuses new ones ("replay_cache_full") rather than
    forget one early, because forgetting would let that message be replayed.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("replay cache capacity must be positive")
        self.capacity = capacity
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._expiry

    def evict(self, now: float) -> None:
        """Drop every entry whose expiry is before ``now``."""
        heap, expiry = self._heap, self._expiry
        while heap and heap[0][0] < now:
            when, message_id = heapq.heappop(heap)
            if expiry.get(message_id) == when:
                del expiry[message_id]

    def add(self, message_id: str, expires_at: float, now: float) -> str | None:
        """Record ``message_id`` until ``expires_at``; return a rejection reason or None."""
        self.evict(now)
        if message_id in self._expiry:
            return REASON_REPLAY
        if len(self._expiry) >= self.capacity:
            return REASON_REPLAY_CACHE_FULL
        self._expiry[message_id] = expires_at
        heapq.heappush(self._heap, (expires_at, message_id))
        return None


class KLPProcessor:
    """Validates incoming KLP messages (seed III.B); holds the replay cache, nothing else."""

    def __init__(
        self,
        *,
        local_peer_id: PeerId,
        trust_score: Callable[[PeerId], float],
        supported_types: frozenset[MessageType],
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_clock_skew_s: float = 120.0,
        replay_capacity: int = 100_000,
    ) -> None:
        self.local_peer_id = local_peer_id
        self.trust_score = trust_score
        self.supported_types = frozenset(supported_types)
        self.max_message_bytes = max_message_bytes
        self.max_clock_skew_s = float(max_clock_skew_s)
        self.replay_cache = ReplayCache(replay_capacity)

    def is_for_local_node(self, message: KLPMessage) -> bool:
        """True if the message targets this node (else it is for routing onwards)."""
        return message.target.authority == self.local_peer_id.to_base58()

    def check(self, raw: bytes, now: float) -> CheckResult:
        """Run every stage on one wire message; never raises on hostile input."""
        if len(raw) > self.max_message_bytes:
            return Rejected(REASON_MESSAGE_TOO_LARGE, None, f"{len(raw)} bytes > {self.max_message_bytes}")
        try:
            envelope = decode_envelope(raw, self.max_message_bytes)
        except EnvelopeError as exc:
            return Rejected(exc.reason, None, exc.detail)
        if envelope.computed_id() != envelope.metadata.message_id:
            return Rejected(REASON_MESSAGE_ID_MISMATCH, None, "message_id is not the content address")
        key = signer_key_for(envelope.source.authority)
        if key is None:
            return Rejected(
                REASON_UNKNOWN_SIGNER, None, f"no verifiable key for authority {envelope.source.authority!r}"
            )
        if not key.verify(envelope.signature, envelope.signed):
            return Rejected(REASON_INVALID_SIGNATURE)
        # Time and replay checks come before the payload is inflated and decoded, so a captured
        # message replayed at us costs a signature check, not a payload decode each time.
        sent = envelope.timestamp_ms / 1000.0
        skew = self.max_clock_skew_s
        if not math.isfinite(now) or abs(now - sent) > skew:
            return Rejected(REASON_TIMESTAMP_OUT_OF_WINDOW, envelope.to_message(decode_payload=False),
                            f"sent {sent - now:+.3f}s from now")  # fmt: skip
        ttl = envelope.metadata.ttl
        if now > sent + ttl:
            return Rejected(REASON_EXPIRED, envelope.to_message(decode_payload=False),
                            f"expired {now - sent - ttl:.3f}s ago")  # fmt: skip
        # Past min(ttl, skew) the message fails one of the two checks above, so its id need not
        # be remembered longer than that.
        problem = self.replay_cache.add(envelope.metadata.message_id, sent + min(ttl, skew), now)
        if problem is not None:
            return Rejected(problem, envelope.to_message(decode_payload=False))
        try:
            message = envelope.to_message(self.max_message_bytes)
        except EnvelopeError as exc:
            return Rejected(exc.reason, None, exc.detail)

        trust = envelope.metadata.trust_requirements
        if trust.minimum_trust_score > 0.0:
            source_peer = envelope.source.authority_peer_id()
            score = self.trust_score(source_peer) if source_peer is not None else 0.0
            if not score >= trust.minimum_trust_score:  # a NaN score fails too
                return Rejected(
                    REASON_INSUFFICIENT_TRUST, message, f"trust {score:.2f} < {trust.minimum_trust_score:.2f}"
                )
        if trust.required_endorsements > 0:
            # Endorsements arrive with the trust layer; until then no sender can meet a demand for them.
            return Rejected(REASON_INSUFFICIENT_ENDORSEMENTS, message)
        # Every verification level is met: each message carries a verified Ed25519 signature.
        if envelope.type not in self.supported_types:
            return Rejected(REASON_UNSUPPORTED_MESSAGE_TYPE, message, envelope.type.value)
        return Accepted(message)


# -- results and responses -------------------------------------------------------------------------

_STATUSES = ("processed", "rejected", "deferred")


@dataclass(frozen=True)
class ProcessingResult:
    """The outcome of handling a request (seed III.B), carried back in a signed TASK_RESPONSE."""

    status: Literal["processed", "rejected", "deferred"]
    reason: str | None = None
    retry_after: float | None = None
    data: Any = None


def make_response(
    identity: Ed25519PrivateKey,
    request: KLPMessage,
    result: ProcessingResult,
    *,
    source: KLPAddress,
    timestamp_ms: int,
    ttl: int = 60,
) -> KLPMessage:
    """A signed TASK_RESPONSE to ``request``: correlated by its message id, sent back to its source,
    at the request's priority."""
    if result.status not in _STATUSES:
        raise ValueError(f"status must be one of {_STATUSES}")
    return _build_message(
        identity,
        type=MessageType.TASK_RESPONSE,
        source=source,
        target=request.source,
        data={
            "status": result.status,
            "reason": result.reason,
            "retry_after": None if result.retry_after is None else float(result.retry_after),
            "result": result.data,
        },
        timestamp_ms=timestamp_ms,
        priority=request.metadata.priority,
        ttl=ttl,
        correlation_id=request.metadata.message_id,
    )


_RESPONSE_KEYS = frozenset({"status", "reason", "retry_after", "result"})


def parse_response(msg: KLPMessage) -> ProcessingResult:
    """The ProcessingResult a TASK_RESPONSE carries. Raises EnvelopeError("invalid_structure")."""
    if msg.type is not MessageType.TASK_RESPONSE:
        raise EnvelopeError(REASON_INVALID_STRUCTURE, f"not a TASK_RESPONSE but {msg.type.value}")
    data = msg.payload.data
    if type(data) is not dict or data.keys() != _RESPONSE_KEYS:
        raise EnvelopeError(REASON_INVALID_STRUCTURE, "a response maps status/reason/retry_after/result")
    status, reason, retry_after = data["status"], data["reason"], data["retry_after"]
    if status not in _STATUSES:
        raise EnvelopeError(REASON_INVALID_STRUCTURE, f"unknown response status {str(status)[:40]!r}")
    if reason is not None and type(reason) is not str:
        raise EnvelopeError(REASON_INVALID_STRUCTURE, "response reason must be text")
    if retry_after is not None and (
        type(retry_after) not in (int, float) or not math.isfinite(retry_after) or retry_after < 0
    ):
        raise EnvelopeError(REASON_INVALID_STRUCTURE, "retry_after must be a non-negative number of seconds")
    return ProcessingResult(
        status=status,
        reason=reason,
        retry_after=None if retry_after is None else float(retry_after),
        data=data["result"],
    )
