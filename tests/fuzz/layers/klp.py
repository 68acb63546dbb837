"""Fuzz targets for KLP: framing, the envelope codec, the pipeline (with correctly signed hostile
envelopes, so the fuzzer gets past the signature), payload inflation, addresses."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import zlib
from typing import Any

import cbor2

from kosmesh.codec.varint import encode_uvarint
from kosmesh.klp import (
    CODEC_REASONS,
    CONTENT_TYPE_CBOR,
    ENCRYPTION_ALGORITHMS,
    KLP_VERSION,
    MAX_MESSAGE_BYTES,
    REASON_MALFORMED,
    REASON_REPLAY,
    REJECTION_REASONS,
    Accepted,
    AddressError,
    CheckResult,
    EnvelopeError,
    FrameReader,
    FramingError,
    KLPAddress,
    KLPMessage,
    KLPProcessor,
    MessageType,
    Priority,
    ProcessingResult,
    Rejected,
    RoutingHint,
    TrustRequirements,
    VerificationLevel,
    build_message,
    compute_message_id,
    decode_envelope,
    decode_message,
    encode_frame,
    encode_message,
    make_response,
    message_to_json,
    parse_response,
    signing_bytes,
    verify_signature,
)
from kosmesh.klp.address import signer_key_for
from kosmesh.klp.cbor import NO_TAGS, reject_tag
from kosmesh.klp.payload import encode_data
from tests.fuzz.inputs import (
    ALICE,
    ALICE_AGENT,
    ALICE_PEER,
    BOB,
    BOB_NODE,
    BOB_PEER,
    KLP_NONCE,
    NOW,
    NOW_MS,
    Bytes,
    fails_again,
    options,
    reads,
)
from tests.fuzz.registry import fuzz_target

# -- KLP -------------------------------------------------------------------------------------------


def _klp_message(**overrides: Any) -> KLPMessage:
    """A valid, deterministic message from Alice's agent to Bob's node."""
    fields: dict[str, Any] = {
        "type": MessageType.TASK_REQUEST,
        "source": ALICE_AGENT,
        "target": BOB_NODE,
        "data": {"task": "echo", "text": "hello", "n": [1, 2.5, None, True, b"\x00"]},
        "timestamp_ms": NOW_MS,
        "nonce": KLP_NONCE,
    }
    fields.update(overrides)
    return build_message(ALICE, **fields)


def _klp_seed_messages() -> dict[str, bytes]:
    return {
        "request": encode_message(_klp_message()),
        "gzip": encode_message(_klp_message(data="compress me " * 20, compression="gzip")),
        "octets": encode_message(_klp_message(content_type="application/octet-stream", data=b"\x00\x01\x02")),
        "response": encode_message(
            _klp_message(
                type=MessageType.TASK_RESPONSE,
                data={"status": "processed", "reason": None, "retry_after": None, "result": "ok"},
                correlation_id="0" * 32,
                priority=Priority.HIGH,
                routing_hints=(RoutingHint("relay", str(BOB_PEER)),),
                trust_requirements=TrustRequirements(5.0, 0, VerificationLevel.STRONG),
            )
        ),
    }


def _klp_framing_seeds() -> dict[str, bytes]:
    messages = _klp_seed_messages()
    frames = encode_frame(messages["request"]) + encode_frame(messages["gzip"])
    return {
        "two-frames": b"\x00" + frames,
        "in-pieces": bytes([9 << 3]) + frames,
        "small-cap": b"\x05" + encode_frame(b"x" * 300, 300),
    }


_FRAME_LIMITS = (MAX_MESSAGE_BYTES, 0, 1, 127, 128, 300, 16383, 16384)


@fuzz_target(_klp_framing_seeds)
def klp_framing(data: bytes) -> bool:
    """KLP length-prefixed frame reader under several size caps, fed in pieces; the frames re-encode to
    exactly the bytes consumed and the buffer never holds more than one frame."""
    opt, body = options(data)
    limit = _FRAME_LIMITS[opt & 7]
    reader = FrameReader(limit)
    frames: list[bytes] = []
    fed = bytearray()
    for chunk in reads(body, opt >> 3):
        fed += chunk
        try:
            frames += reader.receive_data(chunk)
        except FramingError:
            return fails_again(lambda: reader.receive_data(b""), FramingError)
        assert reader.buffered <= len(encode_uvarint(limit)) + limit
    consumed = b"".join(encode_frame(frame, limit) for frame in frames)
    assert fed.startswith(consumed) and len(fed) - len(consumed) == reader.buffered
    return bool(frames) and reader.at_frame_boundary


@fuzz_target(_klp_seed_messages)
def klp_envelope(data: bytes) -> bool:
    """KLP envelope decode, content address and signature check, payload decode; what decodes re-encodes
    (from its fields, caches cleared) to the same bytes, and its payload value is encodable again."""
    try:
        envelope = decode_envelope(data)
    except EnvelopeError as exc:
        assert exc.reason in CODEC_REASONS, exc.reason
        return False
    assert envelope.wire == data
    signed_ok = envelope.verify_signature()
    try:
        message = envelope.to_message()
    except EnvelopeError as exc:
        assert exc.reason in CODEC_REASONS, exc.reason
        return False
    fresh = dataclasses.replace(message)
    assert encode_message(fresh) == data, "a decoded message must re-encode to its own bytes"
    assert signing_bytes(fresh) == envelope.signed
    assert verify_signature(fresh) == signed_ok
    payload = message.payload
    if payload.content_type == CONTENT_TYPE_CBOR and not payload.encryption.enabled:
        encode_data(payload.data)  # a value the decoder accepted must be sendable again (responses echo data)
    json.dumps(message_to_json(message))
    return compute_message_id(fresh) == message.message_id and signed_ok


_TYPES = (*(t.value for t in MessageType), "TASK_CANCEL")
_CONTENT_TYPES = (CONTENT_TYPE_CBOR, "application/octet-stream", "text/plain; charset=utf-8")
_VERSIONS = (KLP_VERSION, "1.7", "2.0")
_PRIORITIES = (1, 5, 8, 10, 3)
_TRUST_SCORES = (0.0, 0.5, 5.0, 6.0, 10.0, 10.5)
_LEVELS = (*(v.value for v in VerificationLevel), "paranoid")
_HOSTILE_SUPPORTED = frozenset(MessageType) - {MessageType.AGENT_MIGRATION}


def _canonical(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


# Fields the input may replace with a CBOR item of its own (or remove, with an empty item); the last two
# are replaced after sealing, so the id or the signature itself is what is wrong.
_OVERRIDABLE = (
    ("version",),
    ("type",),
    ("source",),
    ("target",),
    ("timestamp",),
    ("payload",),
    ("metadata",),
    ("extension",),
    ("payload", "content_type"),
    ("payload", "data"),
    ("payload", "encryption"),
    ("payload", "compression"),
    ("payload", "encryption", "algorithm"),
    ("payload", "compression", "enabled"),
    ("payload", "extension"),
    ("metadata", "nonce"),
    ("metadata", "priority"),
    ("metadata", "ttl"),
    ("metadata", "routing_hints"),
    ("metadata", "correlation_id"),
    ("metadata", "trust_requirements"),
    ("metadata", "trust_requirements", "minimum_trust_score"),
    ("metadata", "trust_requirements", "required_endorsements"),
    ("metadata", "trust_requirements", "verification_level"),
    ("metadata", "extension"),
    ("metadata", "message_id"),
    ("signature",),
)
_AFTER_SEALING = frozenset({("metadata", "message_id"), ("signature",)})
# Past the 1 MiB line above which the item count is walked before decoding; not up to the 16 MiB bomb
# cap (tests/klp covers that), because each grown input is inflated and walked twice (the replay check).
_GROWN_LIMIT = 2 << 20
_GROWN_HEAD = 9  # bytes kept once when a payload is grown: room for a CBOR array head with a 64-bit count


# The envelope's own tag refusal: cbor2 builds no datetimes, regexes or shared (cyclic) references.
_NO_TAGS, _refuse_tag = NO_TAGS, reject_tag


def _cbor_item(raw: bytes) -> Any:
    """The CBOR item ``raw`` holds, else ``raw`` as text: either way, a value to put in a field."""
    try:
        return cbor2.loads(raw, semantic_decoders=_NO_TAGS, tag_hook=_refuse_tag, max_depth=16)
    except Exception:
        return raw.decode("latin-1")


def _override(envelope: dict[str, Any], path: tuple[str, ...], raw: bytes) -> None:
    """Replace (or, for an empty item, remove) the field at ``path``."""
    parent: Any = envelope
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(parent, dict):
        return
    if raw:
        parent[path[-1]] = _cbor_item(raw)
    else:
        parent.pop(path[-1], None)


def _signed_hostile_envelope(body: bytes, grown: bool = False) -> tuple[bytes, bool]:
    """A correctly signed envelope from Alice (id and signature derived as the spec says, with cbor2's
    canonical encoder, not kosmesh's) whose field choices and payload bytes come from the input; and
    whether a field was overridden with an item of the input's own.

    Input: flags, kinds, picks, ttl/2, skew+128, grow, field, item length, item, payload bytes.
    Flags: 1 override a field, 2 gzip, 4 the payload claims gzip itself, 8 encrypted, 16 a routing
    hint, 32 one endorsement required, 64 correlation id (128 unused). ``grown``: always gzip the payload after
    repeating all but its first 9 bytes 1 + grow**2 times (at most 2 MiB).
    """
    r = Bytes(body)
    flags, kinds, picks, ttl, skew, grow, field, item_length = (r.byte() for _ in range(8))
    flags = (flags | 2) & ~4 if grown else flags
    item = r.take(item_length)
    data = r.rest()
    compression: dict[str, Any] = {"enabled": False}
    if flags & 2:
        compression = {"enabled": True, "algorithm": "gzip"}
        if not flags & 4:  # else the input's own bytes claim to be gzip
            if grown and len(data) > _GROWN_HEAD:
                head, tail = data[:_GROWN_HEAD], data[_GROWN_HEAD:]
                data = head + tail * min(1 + grow * grow, _GROWN_LIMIT // len(tail))
            data = zlib.compress(data, 6, wbits=31)
    encryption: dict[str, Any] = {"enabled": False}
    if flags & 8:
        encryption = {"enabled": True, "algorithm": sorted(ENCRYPTION_ALGORITHMS)[kinds >> 7]}
    metadata: dict[str, Any] = {
        "nonce": KLP_NONCE,
        "priority": _PRIORITIES[picks % len(_PRIORITIES)],
        "ttl": ttl * 2,
        "routing_hints": [{"kind": "relay", "value": str(BOB_PEER)}] if flags & 16 else [],
        "trust_requirements": {
            "minimum_trust_score": _TRUST_SCORES[(picks >> 3) % len(_TRUST_SCORES)],
            "required_endorsements": (flags >> 5) & 1,
            "verification_level": _LEVELS[(picks >> 6) % len(_LEVELS)],
        },
    }
    if flags & 64:
        metadata["correlation_id"] = "0" * 32
    envelope: dict[str, Any] = {
        "version": _VERSIONS[(kinds >> 5) % len(_VERSIONS)],
        "type": _TYPES[kinds % len(_TYPES)],
        "source": str(ALICE_AGENT),
        "target": str(BOB_NODE),
        "payload": {
            "content_type": _CONTENT_TYPES[(kinds >> 3) % len(_CONTENT_TYPES)],
            "data": data,
            "encryption": encryption,
            "compression": compression,
        },
        "metadata": metadata,
        "timestamp": NOW_MS + (skew - 128) * 2000,
    }
    path = _OVERRIDABLE[field % len(_OVERRIDABLE)] if flags & 1 else None
    if path is not None and path not in _AFTER_SEALING:
        _override(envelope, path, item)
    try:
        _seal(envelope)
        if path in _AFTER_SEALING:
            _override(envelope, path, item)
        return _canonical(envelope), path is not None
    except Exception:  # an item cbor2 cannot encode again (or encode canonically): no override then
        return _signed_hostile_envelope(bytes([flags & ~1]) + body[1:], grown) if path is not None else (b"", False)


def _seal(envelope: dict[str, Any]) -> None:
    """Content-address and sign, as the spec says: id over the map without id and signature."""
    metadata = envelope.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("message_id", None)
        metadata["message_id"] = hashlib.sha256(_canonical(envelope)).digest()[:16].hex()
    envelope["signature"] = ALICE.sign(_canonical(envelope))


def _klp_pipeline_seeds() -> dict[str, bytes]:
    messages = _klp_seed_messages()
    # flags, kinds, picks, ttl/2, skew+128, grow, field, item length: a TASK_REQUEST Bob's node accepts.
    accepted = bytes([0, 0, 1, 30, 128, 0, 0, 0])
    response = {"status": "deferred", "reason": "busy", "retry_after": 1.5, "result": None}
    return {
        "request": b"\x00" + messages["request"],
        "response": b"\x00" + messages["response"],
        "hostile-request": b"\x01" + accepted + encode_data({"task": "echo", "text": "hi"}),
        "hostile-gzip-request": b"\x01" + bytes([2]) + accepted[1:] + encode_data(["a"] * 50),
        "hostile-response": b"\x01" + bytes([64, 1, 1, 30, 128, 0, 0, 0]) + encode_data(response),
        "hostile-answer-to-our-request": b"\x05" + bytes([64, 1, 1, 30, 128, 0, 0, 0]) + encode_data(response),
        "hostile-override-ttl": b"\x01"
        + bytes([1, 0, 1, 0, 128, 0, _OVERRIDABLE.index(("metadata", "ttl")), 2])
        + b"\x18\x3c"  # ttl 60 as a CBOR item of the input's own
        + encode_data("ttl from the input"),
    }


def _klp_processor() -> KLPProcessor:
    """Bob's node: trusts every peer 5.0, handles every type but AGENT_MIGRATION, remembers 4 ids (2 a peer)."""
    return KLPProcessor(
        local_peer_id=BOB_PEER, trust_score=lambda _peer: 5.0, supported_types=_HOSTILE_SUPPORTED, replay_capacity=4
    )


def _check_result(result: CheckResult) -> None:
    """A known reason, and a message attached only when its signature verified (so the node answers
    authenticated senders only)."""
    if isinstance(result, Rejected):
        assert result.reason in REJECTION_REASONS, f"unknown rejection reason {result.reason!r}"
    else:
        assert isinstance(result, Accepted)
    assert result.message is None or verify_signature(result.message)


@fuzz_target(_klp_pipeline_seeds)
def klp_pipeline(data: bytes) -> bool:
    """KLP processing pipeline on raw bytes, or on a correctly signed envelope whose fields and payload are
    hostile (so decompression, payload decode, timestamp window, TTL, replay, trust and type checks are
    all reached); check() never raises, an accepted message replays as a replay and can be answered.
    Option bits also send it from a peer that did not sign it (it must never be accepted) or through
    check_response (never remembered in the replay cache)."""
    opt, body = options(data)
    wire, overridden = _signed_hostile_envelope(body) if opt & 1 else (body, False)
    canonical = bool(opt & 1) and not overridden
    if opt & 2:
        return _from_the_wrong_peer(wire)
    if opt & 4:
        return _as_a_response(wire, canonical)
    return _through_pipeline(wire, canonical=canonical)


def _from_the_wrong_peer(wire: bytes) -> bool:
    """Alice's message written to Bob by Bob's own peer id (a relay): refused, whatever it holds."""
    processor = _klp_processor()
    result = processor.check(wire, NOW, BOB_PEER)
    _check_result(result)
    assert isinstance(result, Rejected), "a message was accepted from a peer that did not sign it"
    assert len(processor.replay_cache) == 0
    return False


def _as_a_response(wire: bytes, canonical: bool) -> bool:
    """The message as an answer to one of Bob's requests: only a TASK_RESPONSE passes, and it takes no
    replay-cache entry, so it passes again."""
    processor = _klp_processor()
    result = processor.check_response(wire, NOW, ALICE_PEER)
    _check_result(result)
    assert len(processor.replay_cache) == 0, "a response took a replay-cache entry"
    if isinstance(result, Rejected):
        assert not (canonical and result.reason == REASON_MALFORMED), result.detail
        return False
    assert result.message.type is MessageType.TASK_RESPONSE
    assert isinstance(processor.check_response(wire, NOW, ALICE_PEER), Accepted)
    return True


def _klp_inflation_seeds() -> dict[str, bytes]:
    # flags, kinds, picks, ttl/2, skew+128, grow, field, item length; then the payload: an array head
    # with a 64-bit count, then one item that is repeated 1 + grow**2 times.
    head = bytes([0, 0, 1, 30, 128, 70, 0, 0]) + b"\x9b" + (1 + 70 * 70).to_bytes(8, "big")
    return {
        # 4,901 byte strings, 500 KB once inflated: walked, decoded, then echoed back.
        "byte-strings": head + b"\x58\x64" + b"x" * 100,
        "text-strings": head + b"\x78\x64" + b"y" * 100,
    }


@fuzz_target(_klp_inflation_seeds)
def klp_payload_inflation(data: bytes) -> bool:
    """KLP pipeline on correctly signed messages whose gzip payload inflates up to 2 MiB: past the 1 MiB
    decompression cap, or under it with up to a million items, so the cap, the item walk before decoding,
    its limits and large-payload decoding and echoing are reached. Its own target because each such
    input costs milliseconds, which would starve klp_pipeline."""
    wire, overridden = _signed_hostile_envelope(data, grown=True)
    return _through_pipeline(wire, canonical=not overridden)


def _through_pipeline(wire: bytes, canonical: bool) -> bool:
    """check() never raises; an accepted message re-encodes to itself, is a replay the second time and
    can be answered. ``canonical``: the bytes are cbor2's canonical encoding, never "malformed"."""
    processor = _klp_processor()
    result = processor.check(wire, NOW, ALICE_PEER)
    _check_result(result)
    if isinstance(result, Rejected):
        assert not (canonical and result.reason == REASON_MALFORMED), (
            f"cbor2's canonical encoding was refused as non-deterministic CBOR: {result.detail}"
        )
        return False
    message = result.message
    assert encode_message(dataclasses.replace(message)) == wire
    again = processor.check(wire, NOW, ALICE_PEER)
    assert isinstance(again, Rejected) and again.reason == REASON_REPLAY, "an accepted message was accepted twice"
    processor.is_for_local_node(message)
    if message.type is MessageType.TASK_RESPONSE:
        with contextlib.suppress(EnvelopeError):
            parse_response(message)
        return True
    try:
        response = make_response(
            BOB,
            message,
            ProcessingResult("processed", data=message.payload.data),
            source=BOB_NODE,
            timestamp_ms=NOW_MS + 1,
        )
    except EnvelopeError:
        return True  # the echo went past a bound (1 MiB on the wire, nesting depth): refused, as documented
    assert parse_response(decode_message(encode_message(response))).status == "processed"
    return True


def _klp_address_seeds() -> dict[str, bytes]:
    agent = str(ALICE_AGENT).encode()
    return {
        "agent": b"\x00" + agent,
        "name-with-query-fragment": b"\x00klp://node.domain.kai/services/search?q=1#top",
        "node-no-path": b"\x01klp://" + str(BOB_PEER).encode(),
        "fields": b"\x02" + b"\x00".join((b"node.domain.kai", b"/agents/a", b"x=1", b"f")),
    }


@fuzz_target(_klp_address_seeds)
def klp_address(data: bytes) -> bool:
    """KLP address parse (UTF-8 text, text with lone surrogates, or separate authority/path/query/fragment
    fields); what parses has one spelling, which parses back to the same address."""
    opt, body = options(data)
    mode = (opt & 3) % 3
    try:
        if mode == 2:
            parts = body.decode("utf-8", "replace").split("\x00", 3)
            query = parts[2] if len(parts) > 2 else None
            fragment = parts[3] if len(parts) > 3 else None
            address = KLPAddress(parts[0], parts[1] if len(parts) > 1 else "/", query, fragment)
        else:
            address = KLPAddress.parse(body.decode("utf-8", "surrogateescape" if mode else "replace"))
    except AddressError:
        return False
    text = str(address)
    again = KLPAddress.parse(text)
    assert again == address and str(again) == text, f"{text!r} does not parse back to itself"
    peer = address.authority_peer_id()
    assert (peer is None) == address.is_name()
    if peer is not None:
        assert KLPAddress.parse(str(KLPAddress.for_node(peer))).authority == address.authority
        signer_key_for(address.authority)
    address.agent_name()
    address.service_name()
    return True
