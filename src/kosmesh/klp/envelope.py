"""The KLP envelope: the seed's message fields, deterministic CBOR, Ed25519 signatures.

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

The encoder assembles the canonical map from pre-encoded parts (the key order is fixed, since every
key is a short text string) so that the id input, the signed bytes and the wire bytes share work.
The decoder accepts only canonical input: one message has exactly one encoding.
"""

from __future__ import annotations

import base64
import hashlib
import io
import math
import os
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from functools import lru_cache
from typing import Any, NamedTuple, NoReturn, TypeVar

import cbor2

from kosmesh.identity.keys import Ed25519PrivateKey
from kosmesh.klp.address import AddressError, KLPAddress, signer_key_for

_D = TypeVar("_D")

# -- public constants -------------------------------------------------------------------------

KLP_VERSION = "1.0"
CONTENT_TYPE_CBOR = "application/cbor"
COMPRESSION_GZIP = "gzip"
COMPRESSION_ALGORITHMS = frozenset({COMPRESSION_GZIP})
# End-to-end encryption lands in a later issue; these are the suites the architecture names. A
# payload encrypted with one of them is carried as opaque bytes; any other algorithm is refused.
ENCRYPTION_ALGORITHMS = frozenset({"x25519-hkdf-sha256-aes-256-gcm", "hpke-x25519-sha256-aes-256-gcm"})

MAX_MESSAGE_BYTES = 1 << 20
MAX_DECOMPRESSED_BYTES = 16 << 20
MAX_DATA_DEPTH = 64
MAX_DATA_ITEMS = 1 << 20
MAX_ROUTING_HINTS = 32
MAX_TEXT_FIELD = 256
MAX_HINT_VALUE = 1024
MAX_TTL_SECONDS = 30 * 24 * 3600
MAX_TRUST_SCORE = 10.0
MAX_ENDORSEMENTS = 1024

# -- rejection reasons raised by the codec (a fixed, public vocabulary) -----------------------

REASON_MESSAGE_TOO_LARGE = "message_too_large"
REASON_MALFORMED = "malformed"
REASON_INVALID_STRUCTURE = "invalid_structure"
REASON_UNSUPPORTED_VERSION = "unsupported_version"
REASON_UNKNOWN_MESSAGE_TYPE = "unknown_message_type"
REASON_INVALID_ADDRESS = "invalid_address"
REASON_UNSUPPORTED_ENCRYPTION = "unsupported_encryption"
REASON_UNSUPPORTED_COMPRESSION = "unsupported_compression"
REASON_MESSAGE_ID_MISMATCH = "message_id_mismatch"
REASON_MALFORMED_PAYLOAD = "malformed_payload"
REASON_DECOMPRESSION_BOMB = "decompression_bomb"
REASON_PAYLOAD_TOO_COMPLEX = "payload_too_complex"

CODEC_REASONS = frozenset(
    {
        REASON_MESSAGE_TOO_LARGE,
        REASON_MALFORMED,
        REASON_INVALID_STRUCTURE,
        REASON_UNSUPPORTED_VERSION,
        REASON_UNKNOWN_MESSAGE_TYPE,
        REASON_INVALID_ADDRESS,
        REASON_UNSUPPORTED_ENCRYPTION,
        REASON_UNSUPPORTED_COMPRESSION,
        REASON_MESSAGE_ID_MISMATCH,
        REASON_MALFORMED_PAYLOAD,
        REASON_DECOMPRESSION_BOMB,
        REASON_PAYLOAD_TOO_COMPLEX,
    }
)


class EnvelopeError(ValueError):
    """A message that cannot be encoded or decoded; ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _fail(reason: str, detail: str = "") -> NoReturn:
    raise EnvelopeError(reason, detail)


# -- the data model ---------------------------------------------------------------------------


class MessageType(StrEnum):
    """The seed's KLP message types; the wire carries the value."""

    TASK_REQUEST = "TASK_REQUEST"
    TASK_RESPONSE = "TASK_RESPONSE"
    AGENT_MIGRATION = "AGENT_MIGRATION"
    REPUTATION_DELTA = "REPUTATION_DELTA"
    BROADCAST_ANNOUNCE = "BROADCAST_ANNOUNCE"
    VECTOR_SYNC = "VECTOR_SYNC"
    PEER_DISCOVERY = "PEER_DISCOVERY"
    TRUST_ATTESTATION = "TRUST_ATTESTATION"


class Priority(IntEnum):
    """The seed's message priorities (higher is more urgent)."""

    LOW = 1
    NORMAL = 5
    HIGH = 8
    CRITICAL = 10


class VerificationLevel(StrEnum):
    """How strongly the sender wants the receiver to have verified it (seed III.A)."""

    NONE = "none"
    BASIC = "basic"
    STRONG = "strong"
    CRYPTOGRAPHIC = "cryptographic"


@dataclass(frozen=True)
class EncryptionInfo:
    """Whether ``payload.data`` is encrypted, and with which suite."""

    enabled: bool = False
    algorithm: str | None = None


