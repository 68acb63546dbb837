"""Deterministic CBOR (RFC 8949 §4.2.1) for the KLP envelope, assembled from pre-encoded parts.

The envelope is one canonical map whose keys are short text strings, so its key order is fixed and
the encoder can join cached byte strings instead of encoding a map: the parts that a conversation
repeats (addresses, payload switches, trust requirements) are encoded once. The id input, the
signed bytes and the wire bytes share those parts (:func:`encode_all`).

Decoding goes through cbor2 with every tag refused (:data:`NO_TAGS`), so hostile input never builds
exotic objects.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, Final, NoReturn

import cbor2

from kosmesh.klp.model import Priority, RoutingHint, VerificationLevel

# -- primitives -----------------------------------------------------------------------------------

SHORT_HEADS = [[bytes(((major << 5) | n,)) for n in range(24)] for major in range(8)]


def head(major: int, n: int) -> bytes:
    """A CBOR head in its shortest form (RFC 8949 §4.2.1)."""
    if n < 24:
        return SHORT_HEADS[major][n]
    mt = major << 5
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((mt | 26,)) + n.to_bytes(4, "big")
    return bytes((mt | 27,)) + n.to_bytes(8, "big")


def text(s: str) -> bytes:
    """A text string item."""
    b = s.encode("utf-8")
    return head(3, len(b)) + b


K_TYPE = text("type")
K_SOURCE = text("source")
K_TARGET = text("target")
K_PAYLOAD = text("payload")
K_VERSION = text("version")
K_METADATA = text("metadata")
K_SIGNATURE = text("signature")
K_TIMESTAMP = text("timestamp")
K_DATA = text("data")
K_ENCRYPTION = text("encryption")
K_COMPRESSION = text("compression")
K_CONTENT_TYPE = text("content_type")
K_ENABLED = text("enabled")
K_ALGORITHM = text("algorithm")
K_TTL = text("ttl")
K_PRIORITY = text("priority")
K_MESSAGE_ID = text("message_id")
K_NONCE = text("nonce")
K_ROUTING_HINTS = text("routing_hints")
K_CORRELATION_ID = text("correlation_id")
K_TRUST = text("trust_requirements")
K_KIND = text("kind")
K_VALUE = text("value")
K_LEVEL = text("verification_level")
K_MIN_SCORE = text("minimum_trust_score")
K_ENDORSEMENTS = text("required_endorsements")

_PRIORITY_CBOR: dict[int, bytes] = {p: head(0, int(p)) for p in Priority}


@lru_cache(maxsize=64)
def _switch_cbor(enabled: bool, algorithm: str | None) -> bytes:
    """Encoding of an EncryptionInfo/CompressionInfo map (same shape)."""
    if algorithm is None:
        return b"\xa1" + K_ENABLED + (b"\xf5" if enabled else b"\xf4")
    return b"\xa2" + K_ENABLED + (b"\xf5" if enabled else b"\xf4") + K_ALGORITHM + text(algorithm)


# The envelope is assembled from these parts, in the map's canonical key order:
#   a8 | front: type, source, target, "payload" a4 "data" | bstr head, data | mid: encryption,
#   compression, content_type, version, "metadata" | metadata map head | meta_head: ttl, nonce,
#   priority | message_id | meta_tail: routing_hints, correlation_id?, trust_requirements |
#   signature | tail: timestamp
# The id input drops message_id (one metadata entry fewer) and signature (a7); the signed bytes
# drop signature. The parts that conversations repeat (addresses, switches, trust) are cached.


@lru_cache(maxsize=1024)
def front_cbor(type_value: str, source: str, target: str) -> bytes:
    """From ``type`` to the ``payload`` map's head and its ``data`` key."""
    return b"".join(
        (
            K_TYPE,
            text(type_value),
            K_SOURCE,
            text(source),
            K_TARGET,
            text(target),
            K_PAYLOAD,
            b"\xa4",
            K_DATA,
        )
    )


@lru_cache(maxsize=256)
def mid_cbor(
    enc_enabled: bool,
    enc_algorithm: str | None,
    comp_enabled: bool,
    comp_algorithm: str | None,
    content_type: str,
    version: str,
) -> bytes:
    """From the payload's ``encryption`` entry to the ``metadata`` key. Callers pass validated
    values (``enabled`` is a bool, so ``True`` and ``1`` never share a cache entry)."""
    return b"".join(
        (
            K_ENCRYPTION,
            _switch_cbor(enc_enabled, enc_algorithm),
            K_COMPRESSION,
            _switch_cbor(comp_enabled, comp_algorithm),
            K_CONTENT_TYPE,
            text(content_type),
            K_VERSION,
            text(version),
            K_METADATA,
        )
    )


def trust_fields_cbor(score: float, endorsements: int, level: str) -> bytes:
    return b"".join(
        (
            b"\xa3",
            K_LEVEL,
            text(VerificationLevel(level).value),
            K_MIN_SCORE,
            cbor2.dumps(float(score), canonical=True),
            K_ENDORSEMENTS,
            head(0, endorsements),
        )
    )


_trust_fields_cached = lru_cache(maxsize=256)(trust_fields_cbor)


def is_negative_zero(score: float) -> bool:
    """-0.0 equals 0.0 as a cache key but has its own encoding (f9 8000), so it is never cached:
    a cache shared between the two would re-encode one as the other."""
    return not score and math.copysign(1.0, score) < 0.0


def trust_cbor(score: float, endorsements: int, level: str) -> bytes:
    """Encoding of the trust_requirements map (validated fields)."""
    if is_negative_zero(score):
        return trust_fields_cbor(score, endorsements, level)
    return _trust_fields_cached(score, endorsements, level)


def _hints_cbor(hints: tuple[RoutingHint, ...]) -> bytes:
    if not hints:
        return b"\x80"
    parts = [head(4, len(hints))]
    for hint in hints:
        parts += (b"\xa2", K_KIND, text(hint.kind), K_VALUE, text(hint.value))
    return b"".join(parts)


MAP_HEADS = [bytes((0xA0 | n,)) for n in range(24)]
K_MESSAGE_ID_HEAD = K_MESSAGE_ID + b"\x78\x20"  # the key, then the head of 32 text bytes
K_SIGNATURE_64 = K_SIGNATURE + b"\x58\x40"  # the key, then the head of 64 bytes
K_TIMESTAMP_U64 = K_TIMESTAMP + b"\x1b"
_NO_HINTS_TRUST = K_ROUTING_HINTS + b"\x80" + K_TRUST  # no routing hints, no correlation id


_UINT_HEADS = [head(0, n) for n in range(256)]


def meta_head_cbor(ttl: int, nonce: bytes, priority: int) -> bytes:
    """The metadata entries before ``message_id``: ttl, nonce, priority (validated values)."""
    n = len(nonce)
    return b"".join(
        (
            K_TTL,
            _UINT_HEADS[ttl] if ttl < 256 else head(0, ttl),
            K_NONCE,
            SHORT_HEADS[2][n] if n < 24 else head(2, n),
            nonce,
            K_PRIORITY,
            _PRIORITY_CBOR[priority],
        )
    )


def meta_tail_cbor(hints: tuple[RoutingHint, ...], correlation_id: str | None, trust_cbor: bytes) -> bytes:
    """The metadata entries after ``message_id``: routing_hints, correlation_id?, trust_requirements."""
    if not hints and correlation_id is None:
        return _NO_HINTS_TRUST + trust_cbor
    parts = [K_ROUTING_HINTS, _hints_cbor(hints)]
    if correlation_id is not None:
        parts += (K_CORRELATION_ID, text(correlation_id))
    parts += (K_TRUST, trust_cbor)
    return b"".join(parts)


def tail_cbor(timestamp_ms: int) -> bytes:
    if timestamp_ms >= 0x100000000:
        return K_TIMESTAMP_U64 + timestamp_ms.to_bytes(8, "big")
    return K_TIMESTAMP + head(0, timestamp_ms)


def encode_all(
    front: bytes,
    wire_data: bytes,
    mid: bytes,
    meta_n: int,
    meta_head: bytes,
    message_id: str,
    meta_tail: bytes,
    signature: bytes,
    tail: bytes,
) -> tuple[bytes, bytes, bytes]:
    """(id input, signed bytes, wire bytes) from the parts above. ``meta_n`` counts the metadata
    entries without ``message_id``, which must already be checked (32 hex digits)."""
    n = len(wire_data)
    data_head = SHORT_HEADS[2][n] if n < 24 else head(2, n)
    id_cbor = K_MESSAGE_ID_HEAD + message_id.encode("ascii")
    n = len(signature)
    sig_head = K_SIGNATURE_64 if n == 64 else K_SIGNATURE + head(2, n)
    map_head = MAP_HEADS[meta_n + 1]
    return (
        b"".join((b"\xa7", front, data_head, wire_data, mid, MAP_HEADS[meta_n], meta_head, meta_tail, tail)),
        b"".join((b"\xa7", front, data_head, wire_data, mid, map_head, meta_head, id_cbor, meta_tail, tail)),
        b"".join(
            (
                b"\xa8",
                front,
                data_head,
                wire_data,
                mid,
                map_head,
                meta_head,
                id_cbor,
                meta_tail,
                sig_head,
                signature,
                tail,
            )
        ),
    )


# -- decoding: no tags ----------------------------------------------------------------------------


class _RejectAllTags(Mapping[int, Any]):
    """A semantic_decoders table that claims every tag, so cbor2 builds no exotic objects
    (datetimes, fractions, regexes, shared references…) from hostile input."""

    def __getitem__(self, tag: int) -> Any:
        return reject_tag

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _TagRejected(Exception):
    pass


def reject_tag(*_args: Any) -> NoReturn:
    raise _TagRejected("CBOR tags are not allowed in KLP messages")


NO_TAGS = _RejectAllTags()
# Every cbor2 safety switch a KLP decoder turns on: no tags (so no exotic objects from hostile
# input), no indefinite lengths, no duplicate keys, only hashable keys. Callers add max_depth.
SAFE_DECODING: Final[dict[str, Any]] = {
    "tag_hook": reject_tag,
    "semantic_decoders": NO_TAGS,
    "allow_indefinite": False,
    "allow_duplicate_keys": False,
    "strict_hashable_types": True,
}
