"""Token buckets: per-peer rate limits that answer "retry after" instead of dropping in silence.

Sans-I/O: the caller passes ``now`` (monotonic seconds). A bucket holds up to ``burst`` tokens
and refills at ``rate`` per second; taking more than it holds is refused with the wait until
enough will have refilled, which the caller turns into ``deferred(retry_after)``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up."""

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not rate > 0 or not burst > 0:
            raise ValueError("a token bucket needs a positive rate and burst")
        self.rate = float(rate)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> float:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        return self._tokens

    def take(self, now: float, amount: float = 1.0) -> float:
        """Take ``amount`` tokens: 0.0 if granted, else the seconds until it would be (nothing taken).

        An amount larger than ``burst`` is granted once the bucket is full, taking it into debt,
        so one oversized item is slowed down, never refused forever.
        """
        tokens = self._refill(now)
        need = min(amount, self.burst)
        if tokens >= need:
            self._tokens = tokens - amount
            return 0.0
        return (need - tokens) / self.rate

    def available(self, now: float) -> float:
        return self._refill(now)

    def charge(self, now: float, amount: float) -> None:
        """Take ``amount`` after the fact (work already done, e.g. CPU seconds): may go into debt."""
        self._tokens = self._refill(now) - amount

    def wait(self, now: float) -> float:
        """Seconds until the bucket is out of debt (0.0 if it is not in debt)."""
        tokens = self._refill(now)
        return 0.0 if tokens >= 0 else -tokens / self.rate


class BucketTable(Generic[K]):
    """One bucket per key (a peer), at most ``max_keys`` of them: the least recently used goes first.

    A forgotten key starts again with a full bucket, so the table bounds memory, not fairness;
    ``max_keys`` should exceed the number of peers a node can be connected to.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        TokenBucket(rate, burst, 0.0)  # validates rate and burst once
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def bucket(self, key: K, now: float) -> TokenBucket:
        """``key``'s bucket (a full one for a key not seen, or forgotten, before)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(key)
        return bucket

    def take(self, key: K, now: float, amount: float = 1.0) -> float:
        """As :meth:`TokenBucket.take`, on ``key``'s bucket."""
        return self.bucket(key, now).take(now, amount)

    def forget(self, key: K) -> None:
        self._buckets.pop(key, None)
