"""The KLP envelope on the wire: building, encoding, decoding and signing messages.

Wire form: one deterministic CBOR map (RFC 8949 §4.2.1, the same bytes as
``cbor2.dumps(..., canonical=True)``) keyed by the seed's field names::

    {"version": "1.0", "type": "TASK_REQUEST", "source": "klp://…", "target": "klp://…",
     "payload": {"content_type": …, "data": <bstr>, "encryption": {"enabled": false},
                 "compression": {"enabled": false}},
     "metadata": {"message_id": <32 hex>, "nonce": <8-32 byte bstr>, "correlation_id"?: …,
                  "priority": 5, "ttl": 60,
                  "routing_hints": [{"kind": …, "value": …}],
                  "trust_requirements": {"minimum_trust_score": 0.0, "required_endorsements": 0,
                                         "verification_level": "none"}},
     "signature": <64-byte bstr>, "timestamp": <integer milliseconds>}

Absent optional fields are omitted, never null. ``payload.data`` travels as a byte string holding the
encoded payload (CBOR for ``application/cbor``, opaque bytes otherwise), then compressed and, later,
encrypted: the signature covers those exact bytes, so a payload never has to be re-encoded or
re-compressed to be verified, and encryption can wrap it unchanged.

The signature is Ed25519, by the source authority's key, over the encoding of the envelope without
``signature``. The message id is the hex of the first 16 bytes of SHA-256 over the encoding without
``signature`` and without ``metadata.message_id``: 128 bits, derived from content. The metadata's
random ``nonce`` (an addition to the seed's fields) makes two sendings of the same content two
messages, so content addressing never turns an honest repeat into a "replay".
The encoder assembles the canonical map from pre-encoded parts (:mod:`kosmesh.klp.cbor`) so that the
id input, the signed bytes and the wire bytes share work. The decoder accepts only canonical input:
one message has exactly one encoding. The model is in :mod:`kosmesh.klp.model`, the field rules in
:mod:`kosmesh.klp.rules`, the payload codec in :mod:`kosmesh.klp.payload`.
"""

from __future__ import annotations

import hashlib
import math
import os
from functools import lru_cache
from typing import Any, NamedTuple

import cbor2

from kosmesh.identity.keys import Ed25519PrivateKey
from kosmesh.klp.address import KLPAddress, signer_key_for
from kosmesh.klp.cbor import (
    K_MESSAGE_ID_HEAD,
    K_SIGNATURE,
    K_SIGNATURE_64,
    MAP_HEADS,
    SAFE_DECODING,
    SHORT_HEADS,
    encode_all,
    front_cbor,
    head,
    meta_head_cbor,
    meta_tail_cbor,
    mid_cbor,
    tail_cbor,
    trust_cbor,
    trust_fields_cbor,
)
from kosmesh.klp.model import (
    COMPRESSION_ALGORITHMS,
    CONTENT_TYPE_CBOR,
    ENCRYPTION_ALGORITHMS,
    KLP_VERSION,
    MAX_ENDORSEMENTS,
    MAX_MESSAGE_BYTES,
    MAX_NONCE_BYTES,
    MAX_ROUTING_HINTS,
    MAX_TRUST_SCORE,
    MAX_TTL_SECONDS,
    MIN_NONCE_BYTES,
    NO_TRUST_REQUIREMENTS,
    NONCE_BYTES,
    CompressionInfo,
    EncryptionInfo,
    KLPMessage,
    MessageType,
    Metadata,
    Payload,
    Priority,
    RoutingHint,
    TrustRequirements,
    VerificationLevel,
    new_validated,
)
from kosmesh.klp.payload import decode_payload_data, payload_wire_data, wire_data_of
from kosmesh.klp.reasons import (
    REASON_INVALID_STRUCTURE,
    REASON_MALFORMED,
    REASON_MESSAGE_ID_MISMATCH,
    REASON_MESSAGE_TOO_LARGE,
    REASON_UNKNOWN_MESSAGE_TYPE,
    REASON_UNSUPPORTED_COMPRESSION,
    REASON_UNSUPPORTED_ENCRYPTION,
    EnvelopeError,
    fail,
)
from kosmesh.klp.rules import (
    ENVELOPE_MAX_DEPTH,
    LEVELS_BY_VALUE,
    MESSAGE_ID_MATCH,
    META_ALL,
    META_REQUIRED,
    PAYLOAD_KEYS,
    PRIORITIES_BY_VALUE,
    TOP_KEYS,
    TRUST_KEYS,
    TYPES_BY_VALUE,
    address_of,
    canonical_address,
    check_map,
    check_message_id,
    check_metadata_fields,
    check_nonce,
    check_payload_fields,
    check_size,
    check_text_field,
    check_timestamp,
    check_trust,
    check_ttl,
    check_version,
    hint_of,
    switch_of,
)

