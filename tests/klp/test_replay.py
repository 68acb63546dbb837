"""The replay cache: ids forgotten once stale, per-peer quotas within a total, fair share when full."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kosmesh.klp import ReplayCache


def test_ids_are_replays_until_they_expire() -> None:
    cache = ReplayCache(3)
    assert cache.add("p", "a", 10.0, 0.0) is None
    assert cache.add("p", "a", 10.0, 1.0) == "replay"
    assert cache.add("p", "b", 5.0, 1.0) is None
    assert cache.add("p", "c", 20.0, 1.0) is None
    assert cache.add("p", "d", 20.0, 1.0) == "replay_cache_full"
    assert cache.add("p", "d", 20.0, 5.5) is None  # "b" expired at 5.0
    assert "b" not in cache and "a" in cache
    cache.evict(100.0)
    assert len(cache) == 0 and cache.count("p") == 0


def test_a_peer_at_its_quota_is_refused_alone() -> None:
    cache = ReplayCache(10, per_peer=3)
    for i in range(3):
        assert cache.add("flooder", f"f{i}", 100.0, 0.0) is None
    assert cache.add("flooder", "f3", 100.0, 0.0) == "replay_cache_full"
    assert cache.add("honest", "h0", 100.0, 0.0) is None
    assert (cache.count("flooder"), cache.count("honest"), len(cache)) == (3, 1, 4)


def test_when_full_a_smaller_holder_takes_the_oldest_place_of_the_largest() -> None:
    cache = ReplayCache(4)  # one peer may fill it all
    for i in range(4):
        assert cache.add("flooder", f"f{i}", 100.0, 0.0) is None
    assert cache.add("flooder", "f4", 100.0, 0.0) == "replay_cache_full"  # it is the largest itself
    assert cache.add("honest", "h0", 100.0, 0.0) is None  # takes f0's place
    assert "f0" not in cache and "h0" in cache and len(cache) == 4
    assert cache.add("honest", "h1", 100.0, 0.0) is None  # 1 + 2 <= 3: still room at the flooder's cost
    assert cache.add("honest", "h2", 100.0, 0.0) == "replay_cache_full"  # 2 against 2: a fair share each
    # the forgotten id can come back, but only from the peer it belongs to (the pipeline binds the source)
    assert cache.add("flooder", "f0", 100.0, 0.0) == "replay_cache_full"


def test_forgotten_places_do_not_grow_the_expiry_heap_without_bound() -> None:
    cache = ReplayCache(8)
    for i in range(8):
        cache.add("big", f"b{i}", 1000.0, 0.0)
    for i in range(500):  # small peers keep taking the big one's places, then expire
        now = float(i)
        cache.add(f"small{i}", f"s{i}", now + 0.5, now)
        cache.add("big", f"b{i + 8}", 1000.0, now)
    assert len(cache._heap) <= 2 * cache.capacity + 64
    assert len(cache) <= cache.capacity


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        ReplayCache(0)
    with pytest.raises(ValueError):
        ReplayCache(10, per_peer=11)
    with pytest.raises(ValueError):
        ReplayCache(10, per_peer=0)


_ops = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d"]),  # peer
        st.integers(0, 30),  # id (per peer)
        st.floats(0.0, 20.0),  # lifetime
        st.floats(0.0, 3.0),  # time step
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), _ops)
def test_bounds_and_fairness_hold_for_any_sequence(
    capacity: int, quota: int, ops: list[tuple[str, int, float, float]]
) -> None:
    quota = min(quota, capacity)
    cache = ReplayCache(capacity, per_peer=quota)
    now = 0.0
    live: dict[tuple[str, str], float] = {}  # what a cache that never forgets early would hold
    for peer, n, lifetime, step in ops:
        now += step
        live = {key: when for key, when in live.items() if when >= now}
        message_id = f"{peer}:{n}"
        before = {p: cache.count(p) for p in "abcd"}
        got = cache.add(peer, message_id, now + lifetime, now)
        assert len(cache) == sum(cache.count(p) for p in "abcd") <= capacity
        assert all(cache.count(p) <= quota for p in "abcd")
        if got is None:
            assert message_id in cache
            live[(peer, message_id)] = now + lifetime
        elif got == "replay":
            assert (peer, message_id) in live  # only ever a real replay
        else:
            assert got == "replay_cache_full"
            cache.evict(now)
            held = cache.count(peer)
            # refused only at its quota, or when full and holding about as much as the largest holder
            assert held >= quota or (len(cache) == capacity and held + 2 > max(before.values()))
