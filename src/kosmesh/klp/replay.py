"""The replay cache: message ids accepted and still acceptable, per authenticated peer, bounded.

Each id is kept until the message could no longer pass the timestamp and TTL checks, then forgotten.
Memory is bounded twice: each peer (the Noise-authenticated sender, which the pipeline has checked is
the message's source) holds at most ``per_peer`` ids, and all peers together at most ``capacity``.
A peer at its quota is refused alone (``replay_cache_full``).

When the whole cache is full, a peer holding fewer ids than the largest holder takes the place of
that holder's oldest id rather than be refused: no group of peers can starve the others. Forgetting
an id early lets it be replayed, but only by the peer it belongs to, since a message is accepted only
from its own source; that peer could as well send the same request again with a fresh nonce.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict

from kosmesh.klp.reasons import REASON_REPLAY, REASON_REPLAY_CACHE_FULL


class ReplayCache:
    """Bounded per-peer sets of fresh message ids (sans-I/O: ``now`` is an argument)."""

    def __init__(self, capacity: int, per_peer: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("replay cache capacity must be positive")
        per_peer = capacity if per_peer is None else per_peer
        if not 1 <= per_peer <= capacity:
            raise ValueError("the per-peer quota must be between 1 and the capacity")
        self.capacity = capacity
        self.per_peer = per_peer
        self._peers: dict[str, OrderedDict[str, float]] = {}  # peer -> id -> expiry, oldest first
        self._heap: list[tuple[float, str, str]] = []  # (expiry, id, peer); stale once its id is gone
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, message_id: object) -> bool:
        return any(message_id in entries for entries in self._peers.values())

    def count(self, peer: str) -> int:
        """Ids held for ``peer``."""
        entries = self._peers.get(peer)
        return len(entries) if entries is not None else 0

    def evict(self, now: float) -> None:
        """Forget every id whose expiry is before ``now``."""
        heap, peers = self._heap, self._peers
        while heap and heap[0][0] < now:
            when, message_id, peer = heapq.heappop(heap)
            entries = peers.get(peer)
            if entries is not None and entries.get(message_id) == when:
                del entries[message_id]
                self._size -= 1
                if not entries:
                    del peers[peer]

    def add(self, peer: str, message_id: str, expires_at: float, now: float) -> str | None:
        """Remember ``message_id`` from ``peer`` until ``expires_at``; a rejection reason, or None."""
        self.evict(now)
        entries = self._peers.get(peer)
        if entries is None:
            entries = self._peers[peer] = OrderedDict()
        elif message_id in entries:
            return REASON_REPLAY
        if len(entries) >= self.per_peer or (self._size >= self.capacity and not self._make_room(entries)):
            if not entries:
                del self._peers[peer]
            return REASON_REPLAY_CACHE_FULL
        entries[message_id] = expires_at
        self._size += 1
        heapq.heappush(self._heap, (expires_at, message_id, peer))
        if len(self._heap) > 2 * self.capacity + 64:
            self._compact()
        return None

    def _make_room(self, entries: OrderedDict[str, float]) -> bool:
        """Drop the oldest id of the largest holder, if it holds at least two more than ``entries``."""
        largest = max(self._peers.values(), key=len)
        if len(largest) < len(entries) + 2:
            return False
        largest.popitem(last=False)
        self._size -= 1
        return True

    def _compact(self) -> None:
        """Rebuild the expiry heap from the live ids (ids dropped by _make_room leave stale entries)."""
        self._heap = [(when, mid, peer) for peer, entries in self._peers.items() for mid, when in entries.items()]
        heapq.heapify(self._heap)