@dataclass(frozen=True)
class CompressionInfo:
    """Whether ``payload.data`` is compressed, and with which algorithm (only ``gzip`` so far)."""

    enabled: bool = False
    algorithm: str | None = None


@dataclass(frozen=True)
class Payload:
    """Typed content. ``data`` is the decoded value for ``application/cbor``, else raw bytes."""

    content_type: str
    data: Any
    encryption: EncryptionInfo = EncryptionInfo()
    compression: CompressionInfo = CompressionInfo()
    # The exact ``data`` bytes that were signed (after compression), kept when decoding so the
    # signature can be checked without re-encoding; cleared by dataclasses.replace().
    _wire_data: bytes | None = field(default=None, init=False, repr=False, compare=False)


@dataclass(frozen=True)
class TrustRequirements:
    """What the sender asks of the receiver's trust in it (0-10 scale)."""

    minimum_trust_score: float = 0.0
    required_endorsements: int = 0
    verification_level: VerificationLevel = VerificationLevel.NONE


@dataclass(frozen=True)
class RoutingHint:
    """A free-form hint for routers (e.g. kind="relay", value="<peer id>")."""

    kind: str
    value: str


@dataclass(frozen=True)
class Metadata:
    """Identity, urgency and lifetime of a message."""

    message_id: str
    correlation_id: str | None = None
    priority: Priority = Priority.NORMAL
    ttl: int = 60
    routing_hints: tuple[RoutingHint, ...] = ()
    trust_requirements: TrustRequirements = TrustRequirements()
    nonce: bytes = b""


@dataclass(frozen=True)
class KLPMessage:
    """A KLP envelope (seed III.A). ``timestamp_ms`` is integer milliseconds since the epoch."""

    version: str
    type: MessageType
    source: KLPAddress
    target: KLPAddress
    payload: Payload
    metadata: Metadata
    signature: bytes
    timestamp_ms: int
    # Encodings computed while building or decoding, so verifying and sending do not redo them.
    _id_input: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _signed: bytes | None = field(default=None, init=False, repr=False, compare=False)
    _wire: bytes | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def message_id(self) -> str:
        return self.metadata.message_id

    @property
    def timestamp(self) -> float:
        """Seconds since the epoch, for comparing with a ``now``."""
        return self.timestamp_ms / 1000.0


