"""The rules that bound what one remote makes a connection hold, sans-I/O.

Two small state machines the connection core consults:

* :class:`OutboundBounds` — a stream whose queued data makes no progress for
  ``write_stall_timeout`` is reset, and a connection that stays at ``max_write_buffer`` for
  as long is dropped (the peer does not read). (The caps themselves are enforced by yamux at
  write time: a write finding a queue at its cap is refused.)
* :class:`InboundBounds` — unread bytes (received, not read by the application) against the
  connection's ``max_buffered_in`` and, through the shared :class:`BufferBudget`, the node's.
  Policy, in order: over half the budget the streams holding the most get no more window
  credit (they can only shrink as the application reads); over the whole budget the biggest
  stream is reset, then the next, until back under; a connection that needed
  ``max_budget_resets`` such resets is dropped.

Both decide only; the core applies (resets streams, closes) and reports events.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from typing import Final

from kosmesh.wire.buffers import RESERVE_QUANTUM, BufferBudget
from kosmesh.wire.connection_events import ConnectionLimits
from kosmesh.wire.yamux import YamuxSession

Verdict = tuple[list[tuple[int, str]], str | None]  # (streams reset, with why; why to close, or None)

_NO_CLOSE: Final = None


class OutboundBounds:
    """Watches queued send data for progress, sampled at checks a quarter of the timeout apart."""

    __slots__ = ("_limits", "_over_since", "_watch", "check_at")

    def __init__(self, limits: ConnectionLimits) -> None:
        self._limits = limits
        self.check_at: float | None = None  # next check; None while nothing is queued
        self._watch: dict[int, tuple[int, float]] = {}  # stream -> (bytes framed, since when)
        self._over_since: float | None = None

    def schedule(self, now: float) -> float:
        self.check_at = when = now + self._limits.write_stall_timeout / 4
        return when

    def forget(self, stream_id: int) -> None:
        self._watch.pop(stream_id, None)

    def clear(self) -> None:
        self._watch.clear()
        self.check_at = None

    def check(self, session: YamuxSession, now: float, skip: Container[int], reset: Callable[[int], None]) -> Verdict:
        """Reset stalled streams (not those in ``skip``); say why to close if the connection is stuck."""
        timeout = self._limits.write_stall_timeout
        reset_streams: list[tuple[int, str]] = []
        watch: dict[int, tuple[int, float]] = {}
        for sid, _queued, flushed in session.send_progress():
            if sid in skip:
                continue
            seen = self._watch.get(sid)
            if seen is None or seen[0] != flushed:
                watch[sid] = (flushed, now)
            elif now - seen[1] >= timeout:
                reset(sid)
                reset_streams.append((sid, f"no send progress for {now - seen[1]:.0f}s"))
            else:
                watch[sid] = seen
        self._watch = watch
        total = session.pending_total
        if total >= self._limits.max_write_buffer:
            if self._over_since is None:
                self._over_since = now
            elif now - self._over_since >= timeout:
                return reset_streams, f"peer does not read: {total} bytes queued for {timeout:g}s"
        else:
            self._over_since = None
        self.check_at = None
        if session.pending_total:
            self.schedule(now)
        return reset_streams, _NO_CLOSE


class InboundBounds:
    """Unread inbound bytes against the connection's and the node's budget."""

    __slots__ = (
        "_budget",
        "_held",
        "_limits",
        "_reserved",
        "_resets",
        "_wake",
        "check_above",
        "check_requested",
        "relax_below",
    )

    def __init__(
        self, limits: ConnectionLimits, budget: BufferBudget | None, wake: Callable[[], None] | None = None
    ) -> None:
        self._limits = limits
        self._budget = budget
        self._reserved = 0  # reserved from the node budget, in RESERVE_QUANTUM steps
        self._held: set[int] = set()  # streams whose window credit is held back
        self._resets = 0
        # The unread levels at which the core's hot paths call in (one comparison each).
        self.check_above = 0
        self.relax_below = -1
        self._wake = wake  # asks the adapter to run a check soon (another connection needs room)
        self.check_requested = False
        self._set_levels()
        if budget is not None:
            budget.add_share(self)

    @property
    def reserved(self) -> int:
        return self._reserved

    def request_check(self) -> None:
        if not self.check_requested:
            self.check_requested = True
            if self._wake is not None:
                self._wake()

    def check(self, session: YamuxSession, reset: Callable[[int], None]) -> Verdict:
        """Apply the policy to ``session``'s unread bytes now (after the application took its share)."""
        self.check_requested = False
        self._reserve(session.unread)
        limit = self._limits.max_buffered_in
        reset_streams: list[tuple[int, str]] = []
        if session.unread > limit or self._node_wants_shedding():
            for held, sid in sorted(session.unread_by_stream(), reverse=True):
                if session.unread <= limit and not self._node_wants_shedding():
                    break
                self._resets += 1
                self._held.discard(sid)
                reset(sid)
                reset_streams.append((sid, f"{held} unread bytes over the receive budget"))
                self._reserve(session.unread)
            if self._resets >= self._limits.max_budget_resets:
                return reset_streams, f"peer kept filling the receive buffers ({self._resets} streams reset)"
        budget = self._budget
        if budget is not None and budget.over:
            budget.shed_elsewhere(self)
        if session.unread > limit // 2 or (budget is not None and budget.reserved_in > budget.max_buffered_in // 2):
            heavy = self._limits.stream_receive_window // 4
            for held, sid in session.unread_by_stream():
                if held >= heavy and sid not in self._held:
                    self._held.add(sid)
                    session.hold_credit(sid, True)
        self._set_levels()
        return reset_streams, _NO_CLOSE

    def relax(self, session: YamuxSession) -> None:
        """Unread bytes fell well under what was reserved or held: give back reservation and credit."""
        unread = session.unread
        if self._held and unread < self._limits.max_buffered_in // 4:
            budget = self._budget
            if budget is None or budget.reserved_in <= budget.max_buffered_in // 2:
                for sid in self._held:
                    session.hold_credit(sid, False)
                self._held.clear()
        if self._reserved and unread <= self._reserved - RESERVE_QUANTUM:
            self._reserve(unread)
        self._set_levels()

    def forget(self, stream_id: int) -> None:
        self._held.discard(stream_id)

    def release(self) -> None:
        """The connection is closed: give its reservation back to the node."""
        if self._budget is not None:
            self._budget.reserved_in -= self._reserved
            self._budget.remove_share(self)
            self._budget = None
        self._reserved = 0
        self._held.clear()
        self.check_above = 1 << 62
        self.relax_below = -1

    def _node_wants_shedding(self) -> bool:
        budget = self._budget
        return budget is not None and budget.over and self._reserved > budget.fair_share()

    def _reserve(self, unread: int) -> None:
        """Keep the node reservation at the unread bytes beyond the connection's allowance (one
        quantum), rounded up to a quantum."""
        budget = self._budget
        if budget is None:
            return
        beyond = unread - RESERVE_QUANTUM
        want = -(-beyond // RESERVE_QUANTUM) * RESERVE_QUANTUM if beyond > 0 else 0
        if want != self._reserved:
            budget.reserved_in += want - self._reserved
            self._reserved = want

    def _set_levels(self) -> None:
        above = self._limits.max_buffered_in // 2
        if self._budget is not None:
            above = min(above, self._reserved + RESERVE_QUANTUM)
        self.check_above = above
        relax = -1
        if self._held:
            relax = self._limits.max_buffered_in // 4
        if self._reserved:
            relax = max(relax, self._reserved - RESERVE_QUANTUM + 1)  # hysteresis: two quanta wide
        self.relax_below = relax
