"""A direct message must come from the peer that signed it and be addressed to this node; answers to
our own requests are checked the same way but never enter the replay cache; future-dating is bounded."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.klp import (
    Accepted,
    KLPAddress,
    KLPProcessor,
    MessageType,
    ProcessingResult,
    Rejected,
    encode_message,
    make_response,
)
from tests.klp.test_envelope import ADDR_A, KEY_A, KEY_B, PEER_A, PEER_B, T0, T0_MS, make
from tests.klp.test_pipeline import wire

KEY_C = Ed25519PrivateKey(bytes(range(2, 34)))
PEER_C = PeerId.from_public_key(KEY_C.public_key)
KEYS = {PEER_A: KEY_A, PEER_B: KEY_B, PEER_C: KEY_C}
ALL_TYPES = frozenset(MessageType)


def node(local: PeerId, **kwargs: object) -> KLPProcessor:
    return KLPProcessor(local_peer_id=local, trust_score=lambda _p: 5.0, supported_types=ALL_TYPES, **kwargs)  # type: ignore[arg-type]


def signed(signer: PeerId, target: PeerId, **overrides: object) -> bytes:
    return encode_message(
        make(KEYS[signer], source=KLPAddress.for_node(signer), target=KLPAddress.for_agent(target, "echo"), **overrides)
    )


def test_a_task_b_signed_for_a_relayed_by_a_to_c_is_refused() -> None:
    """The attack: A takes B's signed TASK_REQUEST to A and writes the same bytes to C."""
    raw = signed(PEER_B, target=PEER_A)
    at_c = node(PEER_C)
    result = at_c.check(raw, T0, PEER_A)
    assert isinstance(result, Rejected) and result.reason == "source_mismatch"
    assert result.message is not None and result.message.source.authority == str(PEER_B)  # answerable
    assert len(at_c.replay_cache) == 0


def test_a_message_addressed_to_another_node_is_refused() -> None:
    result = node(PEER_C).check(signed(PEER_B, target=PEER_A), T0, PEER_B)
    assert isinstance(result, Rejected) and result.reason == "not_for_this_node"
    assert result.message is not None


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(list(KEYS)), st.sampled_from(list(KEYS)), st.sampled_from(list(KEYS)), st.sampled_from(list(KEYS))
)
def test_accepted_only_from_its_signer_and_only_by_its_target(
    signer: PeerId, target: PeerId, remote: PeerId, local: PeerId
) -> None:
    result = node(local).check(signed(signer, target), T0, remote)
    assert isinstance(result, Accepted) == (signer == remote and target == local)
    if isinstance(result, Rejected):
        expected = "source_mismatch" if signer != remote else "not_for_this_node"
        assert result.reason == expected


def _answer(request_id_time: int = 0) -> bytes:
    request = make(timestamp_ms=T0_MS + request_id_time)  # A asks B
    response = make_response(
        KEY_B, request, ProcessingResult("processed", data="ok"), source=KLPAddress.for_node(PEER_B), timestamp_ms=T0_MS
    )
    return encode_message(response)


def test_answers_to_our_requests_never_enter_the_replay_cache() -> None:
    at_a = node(PEER_A, replay_capacity=2, replay_per_peer=2)
    # B fills the whole replay cache with its own requests to A
    assert isinstance(at_a.check(signed(PEER_B, PEER_A, timestamp_ms=T0_MS), T0, PEER_B), Accepted)
    assert isinstance(at_a.check(signed(PEER_B, PEER_A, timestamp_ms=T0_MS + 1), T0, PEER_B), Accepted)
    full = at_a.check(signed(PEER_B, PEER_A, timestamp_ms=T0_MS + 2), T0, PEER_B)
    assert isinstance(full, Rejected) and full.reason == "replay_cache_full"
    # ...and B's answers to A's own requests still get through, and take no place
    for i in range(5):
        answer = at_a.check_response(_answer(i), T0, PEER_B)
        assert isinstance(answer, Accepted), answer
    assert len(at_a.replay_cache) == 2


def test_answers_are_bound_to_the_sender_and_to_us() -> None:
    wrong_sender = node(PEER_A).check_response(_answer(), T0, PEER_C)
    assert isinstance(wrong_sender, Rejected) and wrong_sender.reason == "source_mismatch"
    wrong_target = node(PEER_C).check_response(_answer(), T0, PEER_B)
    assert isinstance(wrong_target, Rejected) and wrong_target.reason == "not_for_this_node"
    not_an_answer = node(PEER_B).check_response(wire(), T0, PEER_A)
    assert isinstance(not_an_answer, Rejected) and not_an_answer.reason == "unsupported_message_type"
    assert ADDR_A.authority == str(PEER_A)


@settings(max_examples=200, deadline=None)
@given(st.integers(-200_000, 200_000), st.integers(0, 300))
def test_time_window(offset_ms: int, ttl: int) -> None:
    """Accepted iff stamped at most 10 s ahead (future skew), at most 120 s behind, and within its TTL."""
    assume(offset_ms not in (-10_000, 120_000, ttl * 1000))  # float rounding decides exact boundaries
    result = node(PEER_B).check(wire(ttl=ttl), (T0_MS + offset_ms) / 1000, PEER_A)
    fresh = -10_000 < offset_ms < 120_000 and offset_ms < ttl * 1000
    assert isinstance(result, Accepted) == fresh, result


def test_an_id_is_kept_no_longer_than_it_could_pass() -> None:
    at_b = node(PEER_B)
    assert isinstance(at_b.check(wire(ttl=120, timestamp_ms=T0_MS + 10_000), T0, PEER_A), Accepted)  # +10 s
    at_b.replay_cache.evict(T0 + 130.0)  # stamped +10 s, ttl 120: passes until T0 + 130
    assert len(at_b.replay_cache) == 1
    at_b.replay_cache.evict(T0 + 130.001)
    assert len(at_b.replay_cache) == 0
    too_far = at_b.check(wire(ttl=120, timestamp_ms=T0_MS + 119_000), T0, PEER_A)  # the flood's +119 s
    assert isinstance(too_far, Rejected) and too_far.reason == "timestamp_out_of_window"
