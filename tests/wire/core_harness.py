"""Two connection cores wired back to back in memory, with a virtual clock (no sockets, no sleeps).

aioquic's ``client_and_server()`` pattern: each :class:`Side` feeds its core the other side's
bytes, records the events, and (unless told not to) reads every byte as the application would.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import TypeVar

from kosmesh.identity import Ed25519PrivateKey
from kosmesh.wire.buffers import BufferBudget
from kosmesh.wire.connection_core import ConnectionCore
from kosmesh.wire.connection_events import ConnectionLimits, CoreEvent
from kosmesh.wire.yamux import DataReceived

E = TypeVar("E")
PROTOCOLS = ("/test/echo/1.0.0", "/test/other/1.0.0")


class Side:
    """One core plus what its application saw."""

    def __init__(self, core: ConnectionCore, *, auto_consume: bool = True) -> None:
        self.core = core
        self.auto_consume = auto_consume
        self.woken = 0  # times the core asked for an inbound check (another connection needs room)
        self.events: list[CoreEvent] = []
        self.data: defaultdict[int, bytearray] = defaultdict(bytearray)

    def feed(self, raw: bytes, now: float) -> list[CoreEvent]:
        return self._handle(self.core.receive_data(raw, now), now)

    def timer(self, now: float) -> list[CoreEvent]:
        return self._handle(self.core.handle_timer(now), now)

    def _handle(self, events: list[CoreEvent], now: float) -> list[CoreEvent]:
        self.events += events
        for event in events:
            if isinstance(event, DataReceived):
                self.data[event.stream_id] += event.data
                if self.auto_consume:
                    self.core.consume(event.stream_id, len(event.data))
        if self.core.inbound_check_due:
            events = events + self._handle(self.core.check_inbound(now), now)
        return events

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def clear(self) -> None:
        self.events.clear()


def exchange(a: Side, b: Side, now: float, max_rounds: int = 10_000) -> None:
    """Shuttle bytes both ways until neither side has anything left to send."""
    for _ in range(max_rounds):
        x = a.core.data_to_send()
        y = b.core.data_to_send()
        if not x and not y:
            return
        if x:
            b.feed(x, now)
        if y:
            a.feed(y, now)
    raise AssertionError("cores never went quiet")


def make_core(
    initiator: bool,
    now: float = 0.0,
    *,
    limits: ConnectionLimits | None = None,
    supports: Iterable[str] = PROTOCOLS,
    budget: BufferBudget | None = None,
    identity: Ed25519PrivateKey | None = None,
    wake: Callable[[], None] | None = None,
    **limit_changes: float,
) -> ConnectionCore:
    limits = replace(limits or ConnectionLimits(), **limit_changes)  # type: ignore[arg-type]
    supported = frozenset(supports)
    return ConnectionCore(
        identity=identity or Ed25519PrivateKey.generate(),
        initiator=initiator,
        limits=limits,
        supports=supported.__contains__,
        now=now,
        budget=budget,
        wake=wake,
    )


def run_requested_checks(sides: Iterable[Side], now: float) -> None:
    """What adapters do soon after ``wake``: run the inbound check of every side that asked."""
    for side in sides:
        if side.woken:
            side.woken = 0
            side._handle(side.core.check_inbound(now), now)


def client_and_server(
    now: float = 0.0,
    *,
    client_auto_consume: bool = True,
    server_auto_consume: bool = True,
    server_budget: BufferBudget | None = None,
    **limit_changes: float,
) -> tuple[Side, Side]:
    """A client and a server core with the upgrade done at ``now``."""
    client = Side(make_core(True, now, **limit_changes), auto_consume=client_auto_consume)
    holder: list[Side] = []
    server_core = make_core(False, now, budget=server_budget, wake=lambda: _woken(holder), **limit_changes)
    server = Side(server_core, auto_consume=server_auto_consume)
    holder.append(server)
    exchange(client, server, now)
    assert client.core.phase == "open" and server.core.phase == "open"
    client.clear()
    server.clear()
    return client, server


def _woken(holder: list[Side]) -> None:
    holder[0].woken += 1