__all__ = [
    "DecodedEnvelope",
    "build_message",
    "compute_message_id",
    "decode_envelope",
    "decode_message",
    "encode_message",
    "signing_bytes",
    "verify_signature",
]

_NO_ENCRYPTION = EncryptionInfo()
_NO_COMPRESSION = CompressionInfo()

# -- building and encoding -----------------------------------------------------------------------


def _message_id_of(id_input: bytes) -> str:
    return hashlib.sha256(id_input).digest()[:16].hex()


def _cache_encodings(msg: KLPMessage, id_input: bytes, signed: bytes, wire: bytes) -> None:
    msg.__dict__.update(_id_input=id_input, _signed=signed, _wire=wire)


def build_message(
    identity: Ed25519PrivateKey,
    *,
    type: MessageType,
    source: KLPAddress,
    target: KLPAddress,
    data: Any,
    timestamp_ms: int,
    content_type: str = CONTENT_TYPE_CBOR,
    priority: Priority = Priority.NORMAL,
    ttl: int = 60,
    correlation_id: str | None = None,
    routing_hints: tuple[RoutingHint, ...] = (),
    trust_requirements: TrustRequirements = NO_TRUST_REQUIREMENTS,
    compression: str | None = None,
    version: str = KLP_VERSION,
    nonce: bytes | None = None,
) -> KLPMessage:
    """Build a signed message: encode the payload, derive the content-addressed id, sign.

    ``data`` is a CBOR-able value for ``application/cbor``, else bytes. Raises EnvelopeError when
    a field is out of bounds, when the message would exceed ``MAX_MESSAGE_BYTES`` (no decoder would
    take it), or when ``source`` names a peer id that is not ``identity``'s (such a message could
    never verify).
    """
    # (``type`` is a parameter here; the builtin is not needed.)
    type_ = type if type.__class__ is MessageType else TYPES_BY_VALUE[MessageType(type).value]
    if priority.__class__ is not Priority:
        priority = Priority(priority)
    comp = CompressionInfo(True, compression) if compression is not None else _NO_COMPRESSION
    hints = tuple(routing_hints)
    if version is not KLP_VERSION:
        check_version(version)
    if content_type is not CONTENT_TYPE_CBOR or comp is not _NO_COMPRESSION:
        check_payload_fields(content_type, _NO_ENCRYPTION, comp)
    trust = trust_requirements
    check_metadata_fields(ttl, priority, correlation_id, hints, trust)
    check_timestamp(timestamp_ms)
    nonce = os.urandom(NONCE_BYTES) if nonce is None else check_nonce(nonce)
    signer = signer_key_for(source.authority)
    if signer is not None and signer.raw != identity.public_key.raw:
        fail(REASON_INVALID_STRUCTURE, "source authority is a peer id that is not the signing identity")

    wire_data = wire_data_of(content_type, data, _NO_ENCRYPTION, comp)
    n = len(wire_data)
    front = front_cbor(type_, str(source), str(target))
    data_head = SHORT_HEADS[2][n] if n < 24 else head(2, n)
    mid = mid_cbor(False, None, comp.enabled, comp.algorithm, content_type, version)
    meta_n = 5 if correlation_id is None else 6
    meta_head = meta_head_cbor(ttl, nonce, priority)
    meta_tail = meta_tail_cbor(
        hints,
        correlation_id,
        trust_cbor(trust.minimum_trust_score, trust.required_endorsements, trust.verification_level),
    )
    tail = tail_cbor(timestamp_ms)
    id_input = b"".join((b"\xa7", front, data_head, wire_data, mid, MAP_HEADS[meta_n], meta_head, meta_tail, tail))
    message_id = hashlib.sha256(id_input).digest()[:16].hex()
    body = b"".join(
        (
            front,
            data_head,
            wire_data,
            mid,
            MAP_HEADS[meta_n + 1],
            meta_head,
            K_MESSAGE_ID_HEAD,
            message_id.encode("ascii"),
            meta_tail,
        )
    )
    signed = b"".join((b"\xa7", body, tail))
    signature = identity.sign(signed)
    n = len(signature)
    wire = b"".join((b"\xa8", body, K_SIGNATURE_64 if n == 64 else K_SIGNATURE + head(2, n), signature, tail))
    check_size(wire)
    payload = new_validated(
        Payload,
        {
            "content_type": content_type,
            "data": data,
            "encryption": _NO_ENCRYPTION,
            "compression": comp,
            "_wire_data": wire_data,
        },
    )
    metadata = new_validated(
        Metadata,
        {
            "message_id": message_id,
            "correlation_id": correlation_id,
            "priority": priority,
            "ttl": ttl,
            "routing_hints": hints,
            "trust_requirements": trust,
            "nonce": nonce,
        },
    )
    return new_validated(
        KLPMessage,
        {
            "version": version,
            "type": type_,
            "source": source,
            "target": target,
            "payload": payload,
            "metadata": metadata,
            "signature": signature,
            "timestamp_ms": timestamp_ms,
            "_id_input": id_input,
            "_signed": signed,
            "_wire": wire,
        },
    )


