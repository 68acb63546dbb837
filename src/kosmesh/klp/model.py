"""The KLP data model: the seed's envelope fields (III.A) as frozen dataclasses, their enums, and the
bounds every message must keep.

Pure data: how a message is encoded lives in :mod:`kosmesh.klp.envelope`, the rules its fields obey
in :mod:`kosmesh.klp.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, TypeVar

from kosmesh.klp.address import KLPAddress

_D = TypeVar("_D")

# -- constants and bounds -----------------------------------------------------------------------

KLP_VERSION = "1.0"
CONTENT_TYPE_CBOR = "application/cbor"
COMPRESSION_GZIP = "gzip"
COMPRESSION_ALGORITHMS = frozenset({COMPRESSION_GZIP})
# End-to-end encryption lands in a later issue; these are the suites the architecture names. A
# payload encrypted with one of them is carried as opaque bytes; any other algorithm is refused.
ENCRYPTION_ALGORITHMS = frozenset({"x25519-hkdf-sha256-aes-256-gcm", "hpke-x25519-sha256-aes-256-gcm"})

MAX_MESSAGE_BYTES = 1 << 20
# A compressed payload inflates to at most this: no message (so no answer echoing it) can be larger.
MAX_DECOMPRESSED_BYTES = MAX_MESSAGE_BYTES
MAX_DATA_DEPTH = 64
# CBOR items (every value, key and container counts one) in one payload. This bounds the CPU a message
# costs: checking it (~0.4 µs an item), decoding it and encoding an answer that echoes it (~0.7 µs an
# item at worst) stay near 20 ms. Bulk data travels as one byte string, which is one item.
MAX_DATA_ITEMS = 1 << 14
MAX_ROUTING_HINTS = 32
MAX_TEXT_FIELD = 256
MAX_HINT_VALUE = 1024
MAX_TTL_SECONDS = 30 * 24 * 3600
MAX_TRUST_SCORE = 10.0
MAX_ENDORSEMENTS = 1024

NONCE_BYTES = 8
MIN_NONCE_BYTES = 8
MAX_NONCE_BYTES = 32

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


NO_TRUST_REQUIREMENTS = TrustRequirements()


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


def new_validated(cls: type[_D], fields: dict[str, Any]) -> _D:
    """Construct a frozen dataclass from values the codec has already validated, without the
    per-field ``object.__setattr__`` of the generated ``__init__`` (hot path: every message)."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj
