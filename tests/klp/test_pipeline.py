"""The KLP pipeline: one test per rejection reason, replay-cache lifetime, responses, and fuzzing
that only ever yields Rejected."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kosmesh.identity import PeerId
from kosmesh.klp import (
    REJECTION_REASONS,
    Accepted,
    CheckResult,
    EnvelopeError,
    KLPAddress,
    KLPProcessor,
    MessageType,
    Priority,
    ProcessingResult,
    Rejected,
    TrustRequirements,
    encode_message,
    make_response,
    parse_response,
)
from tests.klp.test_envelope import (
    ADDR_A,
    ADDR_B,
    KEY_A,
    KEY_B,
    PEER_A,
    PEER_B,
    T0,
    T0_MS,
    canonical,
    make,
    reseal,
    to_dict,
)

ALL_TYPES = frozenset(MessageType)


def processor(
    *,
    trust: float = 5.0,
    supported: frozenset[MessageType] = ALL_TYPES,
    **kwargs: Any,
) -> KLPProcessor:
    return KLPProcessor(
        local_peer_id=PEER_B, trust_score=lambda _peer: trust, supported_types=supported, **kwargs
    )


def wire(**overrides: Any) -> bytes:
    return encode_message(make(**overrides))


def tampered(edit: Callable[[dict[str, Any]], None], *, seal: bool = True) -> bytes:
    """A valid request's CBOR map, edited, then (by default) given a correct id and signature."""
    env = to_dict(wire())
    edit(env)
    return reseal(env) if seal else canonical(env)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(env: dict[str, Any]) -> None:
        keys = path.split(".")
        target = env
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


def _flip_signature(env: dict[str, Any]) -> None:
    env["signature"] = bytes([env["signature"][0] ^ 0x01]) + env["signature"][1:]


def test_accepts_a_valid_message() -> None:
    proc = processor()
    result = proc.check(wire(), T0, PEER_A)
    assert isinstance(result, Accepted)
    assert result.message == make()
    assert result.message.payload.data == {"task": "echo", "text": "hello"}
    assert proc.is_for_local_node(result.message)
    assert not proc.is_for_local_node(make(target=KLPAddress.for_node(PEER_A)))


# Each case: (reason, raw bytes, now, processor kwargs). Between them they cover every reason.
CASES: list[tuple[str, bytes, float, dict[str, Any]]] = [
    ("message_too_large", wire(data="x" * 2000), T0, {"max_message_bytes": 1000}),
    ("malformed", b"", T0, {}),
    ("malformed", b"\xa8\x64type", T0, {}),
    ("malformed", wire()[:-10], T0, {}),  # truncated
    ("malformed", wire() + b"\x00", T0, {}),  # trailing bytes
    ("malformed", cbor2.dumps(to_dict(wire())), T0, {}),  # not deterministic encoding
    ("invalid_structure", tampered(lambda env: env.pop("target")), T0, {}),
    ("unsupported_version", tampered(_set("version", "9.0")), T0, {}),
    ("unknown_message_type", tampered(_set("type", "MIND_MELD")), T0, {}),
    ("invalid_address", tampered(_set("target", "klp://Not A Name/")), T0, {}),
    (
        "unsupported_encryption",
        tampered(_set("payload.encryption", {"enabled": True, "algorithm": "caesar"})),
        T0,
        {},
    ),
    (
        "unsupported_compression",
        tampered(_set("payload.compression", {"enabled": True, "algorithm": "zstd"})),
        T0,
        {},
    ),
    ("message_id_mismatch", tampered(_set("metadata.message_id", "ab" * 16), seal=False), T0, {}),
    ("unknown_signer", tampered(_set("source", "klp://node.domain.kai/agents/x")), T0, {}),
    ("invalid_signature", tampered(_flip_signature, seal=False), T0, {}),
    ("invalid_signature", reseal(to_dict(wire()), KEY_B), T0, {}),  # signed by another key
    ("malformed_payload", tampered(_set("payload.data", b"\xa1\x61")), T0, {}),
    (
        "decompression_bomb",
        tampered(
            lambda env: env["payload"].update(
                compression={"enabled": True, "algorithm": "gzip"},
                data=gzip.compress(b"\x00" * (17 << 20), mtime=0),
            )
        ),
        T0,
        {},
    ),
    (
        "payload_too_complex",
        tampered(
            lambda env: env["payload"].update(
                compression={"enabled": True, "algorithm": "gzip"},
                data=gzip.compress(b"\x9a\x00\x0f\x00\x00" + b"\x80" * (15 << 16), mtime=0),
            )
        ),
        T0,
        {},
    ),
    ("timestamp_out_of_window", wire(ttl=3600), T0 - 121, {}),  # from the future
    ("timestamp_out_of_window", wire(ttl=3600), T0 - 10.5, {}),  # ahead by more than the future skew
    ("timestamp_out_of_window", wire(ttl=3600), T0 + 121, {}),  # from the past
    ("timestamp_out_of_window", wire(), float("nan"), {}),
    ("expired", wire(ttl=10), T0 + 10.5, {}),
    ("insufficient_trust", wire(trust_requirements=TrustRequirements(6.0)), T0, {"trust": 5.9}),
    ("insufficient_trust", wire(trust_requirements=TrustRequirements(0.1)), T0, {"trust": float("nan")}),
    ("insufficient_endorsements", wire(trust_requirements=TrustRequirements(0.0, 1)), T0, {}),
    ("unsupported_message_type", wire(type=MessageType.VECTOR_SYNC), T0, {"supported": frozenset()}),
]


@pytest.mark.parametrize(("reason", "raw", "now", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_rejection_reasons(reason: str, raw: bytes, now: float, kwargs: dict[str, Any]) -> None:
    result = processor(**kwargs).check(raw, now, PEER_A)
    assert isinstance(result, Rejected), result
    assert result.reason == reason, result.detail


def test_every_reason_has_a_test() -> None:
    tested_below = {"replay", "replay_cache_full", "source_mismatch", "not_for_this_node"}
    covered = {case[0] for case in CASES} | tested_below
    assert covered == REJECTION_REASONS


def test_rejected_carries_the_message_only_once_authenticated() -> None:
    forged = processor().check(tampered(_flip_signature, seal=False), T0, PEER_A)
    assert isinstance(forged, Rejected) and forged.message is None
    late = processor().check(wire(ttl=10), T0 + 11, PEER_A)
    assert isinstance(late, Rejected) and late.reason == "expired" and late.message is not None
    original = make(ttl=10)
    assert (late.message.message_id, late.message.source, late.message.metadata) == (
        original.message_id, original.source, original.metadata)  # fmt: skip
    assert late.message.payload.data is None  # refused before its payload was worth decoding


def test_a_replay_is_refused_before_its_payload_is_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    from kosmesh.klp import envelope

    decoded = []
    real = envelope.decode_payload_data
    monkeypatch.setattr(envelope, "decode_payload_data", lambda *a: decoded.append(1) or real(*a))
    p = processor()
    assert isinstance(p.check(wire(), T0, PEER_A), Accepted) and len(decoded) == 1
    again = p.check(wire(), T0 + 1, PEER_A)
    assert isinstance(again, Rejected) and again.reason == "replay"
    assert len(decoded) == 1  # the replay cost no payload decode


def test_replay_is_rejected_until_the_entry_expires() -> None:
    proc = processor()
    raw = wire(ttl=30)
    assert isinstance(proc.check(raw, T0, PEER_A), Accepted)
    again = proc.check(raw, T0 + 1, PEER_A)
    assert isinstance(again, Rejected) and again.reason == "replay"
    assert again.message is not None
    assert len(proc.replay_cache) == 1
    # Once the TTL has passed the entry is evicted: the message is now refused as expired, and
    # the cache no longer holds it.
    late = proc.check(raw, T0 + 30.001, PEER_A)
    assert isinstance(late, Rejected) and late.reason == "expired"
    proc.replay_cache.evict(T0 + 30.001)
    assert len(proc.replay_cache) == 0


def test_replay_entries_live_no_longer_than_the_clock_skew() -> None:
    proc = processor(max_clock_skew_s=5)
    raw = wire(ttl=3600)
    assert isinstance(proc.check(raw, T0, PEER_A), Accepted)
    proc.replay_cache.evict(T0 + 5.001)
    assert len(proc.replay_cache) == 0
    result = proc.check(raw, T0 + 5.001, PEER_A)
    assert isinstance(result, Rejected) and result.reason == "timestamp_out_of_window"


def test_full_replay_cache_refuses_instead_of_forgetting() -> None:
    proc = processor(replay_capacity=2, replay_per_peer=2)
    raws = [wire(timestamp_ms=T0_MS + i, ttl=10) for i in range(3)]
    assert isinstance(proc.check(raws[0], T0, PEER_A), Accepted)
    assert isinstance(proc.check(raws[1], T0, PEER_A), Accepted)
    full = proc.check(raws[2], T0, PEER_A)
    assert isinstance(full, Rejected) and full.reason == "replay_cache_full"
    # the remembered ids are still refused as replays
    replay = proc.check(raws[0], T0 + 1, PEER_A)
    assert isinstance(replay, Rejected) and replay.reason == "replay"
    # after the first two expire there is room again
    fresh = wire(timestamp_ms=T0_MS + 10_500, ttl=10)
    assert isinstance(proc.check(fresh, T0 + 10.5, PEER_A), Accepted)


def test_trust_is_looked_up_for_the_authenticated_sender() -> None:
    seen: list[PeerId] = []

    def score(peer: PeerId) -> float:
        seen.append(peer)
        return 6.0

    proc = KLPProcessor(local_peer_id=PEER_B, trust_score=score, supported_types=ALL_TYPES)
    assert isinstance(proc.check(wire(trust_requirements=TrustRequirements(6.0)), T0, PEER_A), Accepted)
    assert seen == [PEER_A]
    # no requirement, no lookup
    assert isinstance(proc.check(wire(timestamp_ms=T0_MS + 1), T0, PEER_A), Accepted)
    assert seen == [PEER_A]


# -- responses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        ProcessingResult("processed", data={"answer": [1, 2, 3]}),
        ProcessingResult("rejected", reason="no_eligible_agents"),
        ProcessingResult("deferred", reason="busy", retry_after=2.5),
    ],
)
def test_signed_response_round_trip(result: ProcessingResult) -> None:
    request = make(priority=Priority.HIGH)
    accepted = processor().check(encode_message(request), T0, PEER_A)
    assert isinstance(accepted, Accepted)
    response = make_response(KEY_B, accepted.message, result, source=ADDR_B, timestamp_ms=T0_MS + 5)
    assert response.type is MessageType.TASK_RESPONSE
    assert response.metadata.correlation_id == request.metadata.message_id
    assert response.target == request.source == ADDR_A
    assert response.metadata.priority is Priority.HIGH
    client = KLPProcessor(local_peer_id=PEER_A, trust_score=lambda _p: 0.0, supported_types=ALL_TYPES)
    checked = client.check_response(encode_message(response), T0 + 0.005, PEER_B)
    assert isinstance(checked, Accepted)
    assert parse_response(checked.message) == result