def _fast(cls: type[_D], fields: dict[str, Any]) -> _D:
    """Construct a frozen dataclass from values the codec has already validated, without the
    per-field ``object.__setattr__`` of the generated ``__init__`` (hot path: every message)."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


# -- deterministic CBOR primitives ------------------------------------------------------------


_SHORT_HEADS = [[bytes(((major << 5) | n,)) for n in range(24)] for major in range(8)]


def _head(major: int, n: int) -> bytes:
    """A CBOR head in its shortest form (RFC 8949 §4.2.1)."""
    if n < 24:
        return _SHORT_HEADS[major][n]
    mt = major << 5
    if n < 0x100:
        return bytes((mt | 24, n))
    if n < 0x10000:
        return bytes((mt | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((mt | 26,)) + n.to_bytes(4, "big")
    return bytes((mt | 27,)) + n.to_bytes(8, "big")


def _text(s: str) -> bytes:
    b = s.encode("utf-8")
    return _head(3, len(b)) + b


def _bstr(b: bytes) -> bytes:
    return _head(2, len(b)) + b


_cached_text = lru_cache(maxsize=1024)(_text)

_K_TYPE = _text("type")
_K_SOURCE = _text("source")
_K_TARGET = _text("target")
_K_PAYLOAD = _text("payload")
_K_VERSION = _text("version")
_K_METADATA = _text("metadata")
_K_SIGNATURE = _text("signature")
_K_TIMESTAMP = _text("timestamp")
_K_DATA = _text("data")
_K_ENCRYPTION = _text("encryption")
_K_COMPRESSION = _text("compression")
_K_CONTENT_TYPE = _text("content_type")
_K_ENABLED = _text("enabled")
_K_ALGORITHM = _text("algorithm")
_K_TTL = _text("ttl")
_K_PRIORITY = _text("priority")
_K_MESSAGE_ID = _text("message_id")
_K_NONCE = _text("nonce")
_K_ROUTING_HINTS = _text("routing_hints")
_K_CORRELATION_ID = _text("correlation_id")
_K_TRUST = _text("trust_requirements")
_K_KIND = _text("kind")
_K_VALUE = _text("value")
_K_LEVEL = _text("verification_level")
_K_MIN_SCORE = _text("minimum_trust_score")
_K_ENDORSEMENTS = _text("required_endorsements")

_TYPE_CBOR = {t: _text(t.value) for t in MessageType}
_PRIORITY_CBOR = {p: _head(0, int(p)) for p in Priority}
_TYPES_BY_VALUE = {t.value: t for t in MessageType}
_PRIORITIES_BY_VALUE = {int(p): p for p in Priority}
_LEVELS_BY_VALUE = {v.value: v for v in VerificationLevel}
_VERSION_RE = re.compile(r"1\.(?:0|[1-9][0-9]{0,3})")
_MESSAGE_ID_RE = re.compile(r"[0-9a-f]{32}")
NONCE_BYTES = 8
MIN_NONCE_BYTES = 8
MAX_NONCE_BYTES = 32


@lru_cache(maxsize=64)
def _switch_cbor(enabled: bool, algorithm: str | None) -> bytes:
    """Encoding of an EncryptionInfo/CompressionInfo map (same shape)."""
    if algorithm is None:
        return b"\xa1" + _K_ENABLED + (b"\xf5" if enabled else b"\xf4")
    return b"\xa2" + _K_ENABLED + (b"\xf5" if enabled else b"\xf4") + _K_ALGORITHM + _text(algorithm)


@lru_cache(maxsize=256)
def _trust_cbor(trust: TrustRequirements) -> bytes:
    score = cbor2.dumps(float(trust.minimum_trust_score), canonical=True)
    return b"".join(
        (
            b"\xa3",
            _K_LEVEL,
            _text(VerificationLevel(trust.verification_level).value),
            _K_MIN_SCORE,
            score,
            _K_ENDORSEMENTS,
            _head(0, trust.required_endorsements),
        )
    )


def _hints_cbor(hints: tuple[RoutingHint, ...]) -> bytes:
    if not hints:
        return b"\x80"
    parts = [_head(4, len(hints))]
    for hint in hints:
        parts += (b"\xa2", _K_KIND, _text(hint.kind), _K_VALUE, _text(hint.value))
    return b"".join(parts)


def _metadata_cbor(
    *,
    ttl: int,
    priority: Priority,
    message_id: str | None,
    hints_cbor: bytes,
    correlation_id: str | None,
    trust_cbor: bytes,
    nonce: bytes,
) -> bytes:
    n = 5 + (message_id is not None) + (correlation_id is not None)
    parts = [bytes((0xA0 | n,)), _K_TTL, _head(0, ttl), _K_NONCE, _bstr(nonce), _K_PRIORITY, _PRIORITY_CBOR[priority]]
    if message_id is not None:
        parts += (_K_MESSAGE_ID, _text(message_id))
    parts += (_K_ROUTING_HINTS, hints_cbor)
    if correlation_id is not None:
        parts += (_K_CORRELATION_ID, _text(correlation_id))
    parts += (_K_TRUST, trust_cbor)
    return b"".join(parts)


def _payload_cbor(content_type: str, wire_data: bytes, enc: EncryptionInfo, comp: CompressionInfo) -> bytes:
    return b"".join(
        (
            b"\xa4",
            _K_DATA,
            _bstr(wire_data),
            _K_ENCRYPTION,
            _switch_cbor(enc.enabled, enc.algorithm),
            _K_COMPRESSION,
            _switch_cbor(comp.enabled, comp.algorithm),
            _K_CONTENT_TYPE,
            _cached_text(content_type),
        )
    )


def _prefix_cbor(
    version: str, type_: MessageType, source: KLPAddress, target: KLPAddress, payload_cbor: bytes
) -> bytes:
    """The map entries that sort before ``metadata``'s value, ending with the ``metadata`` key."""
    return b"".join(
        (
            _K_TYPE,
            _TYPE_CBOR[type_],
            _K_SOURCE,
            _cached_text(str(source)),
            _K_TARGET,
            _cached_text(str(target)),
            _K_PAYLOAD,
            payload_cbor,
            _K_VERSION,
            _cached_text(version),
            _K_METADATA,
        )
    )


def _encode_all(
    *,
    version: str,
    type_: MessageType,
    source: KLPAddress,
    target: KLPAddress,
    payload_cbor: bytes,
    metadata: Metadata,
    signature: bytes,
    timestamp_ms: int,
) -> tuple[bytes, bytes, bytes]:
    """(id input, signed bytes, wire bytes), sharing every piece between the three."""
    prefix = _prefix_cbor(version, type_, source, target, payload_cbor)
    hints = _hints_cbor(metadata.routing_hints)
    trust = _trust_cbor(metadata.trust_requirements)
    ttl, priority, corr = metadata.ttl, metadata.priority, metadata.correlation_id
    meta_no_id = _metadata_cbor(
        ttl=ttl,
        priority=priority,
        message_id=None,
        hints_cbor=hints,
        correlation_id=corr,
        trust_cbor=trust,
        nonce=metadata.nonce,
    )
    meta = _metadata_cbor(
        ttl=ttl,
        priority=priority,
        message_id=metadata.message_id,
        hints_cbor=hints,
        correlation_id=corr,
        trust_cbor=trust,
        nonce=metadata.nonce,
    )
    tail = _K_TIMESTAMP + _head(0, timestamp_ms)
    return (
        b"\xa7" + prefix + meta_no_id + tail,
        b"\xa7" + prefix + meta + tail,
        b"".join((b"\xa8", prefix, meta, _K_SIGNATURE, _bstr(signature), tail)),
    )


# -- payload data ------------------------------------------------------------------------------


