"""A JSON-ready view of a KLP message for the CLI, the API and logs. Not a wire format: the wire is
deterministic CBOR (:mod:`kosmesh.klp.envelope`)."""

from __future__ import annotations

import base64
from typing import Any

from kosmesh.klp.model import KLPMessage, MessageType, VerificationLevel


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