def test_response_data_shape() -> None:
    response = make_response(
        KEY_B, make(), ProcessingResult("deferred", retry_after=1), source=ADDR_B, timestamp_ms=T0_MS
    )
    assert response.payload.data == {"status": "deferred", "reason": None, "retry_after": 1.0, "result": None}
    with pytest.raises(ValueError):
        make_response(
            KEY_B,
            make(),
            ProcessingResult("maybe"),  # type: ignore[arg-type]
            source=ADDR_B,
            timestamp_ms=T0_MS,
        )


@pytest.mark.parametrize(
    "data",
    [
        "not a map",
        {"status": "processed"},
        {"status": "done", "reason": None, "retry_after": None, "result": None},
        {"status": "rejected", "reason": 5, "retry_after": None, "result": None},
        {"status": "deferred", "reason": None, "retry_after": -1, "result": None},
        {"status": "deferred", "reason": None, "retry_after": "soon", "result": None},
    ],
)
def test_parse_response_refuses_bad_shapes(data: Any) -> None:
    msg = make(KEY_B, type=MessageType.TASK_RESPONSE, source=ADDR_B, target=ADDR_A, data=data)
    with pytest.raises(EnvelopeError):
        parse_response(msg)


def test_parse_response_refuses_other_types() -> None:
    with pytest.raises(EnvelopeError):
        parse_response(make())


# -- fuzzing: hostile bytes only ever give Rejected -------------------------------------------------

_VALID = wire(correlation_id="c", compression="gzip", data={"k": [1, 2, {"x": b"y"}]})
_FUZZ_PROC = processor()


def _only_rejected(raw: bytes) -> None:
    result: CheckResult = _FUZZ_PROC.check(raw, T0, PEER_A)
    assert isinstance(result, Rejected), result
    assert result.reason in REJECTION_REASONS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_are_rejected(raw: bytes) -> None:
    _only_rejected(raw)


@st.composite
def _mutations(draw: st.DrawFn) -> bytes:
    data = bytearray(_VALID)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(_mutations())
def test_mutated_encodings_are_rejected(raw: bytes) -> None:
    if raw == _VALID:
        return
    _only_rejected(raw)


_cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, sub in value.items():
            out += _paths(sub, (*prefix, key))
    return out


_ENV = to_dict(_VALID)
_ENV_PATHS = _paths(_ENV)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_ENV_PATHS), _cbor_values, st.booleans(), st.booleans())
def test_structurally_mutated_envelopes_are_rejected(
    path: tuple[str, ...], value: Any, delete: bool, seal: bool
) -> None:
    env = to_dict(_VALID)
    target = env
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        if target[path[-1]] == value:
            return
        target[path[-1]] = value
    try:
        raw = reseal(env) if seal else canonical(env)
    except (TypeError, ValueError, cbor2.CBOREncodeError):
        return
    result = _FUZZ_PROC.check(raw, T0, PEER_A)
    if isinstance(result, Accepted):
        # Only possible if the edit produced another valid message (e.g. an allowed value).
        assert seal
        return
    assert result.reason in REJECTION_REASONS


def test_peers_used_in_tests_differ() -> None:
    assert PEER_A != PEER_B and KEY_A.public_key != KEY_B.public_key and ADDR_A != ADDR_B