class _RejectAllTags(Mapping[int, Any]):
    """A semantic_decoders table that claims every tag, so cbor2 builds no exotic objects
    (datetimes, fractions, regexes, shared references…) from hostile input."""

    def __getitem__(self, tag: int) -> Any:
        return _reject_tag

    def __contains__(self, tag: object) -> bool:
        return True

    def __iter__(self) -> Iterator[int]:
        return iter(())

    def __len__(self) -> int:
        return 0


class _TagRejected(Exception):
    pass


def _reject_tag(*_args: Any) -> NoReturn:
    raise _TagRejected("CBOR tags are not allowed in KLP messages")


_NO_TAGS = _RejectAllTags()


def _text_keys_only(mapping: Any, _immutable: bool) -> Any:
    """Payload maps are keyed by text, as in JSON. This also keeps cbor2's length-first key order
    identical to RFC 8949 §4.2.1 bytewise order, which differ only across key types."""
    for key in mapping:
        if type(key) is not str:
            raise ValueError("payload map keys must be text")
    return mapping


def _strict_loads(data: bytes, max_depth: int) -> Any:
    """Decode one payload item with every cbor2 safety switch on; trailing bytes are an error."""
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        stream,
        tag_hook=_reject_tag,
        object_hook=_text_keys_only,
        semantic_decoders=_NO_TAGS,
        max_depth=max_depth,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        strict_hashable_types=True,
    )
    value = decoder.decode()
    if stream.tell() != len(data):
        raise ValueError("trailing bytes after the CBOR item")
    return value


def _decompress(data: bytes, limit: int) -> bytes:
    decomp = zlib.decompressobj(wbits=31)  # gzip container
    try:
        out = decomp.decompress(data, limit + 1)
    except zlib.error as exc:
        _fail(REASON_MALFORMED_PAYLOAD, f"bad gzip data: {exc}")
    if len(out) > limit:
        _fail(REASON_DECOMPRESSION_BOMB, f"payload inflates beyond {limit} bytes")
    if not decomp.eof or decomp.unused_data:
        _fail(REASON_MALFORMED_PAYLOAD, "gzip stream is truncated or has trailing data")
    return out


def _count_items(data: bytes, limit: int) -> None:
    """Walk CBOR heads (without building objects) and refuse more than ``limit`` items.

    Run only on payloads that inflated beyond the wire limit: there, decoding ``[[],[],…]`` could
    otherwise turn 16 MiB into a gigabyte of Python lists.
    """
    pos = 0
    end = len(data)
    pending = 1  # items still to read
    items = 0
    while pending:
        if pos >= end:
            _fail(REASON_MALFORMED_PAYLOAD, "truncated CBOR")
        pending -= 1
        items += 1
        if items > limit:
            _fail(REASON_PAYLOAD_TOO_COMPLEX, f"payload has more than {limit} items")
        ib = data[pos]
        pos += 1
        major, info = ib >> 5, ib & 0x1F
        if info < 24:
            n = info
        elif info <= 27:
            size = 1 << (info - 24)
            n = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        else:
            _fail(REASON_MALFORMED_PAYLOAD, "indefinite or reserved CBOR length")
        if major in (2, 3):
            pos += n
        elif major == 4:
            pending += n
        elif major == 5:
            pending += 2 * n
        elif major == 6:
            _fail(REASON_MALFORMED_PAYLOAD, "CBOR tags are not allowed")
        if pending > limit:
            _fail(REASON_PAYLOAD_TOO_COMPLEX, f"payload has more than {limit} items")


def encode_data(data: Any) -> bytes:
    """Deterministic CBOR of a payload value; refuses values a KLP decoder would refuse."""
    try:
        raw = cbor2.dumps(data, canonical=True)
    except Exception as exc:
        _fail(REASON_MALFORMED_PAYLOAD, f"data is not CBOR-encodable: {exc}")
    try:
        # What we just encoded holds exactly one item; only its content needs checking.
        cbor2.loads(
            raw,
            semantic_decoders=_NO_TAGS,
            tag_hook=_reject_tag,
            object_hook=_text_keys_only,
            max_depth=MAX_DATA_DEPTH,
            strict_hashable_types=True,
        )
    except Exception as exc:
        _fail(
            REASON_MALFORMED_PAYLOAD,
            f"data must be null/bool/int (64-bit)/float/str/bytes/list/dict with text keys: {exc}",
        )
    return raw


def _payload_wire_data(payload: Payload) -> bytes:
    """The bytes carried in ``payload.data`` on the wire (encoded, then compressed)."""
    if payload._wire_data is not None:
        return payload._wire_data
    if payload.encryption.enabled or payload.content_type != CONTENT_TYPE_CBOR:
        if not isinstance(payload.data, bytes | bytearray | memoryview):
            _fail(
                REASON_MALFORMED_PAYLOAD,
                "data must be bytes unless the content type is application/cbor and it is not encrypted",
            )
        raw = bytes(payload.data)
    else:
        raw = encode_data(payload.data)
    comp = payload.compression
    if comp.enabled and not payload.encryption.enabled:
        if comp.algorithm != COMPRESSION_GZIP:
            _fail(REASON_UNSUPPORTED_COMPRESSION, f"unknown compression {comp.algorithm!r}")
        raw = zlib.compress(raw, 6, wbits=31)
    return raw


def _decode_payload_data(
    wire_data: bytes, content_type: str, enc: EncryptionInfo, comp: CompressionInfo, max_inline: int
) -> Any:
    """Recover the payload value from its wire bytes (ciphertext stays opaque bytes)."""
    if enc.enabled:
        return wire_data
    raw = wire_data
    if comp.enabled:
        raw = _decompress(raw, MAX_DECOMPRESSED_BYTES)
    if content_type != CONTENT_TYPE_CBOR:
        return raw
    if len(raw) > max_inline:
        _count_items(raw, MAX_DATA_ITEMS)
    try:
        return _strict_loads(raw, MAX_DATA_DEPTH)
    except Exception as exc:
        _fail(REASON_MALFORMED_PAYLOAD, f"payload data is not acceptable CBOR: {exc}")


# -- field rules (shared by the encoder and the decoder) ----------------------------------------


def _check_text_field(what: str, value: Any, max_len: int = MAX_TEXT_FIELD) -> str:
    if type(value) is not str or not value or len(value) > max_len or not value.isprintable():
        _fail(REASON_INVALID_STRUCTURE, f"{what} must be 1..{max_len} printable characters")
    return value


def _check_version(version: Any) -> str:
    if type(version) is not str or _VERSION_RE.fullmatch(version) is None:
        _fail(REASON_UNSUPPORTED_VERSION, f"version {str(version)[:20]!r} is not 1.x")
    return version


def _check_switch(what: str, enabled: Any, algorithm: Any, known: frozenset[str], reason: str) -> None:
    if type(enabled) is not bool:
        _fail(REASON_INVALID_STRUCTURE, f"{what}.enabled must be a boolean")
    if enabled:
        _check_text_field(f"{what}.algorithm", algorithm, 64)
        if algorithm not in known:
            _fail(reason, f"unknown {what} algorithm {algorithm!r}")
    elif algorithm is not None:
        _fail(REASON_INVALID_STRUCTURE, f"{what}.algorithm is only present when enabled")


def _check_ttl(ttl: Any) -> int:
    if type(ttl) is not int or not 0 <= ttl <= MAX_TTL_SECONDS:
        _fail(REASON_INVALID_STRUCTURE, f"ttl must be an integer in 0..{MAX_TTL_SECONDS}")
    return ttl


def _check_trust(score: Any, endorsements: Any) -> None:
    if type(score) not in (float, int) or not math.isfinite(score) or not 0.0 <= score <= MAX_TRUST_SCORE:
        _fail(REASON_INVALID_STRUCTURE, f"minimum_trust_score must be a number in 0..{MAX_TRUST_SCORE}")
    if type(endorsements) is not int or not 0 <= endorsements <= MAX_ENDORSEMENTS:
        _fail(REASON_INVALID_STRUCTURE, f"required_endorsements must be an integer in 0..{MAX_ENDORSEMENTS}")


def _check_timestamp(timestamp_ms: Any) -> int:
    if type(timestamp_ms) is not int or not 0 <= timestamp_ms < 1 << 53:
        _fail(REASON_INVALID_STRUCTURE, "timestamp must be a non-negative integer of milliseconds")
    return timestamp_ms


def _check_nonce(nonce: Any, reason: str | None = None) -> bytes:
    if type(nonce) is not bytes or not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        _fail(reason or REASON_INVALID_STRUCTURE, f"nonce must be {MIN_NONCE_BYTES}-{MAX_NONCE_BYTES} bytes")
    return nonce


def _check_message_id(message_id: Any) -> str:
    if type(message_id) is not str or _MESSAGE_ID_RE.fullmatch(message_id) is None:
        _fail(REASON_INVALID_STRUCTURE, "message_id must be 32 lowercase hex digits")
    return message_id


def _check_metadata_fields(
    ttl: Any, priority: Any, correlation_id: Any, hints: tuple[RoutingHint, ...], trust: TrustRequirements
) -> None:
    _check_ttl(ttl)
    if priority not in _PRIORITIES_BY_VALUE or type(priority) not in (int, Priority):
        _fail(REASON_INVALID_STRUCTURE, "priority must be 1, 5, 8 or 10")
    if correlation_id is not None:
        _check_text_field("correlation_id", correlation_id)
    if len(hints) > MAX_ROUTING_HINTS:
        _fail(REASON_INVALID_STRUCTURE, f"more than {MAX_ROUTING_HINTS} routing hints")
    for hint in hints:
        _check_text_field("routing hint kind", hint.kind)
        _check_text_field("routing hint value", hint.value, MAX_HINT_VALUE)
    _check_trust(trust.minimum_trust_score, trust.required_endorsements)
    if trust.verification_level not in _LEVELS_BY_VALUE:
        _fail(REASON_INVALID_STRUCTURE, "verification_level must be none/basic/strong/cryptographic")


