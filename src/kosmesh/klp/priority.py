"""A bounded priority queue for incoming work (sans-I/O: no asyncio, no clock).

Under load the node must serve CRITICAL before LOW and must not grow without bound. When the queue
is full a more urgent item displaces the newest of the least urgent ones, which the caller answers
"deferred" with a retry hint; an item no more urgent than anything queued is itself deferred.
Within one priority the order is FIFO.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class PushResult(Generic[T]):
    """The outcome of :meth:`PriorityQueue.push`.

    ``accepted``: the pushed item is queued. ``evicted``: the item displaced to make room, if any
    (answer it "deferred"; queue items must not be None). ``retry_after``: seconds after which a
    deferred item (the pushed one if not accepted, else the evicted one) is worth sending again.
    """

    accepted: bool
    retry_after: float | None = None
    evicted: T | None = None

    @property
    def deferred(self) -> bool:
        return not self.accepted


class PriorityQueue(Generic[T]):
    """Highest priority first, FIFO within a priority, at most ``capacity`` items."""

    def __init__(
        self,
        capacity: int,
        *,
        service_time_s: float = 0.005,
        min_retry_after_s: float = 0.05,
        max_retry_after_s: float = 30.0,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.service_time_s = service_time_s
        self.min_retry_after_s = min_retry_after_s
        self.max_retry_after_s = max_retry_after_s
        self._levels: dict[int, deque[T]] = {}
        self._order: list[int] = []  # priorities present as keys, highest first
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def count(self, priority: int) -> int:
        """Items queued at exactly ``priority``."""
        level = self._levels.get(int(priority))
        return len(level) if level is not None else 0

    def retry_after(self, priority: int) -> float:
        """A hint for when an item of ``priority`` might find room: the work queued ahead of it."""
        priority = int(priority)
        ahead = sum(len(q) for p, q in self._levels.items() if p >= priority)
        hint = (ahead + 1) * self.service_time_s
        return min(self.max_retry_after_s, max(self.min_retry_after_s, hint))

    def push(self, item: T, priority: int) -> PushResult[T]:
        """Queue ``item``; when full, displace a less urgent item or defer this one."""
        priority = int(priority)
        if self._size < self.capacity:
            self._append(item, priority)
            return PushResult(True)
        lowest = self._lowest_nonempty()
        if lowest is None or priority <= lowest:
            return PushResult(False, self.retry_after(priority))
        # Displace the newest of the least urgent: it has waited least.
        victim = self._levels[lowest].pop()
        self._size -= 1
        self._append(item, priority)
        return PushResult(True, self.retry_after(lowest), victim)

    def pop(self) -> T | None:
        """The oldest item of the highest priority, or None if empty."""
        got = self.pop_with_priority()
        return None if got is None else got[0]

    def pop_with_priority(self) -> tuple[T, int] | None:
        if not self._size:
            return None
        for p in self._order:
            level = self._levels[p]
            if level:
                self._size -= 1
                return level.popleft(), p
        return None  # unreachable: _size counts the items in the levels

    def _append(self, item: T, priority: int) -> None:
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = deque()
            self._order = sorted(self._levels, reverse=True)
        level.append(item)
        self._size += 1

    def _lowest_nonempty(self) -> int | None:
        for p in reversed(self._order):
            if self._levels[p]:
                return p
        return None
