"""The rules a KLP envelope's fields obey, shared by the encoder (refuse to build what no decoder
takes) and the decoder (refuse with a precise reason).

Each ``check_*`` returns its value or raises :class:`~kosmesh.klp.reasons.EnvelopeError`.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

from kosmesh.klp.address import AddressError, KLPAddress
from kosmesh.klp.model import (
    COMPRESSION_ALGORITHMS,
    ENCRYPTION_ALGORITHMS,
    MAX_ENDORSEMENTS,
    MAX_HINT_VALUE,
    MAX_MESSAGE_BYTES,
    MAX_NONCE_BYTES,
    MAX_ROUTING_HINTS,
    MAX_TEXT_FIELD,
    MAX_TRUST_SCORE,
    MAX_TTL_SECONDS,
    MIN_NONCE_BYTES,
    CompressionInfo,
    EncryptionInfo,
    MessageType,
    Priority,
    RoutingHint,
    TrustRequirements,
    VerificationLevel,
)
from kosmesh.klp.reasons import (
    REASON_INVALID_ADDRESS,
    REASON_INVALID_STRUCTURE,
    REASON_MESSAGE_TOO_LARGE,
    REASON_UNSUPPORTED_COMPRESSION,
    REASON_UNSUPPORTED_ENCRYPTION,
    REASON_UNSUPPORTED_VERSION,
    fail,
)

# -- lookup tables ------------------------------------------------------------------------------

TYPES_BY_VALUE = {t.value: t for t in MessageType}
PRIORITIES_BY_VALUE = {int(p): p for p in Priority}
LEVELS_BY_VALUE = {v.value: v for v in VerificationLevel}
_VERSION_RE = re.compile(r"1\.(?:0|[1-9][0-9]{0,3})")
_MESSAGE_ID_RE = re.compile(r"[0-9a-f]{32}")
MESSAGE_ID_MATCH = _MESSAGE_ID_RE.fullmatch

# -- field rules ----------------------------------------------------------------------------------


def check_text_field(what: str, value: Any, max_len: int = MAX_TEXT_FIELD) -> str:
    if type(value) is not str or not value or len(value) > max_len or not value.isprintable():
        fail(REASON_INVALID_STRUCTURE, f"{what} must be 1..{max_len} printable characters")
    return value


def check_version(version: Any) -> str:
    if type(version) is not str or _VERSION_RE.fullmatch(version) is None:
        fail(REASON_UNSUPPORTED_VERSION, f"version {str(version)[:20]!r} is not 1.x")
    return version


def check_switch(what: str, enabled: Any, algorithm: Any, known: frozenset[str], reason: str) -> None:
    if type(enabled) is not bool:
        fail(REASON_INVALID_STRUCTURE, f"{what}.enabled must be a boolean")
    if enabled:
        check_text_field(f"{what}.algorithm", algorithm, 64)
        if algorithm not in known:
            fail(reason, f"unknown {what} algorithm {algorithm!r}")
    elif algorithm is not None:
        fail(REASON_INVALID_STRUCTURE, f"{what}.algorithm is only present when enabled")


def check_ttl(ttl: Any) -> int:
    if type(ttl) is not int or not 0 <= ttl <= MAX_TTL_SECONDS:
        fail(REASON_INVALID_STRUCTURE, f"ttl must be an integer in 0..{MAX_TTL_SECONDS}")
    return ttl


def check_trust(score: Any, endorsements: Any) -> None:
    if type(score) not in (float, int) or not math.isfinite(score) or not 0.0 <= score <= MAX_TRUST_SCORE:
        fail(REASON_INVALID_STRUCTURE, f"minimum_trust_score must be a number in 0..{MAX_TRUST_SCORE}")
    if type(endorsements) is not int or not 0 <= endorsements <= MAX_ENDORSEMENTS:
        fail(REASON_INVALID_STRUCTURE, f"required_endorsements must be an integer in 0..{MAX_ENDORSEMENTS}")


def check_timestamp(timestamp_ms: Any) -> int:
    if type(timestamp_ms) is not int or not 0 <= timestamp_ms < 1 << 53:
        fail(REASON_INVALID_STRUCTURE, "timestamp must be a non-negative integer of milliseconds")
    return timestamp_ms


def check_nonce(nonce: Any, reason: str | None = None) -> bytes:
    if type(nonce) is not bytes or not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        fail(reason or REASON_INVALID_STRUCTURE, f"nonce must be {MIN_NONCE_BYTES}-{MAX_NONCE_BYTES} bytes")
    return nonce


def check_message_id(message_id: Any) -> str:
    if type(message_id) is not str or _MESSAGE_ID_RE.fullmatch(message_id) is None:
        fail(REASON_INVALID_STRUCTURE, "message_id must be 32 lowercase hex digits")
    return message_id


def check_metadata_fields(
    ttl: Any, priority: Any, correlation_id: Any, hints: tuple[RoutingHint, ...], trust: TrustRequirements
) -> None:
    check_ttl(ttl)
    if priority not in PRIORITIES_BY_VALUE or type(priority) not in (int, Priority):
        fail(REASON_INVALID_STRUCTURE, "priority must be 1, 5, 8 or 10")
    if correlation_id is not None:
        check_text_field("correlation_id", correlation_id)
    if len(hints) > MAX_ROUTING_HINTS:
        fail(REASON_INVALID_STRUCTURE, f"more than {MAX_ROUTING_HINTS} routing hints")
    for hint in hints:
        check_text_field("routing hint kind", hint.kind)
        check_text_field("routing hint value", hint.value, MAX_HINT_VALUE)
    check_trust(trust.minimum_trust_score, trust.required_endorsements)
    if trust.verification_level not in LEVELS_BY_VALUE:
        fail(REASON_INVALID_STRUCTURE, "verification_level must be none/basic/strong/cryptographic")


def check_payload_fields(content_type: Any, enc: EncryptionInfo, comp: CompressionInfo) -> None:
    check_text_field("content_type", content_type)
    check_switch("encryption", enc.enabled, enc.algorithm, ENCRYPTION_ALGORITHMS, REASON_UNSUPPORTED_ENCRYPTION)
    check_switch("compression", comp.enabled, comp.algorithm, COMPRESSION_ALGORITHMS, REASON_UNSUPPORTED_COMPRESSION)


def check_size(wire: bytes) -> None:
    """Refuse to produce what every decoder refuses: a payload that inflated under the 16 MiB cap can
    be echoed into a response far over the 1 MiB wire limit."""
    if len(wire) > MAX_MESSAGE_BYTES:
        fail(REASON_MESSAGE_TOO_LARGE, f"{len(wire)} bytes > {MAX_MESSAGE_BYTES}")


# -- the shape of a decoded envelope: which maps hold which keys -----------------------------------

TOP_KEYS = frozenset({"version", "type", "source", "target", "payload", "metadata", "signature", "timestamp"})
PAYLOAD_KEYS = frozenset({"content_type", "data", "encryption", "compression"})
META_REQUIRED = frozenset({"message_id", "nonce", "priority", "ttl", "routing_hints", "trust_requirements"})
META_ALL = META_REQUIRED | {"correlation_id"}
TRUST_KEYS = frozenset({"minimum_trust_score", "required_endorsements", "verification_level"})
_HINT_KEYS = frozenset({"kind", "value"})
_SWITCH_REQUIRED = frozenset({"enabled"})
_SWITCH_ALL = frozenset({"enabled", "algorithm"})
ENVELOPE_MAX_DEPTH = 5


def check_map(what: str, value: Any, required: frozenset[str], allowed: frozenset[str]) -> dict[str, Any]:
    if type(value) is not dict:
        fail(REASON_INVALID_STRUCTURE, f"{what} must be a map")
    keys = value.keys()
    if keys != required and not (required <= keys and keys <= allowed):
        missing = sorted(required - keys)
        extra = sorted(str(k)[:40] for k in keys - allowed)
        fail(REASON_INVALID_STRUCTURE, f"{what}: missing {missing}, unexpected {extra}")
    return value


def switch_of(what: str, value: Any, known: frozenset[str], reason: str) -> tuple[bool, str | None]:
    m = check_map(what, value, _SWITCH_REQUIRED, _SWITCH_ALL)
    enabled, algorithm = m["enabled"], m.get("algorithm")
    check_switch(what, enabled, algorithm, known, reason)
    return enabled, algorithm


def address_of(what: str, value: Any) -> KLPAddress:
    if type(value) is not str:
        fail(REASON_INVALID_STRUCTURE, f"{what} must be a klp:// text address")
    try:
        address = KLPAddress.parse(value)
    except AddressError as exc:
        fail(REASON_INVALID_ADDRESS, f"{what}: {exc}")
    if str(address) != value:
        fail(REASON_INVALID_ADDRESS, f"{what} is not in canonical form {str(address)[:80]!r}")
    return address


@lru_cache(maxsize=4096)
def canonical_address(value: str) -> KLPAddress | None:
    """The address ``value`` spells if it is valid and canonical, else None (then :func:`address_of`
    says why). Cached: a conversation repeats its two addresses in every message."""
    try:
        address = KLPAddress.parse(value)
    except AddressError:
        return None
    return address if str(address) == value else None


def hint_of(value: Any) -> RoutingHint:
    h = check_map("routing hint", value, _HINT_KEYS, _HINT_KEYS)
    return RoutingHint(
        check_text_field("routing hint kind", h["kind"]),
        check_text_field("routing hint value", h["value"], MAX_HINT_VALUE),
    )