def _check_payload_fields(content_type: Any, enc: EncryptionInfo, comp: CompressionInfo) -> None:
    _check_text_field("content_type", content_type)
    _check_switch(
        "encryption", enc.enabled, enc.algorithm, ENCRYPTION_ALGORITHMS, REASON_UNSUPPORTED_ENCRYPTION
    )
    _check_switch(
        "compression", comp.enabled, comp.algorithm, COMPRESSION_ALGORITHMS, REASON_UNSUPPORTED_COMPRESSION
    )


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
    trust_requirements: TrustRequirements = TrustRequirements(),
    compression: str | None = None,
    version: str = KLP_VERSION,
    nonce: bytes | None = None,
) -> KLPMessage:
    """Build a signed message: encode the payload, derive the content-addressed id, sign.

    ``data`` is a CBOR-able value for ``application/cbor``, else bytes. Raises EnvelopeError when
    a field is out of bounds, or when ``source`` names a peer id that is not ``identity``'s (such a
    message could never verify).
    """
    type_ = _TYPES_BY_VALUE[MessageType(type).value]
    priority = Priority(priority)
    comp = CompressionInfo(True, compression) if compression is not None else _NO_COMPRESSION
    hints = tuple(routing_hints)
    _check_version(version)
    _check_payload_fields(content_type, _NO_ENCRYPTION, comp)
    _check_metadata_fields(ttl, priority, correlation_id, hints, trust_requirements)
    _check_timestamp(timestamp_ms)
    nonce = os.urandom(NONCE_BYTES) if nonce is None else _check_nonce(nonce)
    signer = signer_key_for(source.authority)
    if signer is not None and signer.raw != identity.public_key.raw:
        _fail(REASON_INVALID_STRUCTURE, "source authority is a peer id that is not the signing identity")

    payload = Payload(content_type, data, _NO_ENCRYPTION, comp)
    wire_data = _payload_wire_data(payload)
    payload.__dict__["_wire_data"] = wire_data
    prefix = _prefix_cbor(
        version, type_, source, target, _payload_cbor(content_type, wire_data, _NO_ENCRYPTION, comp)
    )
    hints_cbor = _hints_cbor(hints)
    trust_cbor = _trust_cbor(trust_requirements)
    tail = _K_TIMESTAMP + _head(0, timestamp_ms)
    id_input = b"".join(
        (
            b"\xa7",
            prefix,
            _metadata_cbor(
                ttl=ttl,
                priority=priority,
                message_id=None,
                hints_cbor=hints_cbor,
                correlation_id=correlation_id,
                trust_cbor=trust_cbor,
                nonce=nonce,
            ),
            tail,
        )
    )
    message_id = _message_id_of(id_input)
    meta = _metadata_cbor(
        ttl=ttl,
        priority=priority,
        message_id=message_id,
        hints_cbor=hints_cbor,
        correlation_id=correlation_id,
        trust_cbor=trust_cbor,
        nonce=nonce,
    )
    signed = b"\xa7" + prefix + meta + tail
    signature = identity.sign(signed)
    metadata = _fast(
        Metadata,
        {
            "message_id": message_id,
            "correlation_id": correlation_id,
            "priority": priority,
            "ttl": ttl,
            "routing_hints": hints,
            "trust_requirements": trust_requirements,
            "nonce": nonce,
        },
    )
    msg = _fast(
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
        },
    )
    wire = b"".join((b"\xa8", prefix, meta, _K_SIGNATURE, _bstr(signature), tail))
    _cache_encodings(msg, id_input, signed, wire)
    return msg


def _encodings(msg: KLPMessage) -> tuple[bytes, bytes, bytes]:
    """(id input, signed bytes, wire bytes) of a message, computed once and cached on it."""
    if msg._id_input is not None and msg._signed is not None and msg._wire is not None:
        return msg._id_input, msg._signed, msg._wire
    md, pl = msg.metadata, msg.payload
    _check_version(msg.version)
    _check_payload_fields(pl.content_type, pl.encryption, pl.compression)
    _check_metadata_fields(md.ttl, md.priority, md.correlation_id, md.routing_hints, md.trust_requirements)
    _check_message_id(md.message_id)
    _check_nonce(md.nonce)
    _check_timestamp(msg.timestamp_ms)
    if not isinstance(msg.signature, bytes):
        _fail(REASON_INVALID_STRUCTURE, "signature must be bytes")
    wire_data = _payload_wire_data(pl)
    id_input, signed, wire = _encode_all(
        version=msg.version,
        type_=_TYPES_BY_VALUE[MessageType(msg.type).value],
        source=msg.source,
        target=msg.target,
        payload_cbor=_payload_cbor(pl.content_type, wire_data, pl.encryption, pl.compression),
        metadata=md,
        signature=msg.signature,
        timestamp_ms=msg.timestamp_ms,
    )
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

_TOP_KEYS = frozenset(
    {"version", "type", "source", "target", "payload", "metadata", "signature", "timestamp"}
)
_PAYLOAD_KEYS = frozenset({"content_type", "data", "encryption", "compression"})
_META_REQUIRED = frozenset({"message_id", "nonce", "priority", "ttl", "routing_hints", "trust_requirements"})
_META_ALL = _META_REQUIRED | {"correlation_id"}
_TRUST_KEYS = frozenset({"minimum_trust_score", "required_endorsements", "verification_level"})
_HINT_KEYS = frozenset({"kind", "value"})
_SWITCH_REQUIRED = frozenset({"enabled"})
_SWITCH_ALL = frozenset({"enabled", "algorithm"})
_ENVELOPE_MAX_DEPTH = 5


def _map(what: str, value: Any, required: frozenset[str], allowed: frozenset[str]) -> dict[str, Any]:
    if type(value) is not dict:
        _fail(REASON_INVALID_STRUCTURE, f"{what} must be a map")
    keys = value.keys()
    if keys != required and not (required <= keys and keys <= allowed):
        missing = sorted(required - keys)
        extra = sorted(str(k)[:40] for k in keys - allowed)
        _fail(REASON_INVALID_STRUCTURE, f"{what}: missing {missing}, unexpected {extra}")
    return value


def _switch_of(what: str, value: Any, known: frozenset[str], reason: str) -> tuple[bool, str | None]:
    m = _map(what, value, _SWITCH_REQUIRED, _SWITCH_ALL)
    enabled, algorithm = m["enabled"], m.get("algorithm")
    _check_switch(what, enabled, algorithm, known, reason)
    return enabled, algorithm


_encryption_info = lru_cache(maxsize=16)(EncryptionInfo)
_compression_info = lru_cache(maxsize=16)(CompressionInfo)
_trust_requirements = lru_cache(maxsize=256)(TrustRequirements)
_NO_ENCRYPTION = EncryptionInfo()
_NO_COMPRESSION = CompressionInfo()


def _address(what: str, value: Any) -> KLPAddress:
    if type(value) is not str:
        _fail(REASON_INVALID_STRUCTURE, f"{what} must be a klp:// text address")
    try:
        address = KLPAddress.parse(value)
    except AddressError as exc:
        _fail(REASON_INVALID_ADDRESS, f"{what}: {exc}")
    if str(address) != value:
        _fail(REASON_INVALID_ADDRESS, f"{what} is not in canonical form {str(address)[:80]!r}")
    return address


def _hint(value: Any) -> RoutingHint:
    h = _map("routing hint", value, _HINT_KEYS, _HINT_KEYS)
    return RoutingHint(
        _check_text_field("routing hint kind", h["kind"]),
        _check_text_field("routing hint value", h["value"], MAX_HINT_VALUE),
    )


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

    def to_message(self, max_inline: int = MAX_MESSAGE_BYTES) -> KLPMessage:
        """Decompress and decode the payload (bounded) into a KLPMessage. Raises EnvelopeError."""
        value = _decode_payload_data(
            self.wire_data, self.content_type, self.encryption, self.compression, max_inline
        )
        payload = _fast(
            Payload,
            {
                "content_type": self.content_type,
                "data": value,
                "encryption": self.encryption,
                "compression": self.compression,
                "_wire_data": self.wire_data,
            },
        )
        msg = _fast(
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
            },
        )
        _cache_encodings(msg, self.id_input, self.signed, self.wire)
        return msg


