"""Receiver-side policy: a trust floor for tasks no sender can lower; priority capped by trust."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kosmesh.klp import (
    PRIORITY_CAPS_BY_TRUST,
    Accepted,
    KLPProcessor,
    MessageType,
    Priority,
    ReceiverPolicy,
    Rejected,
    TrustRequirements,
)
from tests.klp.test_envelope import PEER_A, PEER_B, T0, T0_MS
from tests.klp.test_pipeline import wire

ALL_TYPES = frozenset(MessageType)


def strict_node(trust: float, floor: float) -> KLPProcessor:
    return KLPProcessor(
        local_peer_id=PEER_B, trust_score=lambda _peer: trust, supported_types=ALL_TYPES, min_trust_for_tasks=floor
    )


@pytest.mark.parametrize(
    ("trust", "declared", "expected"),
    [
        (5.0, Priority.CRITICAL, Priority.NORMAL),  # an unknown key at the default trust
        (5.0, Priority.HIGH, Priority.NORMAL),
        (5.0, Priority.LOW, Priority.LOW),
        (6.0, Priority.CRITICAL, Priority.HIGH),
        (6.0, Priority.HIGH, Priority.HIGH),
        (7.9, Priority.CRITICAL, Priority.HIGH),
        (8.0, Priority.CRITICAL, Priority.CRITICAL),
        (10.0, Priority.NORMAL, Priority.NORMAL),
        (0.0, Priority.HIGH, Priority.NORMAL),
        (float("nan"), Priority.CRITICAL, Priority.NORMAL),
    ],
)
def test_priority_caps_table(trust: float, declared: Priority, expected: Priority) -> None:
    assert ReceiverPolicy().priority(declared, trust) is expected


@given(st.sampled_from(list(Priority)), st.floats(0.0, 10.0), st.floats(0.0, 10.0))
def test_priority_is_never_raised_and_never_falls_as_trust_grows(declared: Priority, low: float, high: float) -> None:
    low, high = sorted((low, high))
    policy = ReceiverPolicy()
    assert policy.priority(declared, low) <= policy.priority(declared, high) <= declared
    assert policy.priority(declared, low) >= min(declared, Priority.NORMAL)


@given(st.floats(0.0, 10.0), st.floats(0.0, 10.0), st.sampled_from(list(MessageType)))
def test_the_floor_applies_to_tasks_and_the_sender_can_only_raise_it(
    floor: float, asked: float, kind: MessageType
) -> None:
    needed = ReceiverPolicy(min_trust_for_tasks=floor).minimum_trust(kind, asked)
    assert needed == (max(floor, asked) if kind is MessageType.TASK_REQUEST else asked)


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        ReceiverPolicy(min_trust_for_tasks=11.0)
    with pytest.raises(ValueError):
        ReceiverPolicy(priority_caps=tuple(reversed(PRIORITY_CAPS_BY_TRUST)))


def test_a_zero_trust_ask_on_a_strict_node_is_refused() -> None:
    node = strict_node(trust=0.0, floor=1.0)
    result = node.check(wire(trust_requirements=TrustRequirements(0.0)), T0, PEER_A)
    assert isinstance(result, Rejected) and result.reason == "insufficient_trust"
    assert result.message is not None  # authenticated: the node answers it
    assert len(node.replay_cache) == 0  # refused before it took a replay-cache entry


def test_a_sender_asking_more_than_the_floor_is_held_to_its_own_ask() -> None:
    node = strict_node(trust=3.0, floor=2.0)
    assert isinstance(node.check(wire(), T0, PEER_A), Accepted)
    asked = node.check(wire(trust_requirements=TrustRequirements(4.0), timestamp_ms=T0_MS + 1), T0, PEER_A)
    assert isinstance(asked, Rejected) and asked.reason == "insufficient_trust"


def test_the_floor_is_for_tasks_only() -> None:
    node = strict_node(trust=0.0, floor=5.0)
    hello = node.check(wire(type=MessageType.PEER_DISCOVERY), T0, PEER_A)
    assert isinstance(hello, Accepted)  # record exchange with an unknown peer still works


@pytest.mark.parametrize(
    ("trust", "expected"), [(5.0, Priority.NORMAL), (6.5, Priority.HIGH), (9.0, Priority.CRITICAL)]
)
def test_accepted_carries_the_capped_priority_and_the_message_is_unchanged(trust: float, expected: Priority) -> None:
    result = strict_node(trust=trust, floor=0.0).check(wire(priority=Priority.CRITICAL), T0, PEER_A)
    assert isinstance(result, Accepted)
    assert result.priority is expected
    assert result.message.metadata.priority is Priority.CRITICAL  # what the sender signed