def _encodings(msg: KLPMessage) -> tuple[bytes, bytes, bytes]:
    """(id input, signed bytes, wire bytes) of a message, computed once and cached on it."""
    if msg._id_input is not None and msg._signed is not None and msg._wire is not None:
        return msg._id_input, msg._signed, msg._wire
    md, pl = msg.metadata, msg.payload
    check_version(msg.version)
    check_payload_fields(pl.content_type, pl.encryption, pl.compression)
    check_metadata_fields(md.ttl, md.priority, md.correlation_id, md.routing_hints, md.trust_requirements)
    check_message_id(md.message_id)
    check_nonce(md.nonce)
    check_timestamp(msg.timestamp_ms)
    if not isinstance(msg.signature, bytes):
        fail(REASON_INVALID_STRUCTURE, "signature must be bytes")
    enc, comp, trust = pl.encryption, pl.compression, md.trust_requirements
    id_input, signed, wire = encode_all(
        front_cbor(TYPES_BY_VALUE[MessageType(msg.type).value], str(msg.source), str(msg.target)),
        payload_wire_data(pl),
        mid_cbor(enc.enabled, enc.algorithm, comp.enabled, comp.algorithm, pl.content_type, msg.version),
        5 if md.correlation_id is None else 6,
        meta_head_cbor(md.ttl, md.nonce, md.priority),
        md.message_id,
        meta_tail_cbor(
            md.routing_hints,
            md.correlation_id,
            trust_cbor(trust.minimum_trust_score, trust.required_endorsements, trust.verification_level),
        ),
        msg.signature,
        tail_cbor(msg.timestamp_ms),
    )
    check_size(wire)
    _cache_encodings(msg, id_input, signed, wire)
    return id_input, signed, wire