def decode_envelope(data: bytes, max_size: int = MAX_MESSAGE_BYTES) -> DecodedEnvelope:
    """Decode and validate an envelope's structure and encoding; not its id, signature or payload.

    Raises EnvelopeError(reason).
    """
    if len(data) > max_size:
        _fail(REASON_MESSAGE_TOO_LARGE, f"{len(data)} bytes > {max_size}")
    data = bytes(data)
    try:
        # Trailing bytes are caught below: the input must equal the re-encoding of its content.
        top = cbor2.loads(
            data,
            tag_hook=_reject_tag,
            semantic_decoders=_NO_TAGS,
            max_depth=_ENVELOPE_MAX_DEPTH,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            strict_hashable_types=True,
        )
    except Exception as exc:
        _fail(REASON_MALFORMED, f"not a CBOR item: {str(exc)[:200]}")
    top = _map("message", top, _TOP_KEYS, _TOP_KEYS)
    version = _check_version(top["version"])
    type_value = top["type"]
    if type(type_value) is not str:
        _fail(REASON_INVALID_STRUCTURE, "type must be text")
    type_ = _TYPES_BY_VALUE.get(type_value)
    if type_ is None:
        _fail(REASON_UNKNOWN_MESSAGE_TYPE, f"unknown message type {type_value[:60]!r}")
    source = _address("source", top["source"])
    target = _address("target", top["target"])

    pl = _map("payload", top["payload"], _PAYLOAD_KEYS, _PAYLOAD_KEYS)
    content_type = _check_text_field("content_type", pl["content_type"])
    wire_data = pl["data"]
    if type(wire_data) is not bytes:
        _fail(REASON_INVALID_STRUCTURE, "payload.data must be a byte string")
    enc = _encryption_info(
        *_switch_of("encryption", pl["encryption"], ENCRYPTION_ALGORITHMS, REASON_UNSUPPORTED_ENCRYPTION)
    )
    comp = _compression_info(
        *_switch_of("compression", pl["compression"], COMPRESSION_ALGORITHMS, REASON_UNSUPPORTED_COMPRESSION)
    )

    md = _map("metadata", top["metadata"], _META_REQUIRED, _META_ALL)
    message_id = _check_message_id(md["message_id"])
    nonce = _check_nonce(md["nonce"], REASON_INVALID_STRUCTURE)
    correlation_id = md.get("correlation_id")
    if "correlation_id" in md:  # absent when unset, never null
        _check_text_field("correlation_id", correlation_id)
    raw_priority = md["priority"]
    priority = _PRIORITIES_BY_VALUE.get(raw_priority) if type(raw_priority) is int else None
    if priority is None:
        _fail(REASON_INVALID_STRUCTURE, "priority must be 1, 5, 8 or 10")
    ttl = _check_ttl(md["ttl"])
    raw_hints = md["routing_hints"]
    if type(raw_hints) is not list or len(raw_hints) > MAX_ROUTING_HINTS:
        _fail(REASON_INVALID_STRUCTURE, f"routing_hints must be a list of at most {MAX_ROUTING_HINTS}")
    hints = tuple(_hint(h) for h in raw_hints) if raw_hints else ()
    tr = _map("trust_requirements", md["trust_requirements"], _TRUST_KEYS, _TRUST_KEYS)
    score, endorsements = tr["minimum_trust_score"], tr["required_endorsements"]
    if type(score) is not float:
        _fail(REASON_INVALID_STRUCTURE, "minimum_trust_score must be a float")
    _check_trust(score, endorsements)
    level_value = tr["verification_level"]
    level = _LEVELS_BY_VALUE.get(level_value) if type(level_value) is str else None
    if level is None:
        _fail(REASON_INVALID_STRUCTURE, "verification_level must be none/basic/strong/cryptographic")
    metadata = _fast(
        Metadata,
        {
            "message_id": message_id,
            "correlation_id": correlation_id,
            "priority": priority,
            "ttl": ttl,
            "routing_hints": hints,
            "trust_requirements": _trust_requirements(score, endorsements, level),
            "nonce": nonce,
        },
    )

    signature = top["signature"]
    if type(signature) is not bytes:
        _fail(REASON_INVALID_STRUCTURE, "signature must be a byte string")
    timestamp_ms = _check_timestamp(top["timestamp"])

    id_input, signed, wire = _encode_all(
        version=version,
        type_=type_,
        source=source,
        target=target,
        payload_cbor=_payload_cbor(content_type, wire_data, enc, comp),
        metadata=metadata,
        signature=signature,
        timestamp_ms=timestamp_ms,
    )
    if wire != data:
        # Also catches trailing bytes. One message has exactly one encoding.
        _fail(REASON_MALFORMED, "not the deterministic CBOR encoding (RFC 8949 §4.2.1) of its content")
    return DecodedEnvelope(
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
        wire,
    )


def decode_message(data: bytes, max_size: int = MAX_MESSAGE_BYTES) -> KLPMessage:
    """Decode a wire message and check its content address, but not its signature (see
    :func:`verify_signature`, or run it through the pipeline). Raises EnvelopeError(reason)."""
    envelope = decode_envelope(data, max_size)
    if envelope.computed_id() != envelope.metadata.message_id:
        _fail(REASON_MESSAGE_ID_MISMATCH, "message_id is not the content address of the message")
    return envelope.to_message(max_size)


# -- JSON view -----------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {
            (k if isinstance(k, str) else base64.b64encode(bytes(k)).decode("ascii")): _jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def message_to_json(msg: KLPMessage) -> dict[str, Any]:
    """A JSON-ready view for the CLI, API and logs (bytes as base64). Not a wire format."""
    pl, md, tr = msg.payload, msg.metadata, msg.metadata.trust_requirements
    metadata: dict[str, Any] = {
        "message_id": md.message_id,
        "nonce": md.nonce.hex(),
        "priority": int(md.priority),
        "ttl": md.ttl,
        "routing_hints": [{"kind": h.kind, "value": h.value} for h in md.routing_hints],
        "trust_requirements": {
            "minimum_trust_score": float(tr.minimum_trust_score),
            "required_endorsements": tr.required_endorsements,
            "verification_level": VerificationLevel(tr.verification_level).value,
        },
    }
    if md.correlation_id is not None:
        metadata["correlation_id"] = md.correlation_id

    def switch(enabled: bool, algorithm: str | None) -> dict[str, Any]:
        return {"enabled": enabled} if algorithm is None else {"enabled": enabled, "algorithm": algorithm}

    return {
        "version": msg.version,
        "type": MessageType(msg.type).value,
        "source": str(msg.source),
        "target": str(msg.target),
        "payload": {
            "content_type": pl.content_type,
            "data": _jsonable(pl.data),
            "encryption": switch(pl.encryption.enabled, pl.encryption.algorithm),
            "compression": switch(pl.compression.enabled, pl.compression.algorithm),
        },
        "metadata": metadata,
        "signature": base64.b64encode(bytes(msg.signature)).decode("ascii"),
        "timestamp": msg.timestamp_ms,
    }
