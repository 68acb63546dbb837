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
_PRIORITY_CBOR: dict[int, bytes] = {p: _head(0, int(p)) for p in Priority}
_TYPES_BY_VALUE = {t.value: t for t in MessageType}
_PRIORITIES_BY_VALUE = {int(p): p for p in Priority}
_LEVELS_BY_VALUE = {v.value: v for v in VerificationLevel}
_VERSION_RE = re.compile(r"1\.(?:0|[1-9][0-9]{0,3})")
_MESSAGE_ID_RE = re.compile(r"[0-9a-f]{32}")
_MESSAGE_ID_MATCH = _MESSAGE_ID_RE.fullmatch
NONCE_BYTES = 8
MIN_NONCE_BYTES = 8
MAX_NONCE_BYTES = 32


@lru_cache(maxsize=64)
def _switch_cbor(enabled: bool, algorithm: str | None) -> bytes:
    """Encoding of an EncryptionInfo/CompressionInfo map (same shape)."""
    if algorithm is None:
        return b"\xa1" + _K_ENABLED + (b"\xf5" if enabled else b"\xf4")
    return b"\xa2" + _K_ENABLED + (b"\xf5" if enabled else b"\xf4") + _K_ALGORITHM + _text(algorithm)


# The envelope is assembled from these parts, in the map's canonical key order:
#   a8 | front: type, source, target, "payload" a4 "data" | bstr head, data | mid: encryption,
#   compression, content_type, version, "metadata" | metadata map head | meta_head: ttl, nonce,
#   priority | message_id | meta_tail: routing_hints, correlation_id?, trust_requirements |
#   signature | tail: timestamp
# The id input drops message_id (one metadata entry fewer) and signature (a7); the signed bytes
# drop signature. The parts that conversations repeat (addresses, switches, trust) are cached.


@lru_cache(maxsize=1024)
def _front_cbor(type_value: str, source: str, target: str) -> bytes:
    """From ``type`` to the ``payload`` map's head and its ``data`` key."""
    return b"".join(
        (
            _K_TYPE,
            _text(type_value),
            _K_SOURCE,
            _text(source),
            _K_TARGET,
            _text(target),
            _K_PAYLOAD,
            b"\xa4",
            _K_DATA,
        )
    )


@lru_cache(maxsize=256)
def _mid_cbor(
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
            _K_ENCRYPTION,
            _switch_cbor(enc_enabled, enc_algorithm),
            _K_COMPRESSION,
            _switch_cbor(comp_enabled, comp_algorithm),
            _K_CONTENT_TYPE,
            _text(content_type),
            _K_VERSION,
            _text(version),
            _K_METADATA,
        )
    )


def _trust_fields_cbor(score: float, endorsements: int, level: str) -> bytes:
    return b"".join(
        (
            b"\xa3",
            _K_LEVEL,
            _text(VerificationLevel(level).value),
            _K_MIN_SCORE,
            cbor2.dumps(float(score), canonical=True),
            _K_ENDORSEMENTS,
            _head(0, endorsements),
        )
    )


_trust_fields_cached = lru_cache(maxsize=256)(_trust_fields_cbor)


def _is_negative_zero(score: float) -> bool:
    """-0.0 equals 0.0 as a cache key but has its own encoding (f9 8000), so it is never cached:
    a cache shared between the two would re-encode one as the other."""
    return not score and math.copysign(1.0, score) < 0.0


def _trust_cbor(score: float, endorsements: int, level: str) -> bytes:
    """Encoding of the trust_requirements map (validated fields)."""
    if _is_negative_zero(score):
        return _trust_fields_cbor(score, endorsements, level)
    return _trust_fields_cached(score, endorsements, level)


def _hints_cbor(hints: tuple[RoutingHint, ...]) -> bytes:
    if not hints:
        return b"\x80"
    parts = [_head(4, len(hints))]
    for hint in hints:
        parts += (b"\xa2", _K_KIND, _text(hint.kind), _K_VALUE, _text(hint.value))
    return b"".join(parts)


_MAP_HEADS = [bytes((0xA0 | n,)) for n in range(24)]
_K_MESSAGE_ID_HEAD = _K_MESSAGE_ID + b"\x78\x20"  # the key, then the head of 32 text bytes
_K_SIGNATURE_64 = _K_SIGNATURE + b"\x58\x40"  # the key, then the head of 64 bytes
_K_TIMESTAMP_U64 = _K_TIMESTAMP + b"\x1b"
_NO_HINTS_TRUST = _K_ROUTING_HINTS + b"\x80" + _K_TRUST  # no routing hints, no correlation id


