"""Token buckets: granted within the burst, then paced at the rate, with an honest retry hint."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kosmesh.wire.ratelimit import BucketTable, TokenBucket


def test_burst_then_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take(0.0)
    assert wait == pytest.approx(0.1)
    assert bucket.take(0.05) == pytest.approx(0.05)  # refused takes nothing
    assert bucket.take(0.1) == 0.0


def test_an_item_larger_than_the_burst_waits_for_a_full_bucket_then_goes_into_debt() -> None:
    bucket = TokenBucket(rate=100, burst=10, now=0.0)
    assert bucket.take(0.0, 5) == 0.0
    assert bucket.take(0.0, 50) == pytest.approx(0.05)  # needs the bucket full again
    assert bucket.take(0.05, 50) == 0.0
    assert bucket.available(0.05) == pytest.approx(-40)
    assert bucket.take(0.1, 1) == pytest.approx(0.36)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1, 0.0)
    with pytest.raises(ValueError):
        BucketTable(1, 0)


def test_table_bounds_its_keys_and_forgets_the_least_recent() -> None:
    table: BucketTable[str] = BucketTable(rate=1, burst=1, max_keys=2)
    assert table.take("a", 0.0) == 0.0
    assert table.take("b", 0.0) == 0.0
    assert table.take("a", 0.0) > 0  # a is now the most recent
    assert table.take("c", 0.0) == 0.0  # evicts b
    assert len(table) == 2
    assert table.take("b", 0.0) == 0.0  # b starts again full; a was evicted meanwhile
    assert table.take("c", 0.0) > 0


@given(
    rate=st.floats(0.1, 1e4),
    burst=st.floats(0.5, 1e4),
    steps=st.lists(st.tuples(st.floats(0, 10), st.floats(0.01, 100)), max_size=50),
)
def test_granted_never_exceeds_burst_plus_rate_times_elapsed(
    rate: float, burst: float, steps: list[tuple[float, float]]
) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    now = granted = 0.0
    for dt, amount in steps:
        now += dt
        wait = bucket.take(now, amount)
        assert wait >= 0
        if wait == 0.0:
            granted += amount
            # at most one item may overdraw, by its own size
            assert granted <= burst + rate * now + amount + 1e-6 * (1 + granted)


def test_charging_after_the_fact_goes_into_debt_and_says_how_long_it_lasts() -> None:
    bucket = TokenBucket(rate=0.25, burst=0.5, now=0.0)  # a quarter of a second of CPU a second
    assert bucket.wait(0.0) == 0.0
    bucket.charge(0.0, 0.3)
    assert bucket.wait(0.0) == 0.0  # 0.2 left
    bucket.charge(0.0, 0.4)
    assert bucket.wait(0.0) == pytest.approx(0.8)  # 0.2 in debt, refilled at 0.25/s
    assert bucket.wait(0.8) == pytest.approx(0.0)
    assert bucket.take(0.8) > 0  # out of debt, but nothing saved up yet
