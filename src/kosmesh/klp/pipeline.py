"""The KLP processing pipeline (seed III.B) as a sans-I/O core.

``KLPProcessor.check(raw, now, remote)`` takes the bytes of one message, the current time and the
Noise-authenticated peer that sent it, and answers ``Accepted(message, priority)`` or
``Rejected(reason)``. It runs the stages cheapest-and-most-basic first:

    size → structure → message id → signature → sender binding (source is the remote, target is
    this node) → timestamp window → TTL → receiver policy (trust floor, priority cap) and the
    sender's trust requirements → type supported → replay → payload

The payload (decompression, CBOR, bounded) is decoded last, so a sender we have not authenticated,
or whose message we refuse anyway, cannot make us inflate anything, and refused messages take no
replay-cache entry. Answers to our own requests go through :meth:`KLPProcessor.check_response`:
verified and bound to the sender the same way, but never put in the replay cache (a response is
consumed once, by the caller waiting on its correlation id). No clock is read and nothing blocks:
the node adapter passes ``now`` and does the I/O. Dispatch by type belongs to the node; the result
of handling a request travels back as a signed TASK_RESPONSE built by :func:`make_response`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from kosmesh.identity.keys import Ed25519PrivateKey
from kosmesh.identity.peer_id import PeerId
from kosmesh.klp.address import KLPAddress, signer_key_for
from kosmesh.klp.envelope import DecodedEnvelope, decode_envelope
from kosmesh.klp.envelope import build_message as _build_message
from kosmesh.klp.model import MAX_MESSAGE_BYTES, KLPMessage, MessageType, Priority
from kosmesh.klp.policy import PRIORITY_CAPS_BY_TRUST, ReceiverPolicy
from kosmesh.klp.reasons import (
    REASON_EXPIRED,
    REASON_INSUFFICIENT_ENDORSEMENTS,
    REASON_INSUFFICIENT_TRUST,
    REASON_INVALID_SIGNATURE,
    REASON_INVALID_STRUCTURE,
    REASON_MESSAGE_ID_MISMATCH,
    REASON_MESSAGE_TOO_LARGE,
    REASON_NOT_FOR_THIS_NODE,
    REASON_SOURCE_MISMATCH,
    REASON_TIMESTAMP_OUT_OF_WINDOW,
    REASON_UNKNOWN_SIGNER,
    REASON_UNSUPPORTED_MESSAGE_TYPE,
    EnvelopeError,
)
from kosmesh.klp.replay import ReplayCache

__all__ = [
    "DEFAULT_MAX_FUTURE_SKEW_S",
    "Accepted",
    "CheckResult",
    "KLPProcessor",
    "ProcessingResult",
    "Rejected",
    "make_response",
    "parse_response",
]

# How far ahead of our clock a message may be stamped. Honest clocks agree within a second or two;
# a message stamped further ahead would be remembered (and could be replayed) for that much longer.
DEFAULT_MAX_FUTURE_SKEW_S = 10.0


@dataclass(frozen=True)
class Accepted:
    """The message passed every stage; the node dispatches it by type.

    ``priority`` is where it goes in the receiver's queue: its declared priority, capped by the
    receiver's trust in the sender (the signed message itself is never changed).
    """

    message: KLPMessage
    priority: Priority


@dataclass(frozen=True)
class Rejected:
    """The message failed a stage. ``reason`` is from :data:`~kosmesh.klp.reasons.REJECTION_REASONS`.

    ``message`` is set only when the signature verified (rejections from the sender binding on), so
    the node answers authenticated senders and never reflects forged traffic.
    """

    reason: str
    message: KLPMessage | None = None
    detail: str = ""


CheckResult = Accepted | Rejected


class KLPProcessor:
    """Validates incoming KLP messages (seed III.B); holds the replay cache and the receiver's policy."""

    def __init__(
        self,
        *,
        local_peer_id: PeerId,
        trust_score: Callable[[PeerId], float],
        supported_types: frozenset[MessageType],
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        max_clock_skew_s: float = 120.0,
        max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
        replay_capacity: int = 100_000,
        replay_per_peer: int | None = None,
        min_trust_for_tasks: float = 0.0,
        priority_caps: tuple[tuple[float, Priority], ...] = PRIORITY_CAPS_BY_TRUST,
    ) -> None:
        """``max_clock_skew_s`` bounds how old a message may be, ``max_future_skew_s`` how far ahead of
        our clock it may be stamped. The replay cache holds ``replay_capacity`` ids in all, at most
        ``replay_per_peer`` (default: half the capacity) for one sender."""
        if max_clock_skew_s < 0 or max_future_skew_s < 0:
            raise ValueError("clock skews must not be negative")
        self.local_peer_id = local_peer_id
        self._local = local_peer_id.to_base58()
        self.trust_score = trust_score
        self.supported_types = frozenset(supported_types)
        self.max_message_bytes = max_message_bytes
        self.max_clock_skew_s = float(max_clock_skew_s)
        self.max_future_skew_s = float(max_future_skew_s)
        per_peer = max(1, replay_capacity // 2) if replay_per_peer is None else replay_per_peer
        self.replay_cache = ReplayCache(replay_capacity, per_peer)
        self.policy = ReceiverPolicy(min_trust_for_tasks, priority_caps)

    def is_for_local_node(self, message: KLPMessage) -> bool:
        """True if the message targets this node (else it is for routing onwards)."""
        return message.target.authority == self._local

    def check(self, raw: bytes, now: float, remote: PeerId) -> CheckResult:
        """Run every stage on one message that ``remote`` (the Noise-authenticated peer) sent us on a
        direct stream; never raises on hostile input."""
        envelope = self._verified(raw, now, remote)
        if isinstance(envelope, Rejected):
            return envelope
        metadata = envelope.metadata
        trust = metadata.trust_requirements
        priority = metadata.priority
        minimum = self.policy.minimum_trust(envelope.type, trust.minimum_trust_score)
        if minimum > 0.0 or priority > Priority.NORMAL:
            score = self.trust_score(remote)
            if minimum > 0.0 and not score >= minimum:  # a NaN score fails too
                return Rejected(REASON_INSUFFICIENT_TRUST, envelope.to_message(decode_payload=False),
                                f"trust {score:.2f} < {minimum:.2f}")  # fmt: skip
            priority = self.policy.priority(priority, score)
        if trust.required_endorsements > 0:
            # Endorsements arrive with the trust layer; until then no sender can meet a demand for them.
            return Rejected(REASON_INSUFFICIENT_ENDORSEMENTS, envelope.to_message(decode_payload=False))
        # Every verification level is met: each message carries a verified Ed25519 signature.
        if envelope.type not in self.supported_types:
            return Rejected(REASON_UNSUPPORTED_MESSAGE_TYPE, envelope.to_message(decode_payload=False),
                            envelope.type.value)  # fmt: skip
        # Past min(ttl, skew) the message fails the window or TTL check, so its id need not be
        # remembered longer than that. Only messages we would act on take an entry.
        sent = envelope.timestamp_ms / 1000.0
        problem = self.replay_cache.add(
            envelope.source.authority, metadata.message_id, sent + min(metadata.ttl, self.max_clock_skew_s), now
        )
        if problem is not None:
            return Rejected(problem, envelope.to_message(decode_payload=False))
        try:
            message = envelope.to_message(self.max_message_bytes)
        except EnvelopeError as exc:  # an authenticated sender's bad payload: it gets a signed answer
            return Rejected(exc.reason, envelope.to_message(decode_payload=False), exc.detail)
        return Accepted(message, priority)

    def check_response(self, raw: bytes, now: float, remote: PeerId) -> CheckResult:
        """Check an answer that ``remote`` sent to one of our own requests on our outbound stream.

        The same verification and sender binding as :meth:`check`, and it must be a TASK_RESPONSE;
        but it takes no replay-cache entry (only the caller waiting on its correlation id consumes
        it, once), so a full cache never blocks the answers to our own requests.
        """
        envelope = self._verified(raw, now, remote)
        if isinstance(envelope, Rejected):
            return envelope
        if envelope.type is not MessageType.TASK_RESPONSE:
            return Rejected(REASON_UNSUPPORTED_MESSAGE_TYPE, envelope.to_message(decode_payload=False),
                            f"{envelope.type.value} on a stream of our requests")  # fmt: skip
        try:
            message = envelope.to_message(self.max_message_bytes)
        except EnvelopeError as exc:
            return Rejected(exc.reason, envelope.to_message(decode_payload=False), exc.detail)
        return Accepted(message, message.metadata.priority)

    def _verified(self, raw: bytes, now: float, remote: PeerId) -> DecodedEnvelope | Rejected:
        """Decode, authenticate and bind a message to its sender; check its time. Payload not decoded."""
        if len(raw) > self.max_message_bytes:
            return Rejected(REASON_MESSAGE_TOO_LARGE, None, f"{len(raw)} bytes > {self.max_message_bytes}")
        try:
            envelope = decode_envelope(raw, self.max_message_bytes)
        except EnvelopeError as exc:
            return Rejected(exc.reason, None, exc.detail)
        if envelope.computed_id() != envelope.metadata.message_id:
            return Rejected(REASON_MESSAGE_ID_MISMATCH, None, "message_id is not the content address")
        source = envelope.source.authority
        key = signer_key_for(source)
        if key is None:
            return Rejected(REASON_UNKNOWN_SIGNER, None, f"no verifiable key for authority {source!r}")
        if not key.verify(envelope.signature, envelope.signed):
            return Rejected(REASON_INVALID_SIGNATURE)
        # A direct message comes from the peer that signed it and is addressed to us: a message B
        # signed for A, written to us by A, is A's replay of B's words, not B speaking to us.
        if source != remote.to_base58():
            return Rejected(REASON_SOURCE_MISMATCH, envelope.to_message(decode_payload=False),
                            f"signed by {source}, sent by {remote}")  # fmt: skip
        if envelope.target.authority != self._local:
            return Rejected(REASON_NOT_FOR_THIS_NODE, envelope.to_message(decode_payload=False),
                            f"addressed to {envelope.target.authority[:80]}")  # fmt: skip
        # Time checks come before the payload is inflated and decoded, so a stale or replayed message
        # costs a signature check, not a payload decode.
        sent = envelope.timestamp_ms / 1000.0
        if not math.isfinite(now) or not -self.max_future_skew_s <= now - sent <= self.max_clock_skew_s:
            return Rejected(REASON_TIMESTAMP_OUT_OF_WINDOW, envelope.to_message(decode_payload=False),
                            f"sent {sent - now:+.3f}s from now")  # fmt: skip
        ttl = envelope.metadata.ttl
        if now > sent + ttl:
            return Rejected(REASON_EXPIRED, envelope.to_message(decode_payload=False),
                            f"expired {now - sent - ttl:.3f}s ago")  # fmt: skip
        return envelope


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