_UINT_HEADS = [_head(0, n) for n in range(256)]


def _meta_head_cbor(ttl: int, nonce: bytes, priority: int) -> bytes:
    """The metadata entries before ``message_id``: ttl, nonce, priority (validated values)."""
    n = len(nonce)
    return b"".join(
        (
            _K_TTL,
            _UINT_HEADS[ttl] if ttl < 256 else _head(0, ttl),
            _K_NONCE,
            _SHORT_HEADS[2][n] if n < 24 else _head(2, n),
            nonce,
            _K_PRIORITY,
            _PRIORITY_CBOR[priority],
        )
    )


def _meta_tail_cbor(hints: tuple[RoutingHint, ...], correlation_id: str | None, trust_cbor: bytes) -> bytes:
    """The metadata entries after ``message_id``: routing_hints, correlation_id?, trust_requirements."""
    if not hints and correlation_id is None:
        return _NO_HINTS_TRUST + trust_cbor
    parts = [_K_ROUTING_HINTS, _hints_cbor(hints)]
    if correlation_id is not None:
        parts += (_K_CORRELATION_ID, _text(correlation_id))
    parts += (_K_TRUST, trust_cbor)
    return b"".join(parts)


def _tail_cbor(timestamp_ms: int) -> bytes:
    if timestamp_ms >= 0x100000000:
        return _K_TIMESTAMP_U64 + timestamp_ms.to_bytes(8, "big")
    return _K_TIMESTAMP + _head(0, timestamp_ms)


