"""The bounded priority queue: urgent work first under load, FIFO within a level, eviction."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kosmesh.klp import Priority, PriorityQueue, PushResult


def test_highest_priority_first_fifo_within_priority() -> None:
    q: PriorityQueue[str] = PriorityQueue(10)
    for item, priority in [
        ("low1", Priority.LOW),
        ("norm1", Priority.NORMAL),
        ("crit1", Priority.CRITICAL),
        ("low2", Priority.LOW),
        ("high1", Priority.HIGH),
        ("crit2", Priority.CRITICAL),
        ("norm2", Priority.NORMAL),
    ]:
        assert q.push(item, priority).accepted
    assert len(q) == 7
    assert q.count(Priority.LOW) == 2
    order = [q.pop() for _ in range(7)]
    assert order == ["crit1", "crit2", "high1", "norm1", "norm2", "low1", "low2"]
    assert q.pop() is None
    assert not q


def test_critical_is_served_before_low_under_load() -> None:
    q: PriorityQueue[int] = PriorityQueue(100)
    # A flood of LOW fills the queue; CRITICAL arrivals still get in and are served first.
    for i in range(100):
        assert q.push(i, Priority.LOW).accepted
    deferred_low = q.push(100, Priority.LOW)
    assert deferred_low.deferred and deferred_low.retry_after is not None and deferred_low.retry_after > 0
    evicted: list[int] = []
    for i in range(10):
        result = q.push(1000 + i, Priority.CRITICAL)
        assert result.accepted and result.evicted is not None
        evicted.append(result.evicted)
    assert len(q) == 100
    # the newest LOW items were displaced (they had waited least)
    assert evicted == list(range(99, 89, -1))
    assert [q.pop() for _ in range(10)] == [1000 + i for i in range(10)]
    assert q.pop() == 0


def test_equal_priority_does_not_displace() -> None:
    q: PriorityQueue[str] = PriorityQueue(2)
    q.push("a", Priority.CRITICAL)
    q.push("b", Priority.CRITICAL)
    result = q.push("c", Priority.CRITICAL)
    assert result == PushResult(False, result.retry_after, None)
    assert result.retry_after is not None
    low = q.push("d", Priority.LOW)
    assert low.deferred
    assert q.pop_with_priority() == ("a", Priority.CRITICAL)


def test_eviction_reports_victim_and_retry_hint() -> None:
    q: PriorityQueue[str] = PriorityQueue(2, service_time_s=0.5, min_retry_after_s=0.1)
    q.push("n", Priority.NORMAL)
    q.push("l", Priority.LOW)
    result = q.push("h", Priority.HIGH)
    assert result.accepted and result.evicted == "l"
    assert result.retry_after == (2 + 1) * 0.5  # two items ahead of a LOW one, plus itself
    result = q.push("c", Priority.CRITICAL)
    assert result.evicted == "n"


def test_retry_after_is_clamped() -> None:
    q: PriorityQueue[int] = PriorityQueue(1000, service_time_s=1.0, max_retry_after_s=30.0)
    assert q.retry_after(Priority.LOW) == 1.0
    for i in range(1000):
        q.push(i, Priority.HIGH)
    assert q.retry_after(Priority.LOW) == 30.0
    tiny: PriorityQueue[int] = PriorityQueue(1, service_time_s=0.0, min_retry_after_s=0.05)
    assert tiny.retry_after(Priority.LOW) == 0.05


def test_capacity_must_be_positive() -> None:
    try:
        PriorityQueue(0)
    except ValueError:
        return
    raise AssertionError("capacity 0 accepted")


_ops = st.lists(
    st.one_of(st.tuples(st.just("push"), st.sampled_from(list(Priority))), st.just(("pop", None))),
    max_size=80,
)


@settings(max_examples=200)
@given(st.integers(1, 8), _ops)
def test_matches_a_reference_model(capacity: int, ops: list[tuple[str, Priority | None]]) -> None:
    q: PriorityQueue[int] = PriorityQueue(capacity)
    model: list[tuple[int, int]] = []  # (priority, seq), in arrival order
    for seq, (op, priority) in enumerate(ops):
        if op == "push":
            assert priority is not None
            result = q.push(seq, priority)
            if len(model) < capacity:
                assert result.accepted and result.evicted is None
                model.append((priority, seq))
                continue
            lowest = min(p for p, _ in model)
            if priority <= lowest:
                assert result.deferred and result.retry_after is not None
                continue
            victim = max((s for p, s in model if p == lowest))
            assert result.accepted and result.evicted == victim
            model.remove((lowest, victim))
            model.append((priority, seq))
        else:
            got = q.pop()
            if not model:
                assert got is None
                continue
            best = max(p for p, _ in model)
            expected = min(s for p, s in model if p == best)
            assert got == expected
            model.remove((best, expected))
        assert len(q) == len(model) <= capacity
