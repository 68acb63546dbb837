"""Why a KLP message is refused: the fixed, public vocabulary of rejection reasons.

A reason is a short machine-readable code that travels back to the sender in a signed
``rejected(reason)`` answer and shows up in logs and dashboards; it never carries free text
from the network. The codec raises the first group (as :class:`EnvelopeError`), the pipeline
gives the second; :data:`REJECTION_REASONS` is every reason either can give, and neither ever
invents another.
"""

from __future__ import annotations

from typing import NoReturn

# -- raised by the codec: the bytes are not an acceptable envelope --------------------------------

REASON_MESSAGE_TOO_LARGE = "message_too_large"
"""The encoded message is larger than the receiver's message limit."""
REASON_MALFORMED = "malformed"
"""Not one CBOR item, or not the deterministic encoding of its own content."""
REASON_INVALID_STRUCTURE = "invalid_structure"
"""A field is missing, unexpected, of the wrong type or out of its bounds."""
REASON_UNSUPPORTED_VERSION = "unsupported_version"
"""The envelope's version is not 1.x."""
REASON_UNKNOWN_MESSAGE_TYPE = "unknown_message_type"
"""The type is none of the seed's message types."""
REASON_INVALID_ADDRESS = "invalid_address"
"""The source or target is not a canonical ``klp://`` address."""
REASON_UNSUPPORTED_ENCRYPTION = "unsupported_encryption"
"""The payload is encrypted with a suite this node does not know."""
REASON_UNSUPPORTED_COMPRESSION = "unsupported_compression"
"""The payload is compressed with an algorithm this node does not know."""
REASON_MESSAGE_ID_MISMATCH = "message_id_mismatch"
"""The message id is not the content address of the message."""
REASON_MALFORMED_PAYLOAD = "malformed_payload"
"""The payload data is not acceptable (bad gzip, bad CBOR, a tag, a non-text map key)."""
REASON_DECOMPRESSION_BOMB = "decompression_bomb"
"""The compressed payload inflates beyond what any answer could carry."""
REASON_PAYLOAD_TOO_COMPLEX = "payload_too_complex"
"""The payload holds more items (or nests deeper) than the receiver decodes."""

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

# -- given by the pipeline: a well-formed envelope this node will not act on ----------------------

REASON_UNKNOWN_SIGNER = "unknown_signer"
"""The source authority has no key we can verify (a name authority, until name records exist)."""
REASON_INVALID_SIGNATURE = "invalid_signature"
"""The signature is not the source authority's over the message."""
REASON_SOURCE_MISMATCH = "source_mismatch"
"""The message is signed by someone other than the peer that sent it on this connection: a relayed or
stolen message (relaying, when it comes, uses an explicit envelope that names the relay)."""
REASON_NOT_FOR_THIS_NODE = "not_for_this_node"
"""The message is addressed to another node, so it was meant for someone else and replayed to us."""
REASON_TIMESTAMP_OUT_OF_WINDOW = "timestamp_out_of_window"
"""The timestamp is older than the receiver's past skew allows, or further ahead than its (small)
future skew allows."""
REASON_EXPIRED = "expired"
"""The message's TTL has run out."""
REASON_REPLAY = "replay"
"""This message id was already accepted and is still remembered."""
REASON_REPLAY_CACHE_FULL = "replay_cache_full"
"""The sender holds its whole share of the replay cache (or the cache is full): try again later."""
REASON_INSUFFICIENT_TRUST = "insufficient_trust"
"""The receiver's trust in the sender is below the receiver's floor for tasks, or below what the
sender itself asked for (whichever is higher)."""
REASON_INSUFFICIENT_ENDORSEMENTS = "insufficient_endorsements"
"""The sender asked to be held to endorsements it does not have."""
REASON_UNSUPPORTED_MESSAGE_TYPE = "unsupported_message_type"
"""A valid type that this node does not handle."""

PIPELINE_REASONS = frozenset(
    {
        REASON_UNKNOWN_SIGNER,
        REASON_INVALID_SIGNATURE,
        REASON_SOURCE_MISMATCH,
        REASON_NOT_FOR_THIS_NODE,
        REASON_TIMESTAMP_OUT_OF_WINDOW,
        REASON_EXPIRED,
        REASON_REPLAY,
        REASON_REPLAY_CACHE_FULL,
        REASON_INSUFFICIENT_TRUST,
        REASON_INSUFFICIENT_ENDORSEMENTS,
        REASON_UNSUPPORTED_MESSAGE_TYPE,
    }
)

# Every reason the codec or the pipeline can give, for dashboards and tests.
REJECTION_REASONS = CODEC_REASONS | PIPELINE_REASONS


class EnvelopeError(ValueError):
    """A message that cannot be encoded or decoded; ``reason`` is one of :data:`CODEC_REASONS`."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def fail(reason: str, detail: str = "") -> NoReturn:
    """Raise :class:`EnvelopeError` (the codec's one way to refuse)."""
    raise EnvelopeError(reason, detail)