def _encode_all(
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
    data_head = _SHORT_HEADS[2][n] if n < 24 else _head(2, n)
    id_cbor = _K_MESSAGE_ID_HEAD + message_id.encode("ascii")
    n = len(signature)
    sig_head = _K_SIGNATURE_64 if n == 64 else _K_SIGNATURE + _head(2, n)
    map_head = _MAP_HEADS[meta_n + 1]
    return (
        b"".join((b"\xa7", front, data_head, wire_data, mid, _MAP_HEADS[meta_n], meta_head, meta_tail, tail)),
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


_PLAIN_SCALARS = frozenset({str, bytes, float, bool, type(None)})
_INT_LIMIT = 1 << 64  # CBOR's major types 0 and 1 hold -2**64 .. 2**64-1; beyond that are bignum tags


def _is_plain(value: Any) -> bool:
    """True for a flat dict (text keys) or list of null/bool/int/float/str/bytes: values whose
    deterministic CBOR a KLP decoder accepts, so encode_data need not decode them back to check."""
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                return False
        items = value.values()
    elif kind is list:
        items = value
    else:
        return False
    for item in items:
        kind = type(item)
        if kind is int:
            if not -_INT_LIMIT <= item < _INT_LIMIT:
                return False
        elif kind not in _PLAIN_SCALARS:
            return False
    return True


def encode_data(data: Any) -> bytes:
    """Deterministic CBOR of a payload value; refuses values a KLP decoder would refuse."""
    kind = type(data)
    if kind is str:  # the common payloads, encoded directly (the same bytes cbor2 writes)
        try:
            raw: bytes = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            _fail(REASON_MALFORMED_PAYLOAD, f"data is not CBOR-encodable: {exc}")
        n = len(raw)
        return (_SHORT_HEADS[3][n] if n < 24 else _head(3, n)) + raw
    if kind is bytes:
        blob: bytes = data
        return _head(2, len(blob)) + blob
    try:
        raw = cbor2.dumps(data, canonical=True)
    except Exception as exc:
        _fail(REASON_MALFORMED_PAYLOAD, f"data is not CBOR-encodable: {exc}")
    if _is_plain(data):
        return raw
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
    return _wire_data_of(payload.content_type, payload.data, payload.encryption, payload.compression)


def _wire_data_of(content_type: str, data: Any, enc: EncryptionInfo, comp: CompressionInfo) -> bytes:
    if enc.enabled or content_type != CONTENT_TYPE_CBOR:
        if not isinstance(data, bytes | bytearray | memoryview):
            _fail(
                REASON_MALFORMED_PAYLOAD,
                "data must be bytes unless the content type is application/cbor and it is not encrypted",
            )
        raw = bytes(data)
    else:
        raw = encode_data(data)
    if comp.enabled and not enc.enabled:
        if comp.algorithm != COMPRESSION_GZIP:
            _fail(REASON_UNSUPPORTED_COMPRESSION, f"unknown compression {comp.algorithm!r}")
        raw = zlib.compress(raw, 6, wbits=31)
    return raw


def _string_item(raw: bytes) -> Any:
    """The value of ``raw`` when it is exactly one definite-length text or byte string (the common
    payloads, decoded without setting up a cbor2 decoder), else None. Invalid UTF-8 raises."""
    if not raw:
        return None
    ib = raw[0]
    if not 0x40 <= ib <= 0x7A or 0x5B <= ib <= 0x5F:
        return None
    info = ib & 0x1F
    if info < 24:
        start, n = 1, info
    else:
        start = 1 + (1 << (info - 24))
        n = int.from_bytes(raw[1:start], "big")
    if start + n != len(raw):  # truncated, or trailing bytes: let the strict decoder say which
        return None
    if ib >= 0x60:
        return raw[start:].decode("utf-8")  # strict, like cbor2's str_errors="strict"
    return raw[start:]


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
        value = _string_item(raw)
        if value is None:
            value = _strict_loads(raw, MAX_DATA_DEPTH)
    except Exception as exc:
        _fail(REASON_MALFORMED_PAYLOAD, f"payload data is not acceptable CBOR: {exc}")
    return value


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
    _check_switch("encryption", enc.enabled, enc.algorithm, ENCRYPTION_ALGORITHMS, REASON_UNSUPPORTED_ENCRYPTION)
    _check_switch("compression", comp.enabled, comp.algorithm, COMPRESSION_ALGORITHMS, REASON_UNSUPPORTED_COMPRESSION)


# -- building and encoding -----------------------------------------------------------------------


def _check_size(wire: bytes) -> None:
    """Refuse to produce what every decoder refuses: a payload that inflated under the 16 MiB cap can
    be echoed into a response far over the 1 MiB wire limit."""
    if len(wire) > MAX_MESSAGE_BYTES:
        _fail(REASON_MESSAGE_TOO_LARGE, f"{len(wire)} bytes > {MAX_MESSAGE_BYTES}")


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
    a field is out of bounds, when the message would exceed ``MAX_MESSAGE_BYTES`` (no decoder would
    take it), or when ``source`` names a peer id that is not ``identity``'s (such a message could
    never verify).
    """
    # (``type`` is a parameter here; the builtin is not needed.)
    type_ = type if type.__class__ is MessageType else _TYPES_BY_VALUE[MessageType(type).value]
    if priority.__class__ is not Priority:
        priority = Priority(priority)
    comp = CompressionInfo(True, compression) if compression is not None else _NO_COMPRESSION
    hints = tuple(routing_hints)
    if version is not KLP_VERSION:
        _check_version(version)
    if content_type is not CONTENT_TYPE_CBOR or comp is not _NO_COMPRESSION:
        _check_payload_fields(content_type, _NO_ENCRYPTION, comp)
    trust = trust_requirements
    _check_metadata_fields(ttl, priority, correlation_id, hints, trust)
    _check_timestamp(timestamp_ms)
    nonce = os.urandom(NONCE_BYTES) if nonce is None else _check_nonce(nonce)
    signer = signer_key_for(source.authority)
    if signer is not None and signer.raw != identity.public_key.raw:
        _fail(REASON_INVALID_STRUCTURE, "source authority is a peer id that is not the signing identity")

    wire_data = _wire_data_of(content_type, data, _NO_ENCRYPTION, comp)
    n = len(wire_data)
    front = _front_cbor(type_, str(source), str(target))
    data_head = _SHORT_HEADS[2][n] if n < 24 else _head(2, n)
    mid = _mid_cbor(False, None, comp.enabled, comp.algorithm, content_type, version)
    meta_n = 5 if correlation_id is None else 6
    meta_head = _meta_head_cbor(ttl, nonce, priority)
    meta_tail = _meta_tail_cbor(
        hints,
        correlation_id,
        _trust_cbor(trust.minimum_trust_score, trust.required_endorsements, trust.verification_level),
    )
    tail = _tail_cbor(timestamp_ms)
    id_input = b"".join((b"\xa7", front, data_head, wire_data, mid, _MAP_HEADS[meta_n], meta_head, meta_tail, tail))
    message_id = hashlib.sha256(id_input).digest()[:16].hex()
    body = b"".join(
        (
            front,
            data_head,
            wire_data,
            mid,
            _MAP_HEADS[meta_n + 1],
            meta_head,
            _K_MESSAGE_ID_HEAD,
            message_id.encode("ascii"),
            meta_tail,
        )
    )
    signed = b"".join((b"\xa7", body, tail))
    signature = identity.sign(signed)
    n = len(signature)
    wire = b"".join((b"\xa8", body, _K_SIGNATURE_64 if n == 64 else _K_SIGNATURE + _head(2, n), signature, tail))
    _check_size(wire)
    payload = _fast(
        Payload,
        {
            "content_type": content_type,
            "data": data,
            "encryption": _NO_ENCRYPTION,
            "compression": comp,
            "_wire_data": wire_data,
        },
    )
    metadata = _fast(
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
    return _fast(
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
    _check_version(msg.version)
    _check_payload_fields(pl.content_type, pl.encryption, pl.compression)
    _check_metadata_fields(md.ttl, md.priority, md.correlation_id, md.routing_hints, md.trust_requirements)
    _check_message_id(md.message_id)
    _check_nonce(md.nonce)
    _check_timestamp(msg.timestamp_ms)
    if not isinstance(msg.signature, bytes):
        _fail(REASON_INVALID_STRUCTURE, "signature must be bytes")
    enc, comp, trust = pl.encryption, pl.compression, md.trust_requirements
    id_input, signed, wire = _encode_all(
        _front_cbor(_TYPES_BY_VALUE[MessageType(msg.type).value], str(msg.source), str(msg.target)),
        _payload_wire_data(pl),
        _mid_cbor(enc.enabled, enc.algorithm, comp.enabled, comp.algorithm, pl.content_type, msg.version),
        5 if md.correlation_id is None else 6,
        _meta_head_cbor(md.ttl, md.nonce, md.priority),
        md.message_id,
        _meta_tail_cbor(
            md.routing_hints,
            md.correlation_id,
            _trust_cbor(trust.minimum_trust_score, trust.required_endorsements, trust.verification_level),
        ),
        msg.signature,
        _tail_cbor(msg.timestamp_ms),
    )
    _check_size(wire)
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

_TOP_KEYS = frozenset({"version", "type", "source", "target", "payload", "metadata", "signature", "timestamp"})
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


@lru_cache(maxsize=256)
def _decoded_trust(score: float, endorsements: int, level: VerificationLevel) -> tuple[TrustRequirements, bytes]:
    """The TrustRequirements of validated fields, and its encoding."""
    return TrustRequirements(score, endorsements, level), _trust_fields_cbor(score, endorsements, level)


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


@lru_cache(maxsize=4096)
def _canonical_address(value: str) -> KLPAddress | None:
    """The address ``value`` spells if it is valid and canonical, else None (then :func:`_address`
    says why). Cached: a conversation repeats its two addresses in every message."""
    try:
        address = KLPAddress.parse(value)
    except AddressError:
        return None
    return address if str(address) == value else None


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

    def to_message(self, max_inline: int = MAX_MESSAGE_BYTES, *, decode_payload: bool = True) -> KLPMessage:
        """Decompress and decode the payload (bounded) into a KLPMessage. Raises EnvelopeError.

        With ``decode_payload=False`` the payload's ``data`` is None: enough to answer a message
        that is refused before its payload is worth decoding (a replay, a stale one).
        """
        value = (
            _decode_payload_data(self.wire_data, self.content_type, self.encryption, self.compression, max_inline)
            if decode_payload
            else None
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
        return _fast(
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
    # Each check below has a fast test for the usual value; anything else goes to the full check,
    # which rejects with the precise reason (or, for an unusual but valid value, accepts it).
    if type(top) is not dict or top.keys() != _TOP_KEYS:
        top = _map("message", top, _TOP_KEYS, _TOP_KEYS)
    version = top["version"]
    if type(version) is not str or version != KLP_VERSION:
        _check_version(version)
    type_value = top["type"]
    if type(type_value) is not str:
        _fail(REASON_INVALID_STRUCTURE, "type must be text")
    type_ = _TYPES_BY_VALUE.get(type_value)
    if type_ is None:
        _fail(REASON_UNKNOWN_MESSAGE_TYPE, f"unknown message type {type_value[:60]!r}")
    source_text, target_text = top["source"], top["target"]
    source = _canonical_address(source_text) if type(source_text) is str else None
    if source is None:
        source = _address("source", source_text)
    target = _canonical_address(target_text) if type(target_text) is str else None
    if target is None:
        target = _address("target", target_text)

    pl = top["payload"]
    if type(pl) is not dict or pl.keys() != _PAYLOAD_KEYS:
        pl = _map("payload", pl, _PAYLOAD_KEYS, _PAYLOAD_KEYS)
    content_type = pl["content_type"]
    if type(content_type) is not str or content_type != CONTENT_TYPE_CBOR:
        _check_text_field("content_type", content_type)
    wire_data = pl["data"]
    if type(wire_data) is not bytes:
        _fail(REASON_INVALID_STRUCTURE, "payload.data must be a byte string")
    raw_switch = pl["encryption"]
    if type(raw_switch) is dict and len(raw_switch) == 1 and raw_switch.get("enabled") is False:
        enc, enc_enabled, enc_algorithm = _NO_ENCRYPTION, False, None
    else:
        enc_enabled, enc_algorithm = _switch_of(
            "encryption", raw_switch, ENCRYPTION_ALGORITHMS, REASON_UNSUPPORTED_ENCRYPTION
        )
        enc = _encryption_info(enc_enabled, enc_algorithm)
    raw_switch = pl["compression"]
    if type(raw_switch) is dict and len(raw_switch) == 1 and raw_switch.get("enabled") is False:
        comp, comp_enabled, comp_algorithm = _NO_COMPRESSION, False, None
    else:
        comp_enabled, comp_algorithm = _switch_of(
            "compression", raw_switch, COMPRESSION_ALGORITHMS, REASON_UNSUPPORTED_COMPRESSION
        )
        comp = _compression_info(comp_enabled, comp_algorithm)

    md = top["metadata"]
    if type(md) is not dict or (md.keys() != _META_REQUIRED and md.keys() != _META_ALL):
        md = _map("metadata", md, _META_REQUIRED, _META_ALL)
    message_id = md["message_id"]
    if type(message_id) is not str or _MESSAGE_ID_MATCH(message_id) is None:
        _check_message_id(message_id)
    nonce = md["nonce"]
    if type(nonce) is not bytes or not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        _check_nonce(nonce, REASON_INVALID_STRUCTURE)
    correlation_id = md.get("correlation_id")
    if "correlation_id" in md:  # absent when unset, never null
        _check_text_field("correlation_id", correlation_id)
    raw_priority = md["priority"]
    priority = _PRIORITIES_BY_VALUE.get(raw_priority) if type(raw_priority) is int else None
    if priority is None:
        _fail(REASON_INVALID_STRUCTURE, "priority must be 1, 5, 8 or 10")
    ttl = md["ttl"]
    if type(ttl) is not int or not 0 <= ttl <= MAX_TTL_SECONDS:
        _check_ttl(ttl)
    raw_hints = md["routing_hints"]
    if type(raw_hints) is not list or len(raw_hints) > MAX_ROUTING_HINTS:
        _fail(REASON_INVALID_STRUCTURE, f"routing_hints must be a list of at most {MAX_ROUTING_HINTS}")
    hints = tuple(_hint(h) for h in raw_hints) if raw_hints else ()
    tr = md["trust_requirements"]
    if type(tr) is not dict or tr.keys() != _TRUST_KEYS:
        tr = _map("trust_requirements", tr, _TRUST_KEYS, _TRUST_KEYS)
    score, endorsements = tr["minimum_trust_score"], tr["required_endorsements"]
    if type(score) is not float:
        _fail(REASON_INVALID_STRUCTURE, "minimum_trust_score must be a float")
    if (
        type(endorsements) is not int
        or not 0.0 <= score <= MAX_TRUST_SCORE
        or not 0 <= endorsements <= MAX_ENDORSEMENTS
    ):
        _check_trust(score, endorsements)
    level_value = tr["verification_level"]
    level = _LEVELS_BY_VALUE.get(level_value) if type(level_value) is str else None
    if level is None:
        _fail(REASON_INVALID_STRUCTURE, "verification_level must be none/basic/strong/cryptographic")
    if score or math.copysign(1.0, score) > 0.0:
        trust, trust_cbor = _decoded_trust(score, endorsements, level)
    else:  # -0.0: see _is_negative_zero, never from (or into) a cache
        trust, trust_cbor = _decoded_trust.__wrapped__(score, endorsements, level)
    metadata = _fast(
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
        _fail(REASON_INVALID_STRUCTURE, "signature must be a byte string")
    timestamp_ms = top["timestamp"]
    if type(timestamp_ms) is not int or not 0 <= timestamp_ms < 1 << 53:
        _check_timestamp(timestamp_ms)

    id_input, signed, wire = _encode_all(
        _front_cbor(type_, source_text, target_text),
        wire_data,
        _mid_cbor(enc_enabled, enc_algorithm, comp_enabled, comp_algorithm, content_type, version),
        5 if correlation_id is None else 6,
        _meta_head_cbor(ttl, nonce, priority),
        message_id,
        _meta_tail_cbor(hints, correlation_id, trust_cbor),
        signature,
        _tail_cbor(timestamp_ms),
    )
    if wire != data:
        # Also catches trailing bytes. One message has exactly one encoding.
        _fail(REASON_MALFORMED, "not the deterministic CBOR encoding (RFC 8949 §4.2.1) of its content")
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