def encode_message(msg: KLPMessage) -> bytes:
    """The deterministic CBOR wire form of ``msg``. Raises EnvelopeError for out-of-bounds fields."""
    return _encodings(msg)[2]


def signing_bytes(msg: KLPMessage) -> bytes:
    """What the source signs: the encoding of the envelope without ``signature``."""
    return _encodings(msg)[1]


def compute_message_id(msg: KLPMessage) -> str:
    """The content address of ``msg``: what its ``message_id`` must be."""
    return _message_id_of(_encodings(msg)[0])


def verify_signature(msg: KLPMessage) -> bool:
    """True if ``msg.signature`` is the source authority's signature of ``signing_bytes(msg)``.

    Only peer-id authorities (which inline their Ed25519 key) can be verified for now; a name
    authority needs a signed name record, which a later issue brings, so it fails here.
    """
    key = signer_key_for(msg.source.authority)
    if key is None:
        return False
    try:
        signed = signing_bytes(msg)
    except EnvelopeError:
        return False
    return key.verify(msg.signature, signed)


# -- decoding ------------------------------------------------------------------------------------

_encryption_info = lru_cache(maxsize=16)(EncryptionInfo)
_compression_info = lru_cache(maxsize=16)(CompressionInfo)


@lru_cache(maxsize=256)
def _decoded_trust(score: float, endorsements: int, level: VerificationLevel) -> tuple[TrustRequirements, bytes]:
    """The TrustRequirements of validated fields, and its encoding."""
    return TrustRequirements(score, endorsements, level), trust_fields_cbor(score, endorsements, level)


class DecodedEnvelope(NamedTuple):
    """An envelope whose structure and canonical encoding are valid, payload not yet decoded.

    The pipeline checks the content address and the signature on this before it spends work on
    decompressing and decoding a payload from a sender it has not authenticated yet.
    """

    version: str
    type: MessageType
    source: KLPAddress
    target: KLPAddress
    content_type: str
    wire_data: bytes
    encryption: EncryptionInfo
    compression: CompressionInfo
    metadata: Metadata
    signature: bytes
    timestamp_ms: int
    id_input: bytes
    signed: bytes
    wire: bytes

    def computed_id(self) -> str:
        """The content address: what ``metadata.message_id`` must be."""
        return _message_id_of(self.id_input)

    def verify_signature(self) -> bool:
        key = signer_key_for(self.source.authority)
        return key is not None and key.verify(self.signature, self.signed)

    def to_message(self, max_size: int = MAX_MESSAGE_BYTES, *, decode_payload: bool = True) -> KLPMessage:
        """Decompress (to at most ``max_size`` bytes) and decode the payload (at most MAX_DATA_ITEMS
        items) into a KLPMessage. Raises EnvelopeError.

        With ``decode_payload=False`` the payload's ``data`` is None: enough to answer a message
        that is refused before its payload is worth decoding (a replay, a stale one).
        """
        value = (
            decode_payload_data(self.wire_data, self.content_type, self.encryption, self.compression, max_size)
            if decode_payload
            else None
        )
        payload = new_validated(
            Payload,
            {
                "content_type": self.content_type,
                "data": value,
                "encryption": self.encryption,
                "compression": self.compression,
                "_wire_data": self.wire_data,
            },
        )
        return new_validated(
            KLPMessage,
            {
                "version": self.version,
                "type": self.type,
                "source": self.source,
                "target": self.target,
                "payload": payload,
                "metadata": self.metadata,
                "signature": self.signature,
                "timestamp_ms": self.timestamp_ms,
                "_id_input": self.id_input,
                "_signed": self.signed,
                "_wire": self.wire,
            },
        )


_new_envelope = tuple.__new__  # the NamedTuple's own __new__ is a Python function with 14 arguments


