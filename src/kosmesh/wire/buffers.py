"""The node-wide budget for bytes a remote makes us hold, shared by all connections of a host.

One connection is bounded on its own (``ConnectionLimits``), but a peer with many connections,
or many peers at once, could still add up to more than the node can afford. So the host
creates one :class:`BufferBudget` and hands it to every connection:

* inbound, each connection core *reserves* the unread bytes it holds beyond a small allowance
  (one quantum) from the budget, in quanta, so the shared total is touched once per quantum
  rather than once per frame, and an idle connection reserves nothing; when the node
  total is over ``max_buffered_in``, a connection holding more than its fair share sheds its
  biggest streams (see ``connection_core``);
* the figures (``buffered_in``, ``buffered_out``) are summed over the member connections on
  demand, for status views and tests.

Sans-I/O: plain counters, no clock, no I/O.
"""

from __future__ import annotations

from typing import Final, Protocol

DEFAULT_NODE_MAX_BUFFERED_IN: Final = 128 * 1024 * 1024
RESERVE_QUANTUM: Final = 64 * 1024  # also each connection's allowance that is not reserved


class InboundShare(Protocol):
    """A connection's share of the inbound budget (its core's ``InboundBounds``)."""

    @property
    def reserved(self) -> int: ...

    def request_check(self) -> None: ...


class BufferHolder(Protocol):
    """What a member connection reports: bytes it holds for the application and for the wire."""

    @property
    def buffered_in(self) -> int: ...

    @property
    def buffered_out(self) -> int: ...


class BufferBudget:
    """Node-wide totals and the node-wide cap on unread inbound bytes."""

    __slots__ = ("_members", "_shares", "max_buffered_in", "reserved_in")

    def __init__(self, max_buffered_in: int = DEFAULT_NODE_MAX_BUFFERED_IN) -> None:
        if max_buffered_in < RESERVE_QUANTUM:
            raise ValueError(f"max_buffered_in must be at least {RESERVE_QUANTUM} bytes")
        self.max_buffered_in = max_buffered_in
        self.reserved_in = 0  # sum of the connection cores' reservations: what the cap is checked against
        self._shares: set[InboundShare] = set()  # the connection cores sharing the cap
        self._members: set[BufferHolder] = set()  # the connections reporting figures

    def join(self, member: BufferHolder) -> None:
        self._members.add(member)

    def leave(self, member: BufferHolder) -> None:
        self._members.discard(member)

    @property
    def members(self) -> int:
        return len(self._members)

    def add_share(self, share: InboundShare) -> None:
        self._shares.add(share)

    def remove_share(self, share: InboundShare) -> None:
        self._shares.discard(share)

    def shed_elsewhere(self, asking: InboundShare) -> None:
        """The node is over its cap: ask every other connection over its fair share to shed.

        They do so on their next check, which their adapters run soon; so a connection that
        filled its buffers and went quiet cannot keep the node over budget.
        """
        share = self.fair_share()
        for other in list(self._shares):
            if other is not asking and other.reserved > share:
                other.request_check()

    @property
    def over(self) -> bool:
        return self.reserved_in > self.max_buffered_in

    def fair_share(self) -> int:
        """What one connection may hold while the node is over budget before it must shed."""
        return self.max_buffered_in // max(1, len(self._shares))

    @property
    def buffered_in(self) -> int:
        """Unread inbound bytes held by all member connections now."""
        return sum(member.buffered_in for member in self._members)

    @property
    def buffered_out(self) -> int:
        """Outbound bytes accepted from the application and not yet handed to the kernel."""
        return sum(member.buffered_out for member in self._members)
