"""Connection slots: which sockets a host may hold, decided before any handshake (sans-I/O).

A TCP socket costs a file descriptor from the moment the kernel hands it over, and a remote
can open them for free. So every socket is admitted or refused the instant it is accepted,
from what the host already holds:

* **established** connections (secured and multiplexed) share one table of ``max_connections``
  slots with our own dials in progress; inbound connections may fill at most
  ``max_connections - reserved_outbound`` of it, so a host flooded by inbound peers can
  still dial out;
* **pending** inbound sockets (accepted, handshake not finished) are counted apart, at most
  ``max_pending_inbound`` in total and ``max_pending_inbound_per_ip`` per address: idle sockets
  never take a slot of the table. When the pending pool is full, a socket from an address with
  fewer pending handshakes than the busiest one takes the place of that address's oldest
  handshake, so idle sockets from a few addresses cannot lock everyone else out;
* at most ``max_inbound_per_ip`` inbound sockets, pending and established, per address.

IPv6 addresses are grouped by their /64 (one host's usual allocation). The caller closes
what this core refuses or evicts; it reads no clock and holds no sockets.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal

Stage = Literal["pending-in", "in", "pending-out", "out"]


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to an inbound socket: ``refused`` says why not; ``evict`` names a pending one to close."""

    refused: str | None = None
    evict: int | None = None


def address_group(ip: str) -> str:
    """The unit the per-address caps count: the IPv4 address, or the /64 of an IPv6 one."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(addr) >> 64 << 64, 64)))
    return str(addr)


class ConnectionSlots:
    """Counts sockets by stage and address; keys are the caller's tickets (ints)."""

    def __init__(
        self,
        *,
        max_connections: int,
        reserved_outbound: int,
        max_inbound_per_ip: int,
        max_pending_inbound: int,
        max_pending_inbound_per_ip: int,
    ) -> None:
        if max_connections < 1 or not 0 <= reserved_outbound < max_connections:
            raise ValueError("need max_connections >= 1 and 0 <= reserved_outbound < max_connections")
        if min(max_inbound_per_ip, max_pending_inbound, max_pending_inbound_per_ip) < 1:
            raise ValueError("the inbound caps must be positive")
        self.max_connections = max_connections
        self.max_inbound = max_connections - reserved_outbound
        self.max_inbound_per_ip = max_inbound_per_ip
        self.max_pending_inbound = max_pending_inbound
        self.max_pending_inbound_per_ip = max_pending_inbound_per_ip
        self._stage: dict[int, Stage] = {}
        self._group: dict[int, str] = {}  # inbound tickets -> address group
        self._pending_by_group: dict[str, dict[int, None]] = {}  # oldest first
        self._inbound_by_group: dict[str, int] = {}  # pending and established
        self.pending_inbound = 0
        self.pending_outbound = 0
        self.established_inbound = 0
        self.established_outbound = 0

    def __contains__(self, ticket: int) -> bool:
        """Whether ``ticket`` still holds a slot (an evicted or released one does not)."""
        return ticket in self._stage

    @property
    def in_table(self) -> int:
        """Slots of the connection table in use: established connections and our dials in progress."""
        return self.established_inbound + self.established_outbound + self.pending_outbound

    def _table_refusal(self) -> str | None:
        if self.in_table >= self.max_connections:
            return "connection table full"
        if self.established_inbound >= self.max_inbound:
            return "no inbound slot left (the rest are kept for our dials)"
        return None

    def admit_inbound(self, ticket: int, ip: str) -> Admission:
        """An accepted socket from ``ip``: admit it as a pending handshake, or say why not."""
        if ticket in self._stage:
            raise ValueError(f"ticket {ticket} is already in use")
        refused = self._table_refusal()
        if refused is not None:
            return Admission(refused=refused)
        group = address_group(ip)
        if self._inbound_by_group.get(group, 0) >= self.max_inbound_per_ip:
            return Admission(refused="too many connections from this address")
        pending_here = len(self._pending_by_group.get(group, ()))
        if pending_here >= self.max_pending_inbound_per_ip:
            return Admission(refused="too many handshakes from this address")
        evict = None
        if self.pending_inbound >= self.max_pending_inbound:
            busiest = max(self._pending_by_group.values(), key=len)
            if len(busiest) <= pending_here:
                return Admission(refused="too many handshakes in progress")
            evict = next(iter(busiest))
            self.release(evict)
        self._stage[ticket] = "pending-in"
        self._group[ticket] = group
        self._pending_by_group.setdefault(group, {})[ticket] = None
        self._inbound_by_group[group] = self._inbound_by_group.get(group, 0) + 1
        self.pending_inbound += 1
        return Admission(evict=evict)

    def admit_outbound(self, ticket: int) -> str | None:
        """A dial we start: it takes a table slot now; returns why not if none is left."""
        if ticket in self._stage:
            raise ValueError(f"ticket {ticket} is already in use")
        if self.in_table >= self.max_connections:
            return "connection table full"
        self._stage[ticket] = "pending-out"
        self.pending_outbound += 1
        return None

    def establish(self, ticket: int) -> str | None:
        """The handshake finished: move to the table; returns why not (the ticket is then released)."""
        stage = self._stage.get(ticket)
        if stage == "pending-out":
            self.pending_outbound -= 1
            self.established_outbound += 1
            self._stage[ticket] = "out"
            return None
        if stage != "pending-in":
            return "not a pending connection" if stage is None else None
        refused = self._table_refusal()  # pending handshakes take no table slot: no need to unpend first
        if refused is not None:
            self.release(ticket)
            return refused
        self._unpend(ticket)
        self.established_inbound += 1
        self._stage[ticket] = "in"
        return None

    def release(self, ticket: int) -> None:
        """The socket is gone, at whatever stage; releasing twice is harmless."""
        stage = self._stage.pop(ticket, None)
        if stage is None:
            return
        if stage == "pending-out":
            self.pending_outbound -= 1
        elif stage == "out":
            self.established_outbound -= 1
        else:
            if stage == "pending-in":
                self._unpend(ticket)
            else:
                self.established_inbound -= 1
            group = self._group.pop(ticket)
            left = self._inbound_by_group[group] - 1
            if left:
                self._inbound_by_group[group] = left
            else:
                del self._inbound_by_group[group]

    def _unpend(self, ticket: int) -> None:
        group = self._group[ticket]
        pending = self._pending_by_group[group]
        del pending[ticket]
        if not pending:
            del self._pending_by_group[group]
        self.pending_inbound -= 1

    def describe(self) -> dict[str, Any]:
        return {
            "pending_inbound": self.pending_inbound,
            "pending_outbound": self.pending_outbound,
            "established_inbound": self.established_inbound,
            "established_outbound": self.established_outbound,
            "addresses": len(self._inbound_by_group),
        }