def decode_envelope(data: bytes, max_size: int = MAX_MESSAGE_BYTES) -> DecodedEnvelope:
    """Decode and validate an envelope's structure and encoding; not its id, signature or payload.

    Raises EnvelopeError(reason).
    """
    if len(data) > max_size:
        fail(REASON_MESSAGE_TOO_LARGE, f"{len(data)} bytes > {max_size}")
    data = bytes(data)
    try:
        # Trailing bytes are caught below: the input must equal the re-encoding of its content.
        top = cbor2.loads(data, max_depth=ENVELOPE_MAX_DEPTH, **SAFE_DECODING)
    except Exception as exc:
        fail(REASON_MALFORMED, f"not a CBOR item: {str(exc)[:200]}")
    # Each check below has a fast test for the usual value; anything else goes to the full check,
    # which rejects with the precise reason (or, for an unusual but valid value, accepts it).
    if type(top) is not dict or top.keys() != TOP_KEYS:
        top = check_map("message", top, TOP_KEYS, TOP_KEYS)
    version = top["version"]
    if type(version) is not str or version != KLP_VERSION:
        check_version(version)
    type_value = top["type"]
    if type(type_value) is not str:
        fail(REASON_INVALID_STRUCTURE, "type must be text")
    type_ = TYPES_BY_VALUE.get(type_value)
    if type_ is None:
        fail(REASON_UNKNOWN_MESSAGE_TYPE, f"unknown message type {type_value[:60]!r}")
    source_text, target_text = top["source"], top["target"]
    source = canonical_address(source_text) if type(source_text) is str else None
    if source is None:
        source = address_of("source", source_text)
    target = canonical_address(target_text) if type(target_text) is str else None
    if target is None:
        target = address_of("target", target_text)

    pl = top["payload"]
    if type(pl) is not dict or pl.keys() != PAYLOAD_KEYS:
        pl = check_map("payload", pl, PAYLOAD_KEYS, PAYLOAD_KEYS)
    content_type = pl["content_type"]
    if type(content_type) is not str or content_type != CONTENT_TYPE_CBOR:
        check_text_field("content_type", content_type)
    wire_data = pl["data"]
    if type(wire_data) is not bytes:
        fail(REASON_INVALID_STRUCTURE, "payload.data must be a byte string")
    raw_switch = pl["encryption"]
    if type(raw_switch) is dict and len(raw_switch) == 1 and raw_switch.get("enabled") is False:
        enc, enc_enabled, enc_algorithm = _NO_ENCRYPTION, False, None
    else:
        enc_enabled, enc_algorithm = switch_of(
            "encryption", raw_switch, ENCRYPTION_ALGORITHMS, REASON_UNSUPPORTED_ENCRYPTION
        )
        enc = _encryption_info(enc_enabled, enc_algorithm)
    raw_switch = pl["compression"]
    if type(raw_switch) is dict and len(raw_switch) == 1 and raw_switch.get("enabled") is False:
        comp, comp_enabled, comp_algorithm = _NO_COMPRESSION, False, None
    else:
        comp_enabled, comp_algorithm = switch_of(
            "compression", raw_switch, COMPRESSION_ALGORITHMS, REASON_UNSUPPORTED_COMPRESSION
        )
        comp = _compression_info(comp_enabled, comp_algorithm)

    md = top["metadata"]
    if type(md) is not dict or (md.keys() != META_REQUIRED and md.keys() != META_ALL):
        md = check_map("metadata", md, META_REQUIRED, META_ALL)
    message_id = md["message_id"]
    if type(message_id) is not str or MESSAGE_ID_MATCH(message_id) is None:
        check_message_id(message_id)
    nonce = md["nonce"]
    if type(nonce) is not bytes or not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        check_nonce(nonce, REASON_INVALID_STRUCTURE)
    correlation_id = md.get("correlation_id")
    if "correlation_id" in md:  # absent when unset, never null
        check_text_field("correlation_id", correlation_id)
    raw_priority = md["priority"]
    priority = PRIORITIES_BY_VALUE.get(raw_priority) if type(raw_priority) is int else None
    if priority is None:
        fail(REASON_INVALID_STRUCTURE, "priority must be 1, 5, 8 or 10")
    ttl = md["ttl"]
    if type(ttl) is not int or not 0 <= ttl <= MAX_TTL_SECONDS:
        check_ttl(ttl)
    raw_hints = md["routing_hints"]
    if type(raw_hints) is not list or len(raw_hints) > MAX_ROUTING_HINTS:
        fail(REASON_INVALID_STRUCTURE, f"routing_hints must be a list of at most {MAX_ROUTING_HINTS}")
    hints = tuple(hint_of(h) for h in raw_hints) if raw_hints else ()
    tr = md["trust_requirements"]
    if type(tr) is not dict or tr.keys() != TRUST_KEYS:
        tr = check_map("trust_requirements", tr, TRUST_KEYS, TRUST_KEYS)
    score, endorsements = tr["minimum_trust_score"], tr["required_endorsements"]
    if type(score) is not float:
        fail(REASON_INVALID_STRUCTURE, "minimum_trust_score must be a float")
    if (
        type(endorsements) is not int
        or not 0.0 <= score <= MAX_TRUST_SCORE
        or not 0 <= endorsements <= MAX_ENDORSEMENTS
    ):
        check_trust(score, endorsements)
    level_value = tr["verification_level"]
    level = LEVELS_BY_VALUE.get(level_value) if type(level_value) is str else None
    if level is None:
        fail(REASON_INVALID_STRUCTURE, "verification_level must be none/basic/strong/cryptographic")
    if score or math.copysign(1.0, score) > 0.0:
        trust, trust_cbor = _decoded_trust(score, endorsements, level)
    else:  # -0.0: see is_negative_zero, never from (or into) a cache
        trust, trust_cbor = _decoded_trust.__wrapped__(score, endorsements, level)
    metadata = new_validated(
        Metadata,
        {
            "message_id": message_id,
            "correlation_id": correlation_id,
            "priority": priority,
            "ttl": ttl,
            "routing_hints": hints,
            "trust_requirements": trust,
            "nonce": nonce,
        },
    )

    signature = top["signature"]
    if type(signature) is not bytes:
        fail(REASON_INVALID_STRUCTURE, "signature must be a byte string")
    timestamp_ms = top["timestamp"]
    if type(timestamp_ms) is not int or not 0 <= timestamp_ms < 1 << 53:
        check_timestamp(timestamp_ms)

    id_input, signed, wire = encode_all(
        front_cbor(type_, source_text, target_text),
        wire_data,
        mid_cbor(enc_enabled, enc_algorithm, comp_enabled, comp_algorithm, content_type, version),
        5 if correlation_id is None else 6,
        meta_head_cbor(ttl, nonce, priority),
        message_id,
        meta_tail_cbor(hints, correlation_id, trust_cbor),
        signature,
        tail_cbor(timestamp_ms),
    )
    if wire != data:
        # Also catches trailing bytes. One message has exactly one encoding.
        fail(REASON_MALFORMED, "not the deterministic CBOR encoding (RFC 8949 §4.2.1) of its content")
    return _new_envelope(
        DecodedEnvelope,
        (
            version,
            type_,
            source,
            target,
            content_type,
            wire_data,
            enc,
            comp,
            metadata,
            signature,
            timestamp_ms,
            id_input,
            signed,
            data,
        ),
    )


def decode_message(data: bytes, max_size: int = MAX_MESSAGE_BYTES) -> KLPMessage:
    """Decode a wire message and check its content address, but not its signature (see
    :func:`verify_signature`, or run it through the pipeline). Raises EnvelopeError(reason)."""
    envelope = decode_envelope(data, max_size)
    if envelope.computed_id() != envelope.metadata.message_id:
        fail(REASON_MESSAGE_ID_MISMATCH, "message_id is not the content address of the message")
    return envelope.to_message(max_size)
