"""The connection-slot core: admission, eviction and release, and the bounds no sequence breaks."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kosmesh.wire.slots import ConnectionSlots, address_group


def slots(**overrides: int) -> ConnectionSlots:
    limits = {
        "max_connections": 4,
        "reserved_outbound": 1,
        "max_inbound_per_ip": 3,
        "max_pending_inbound": 3,
        "max_pending_inbound_per_ip": 2,
    }
    return ConnectionSlots(**{**limits, **overrides})


def test_address_groups() -> None:
    assert address_group("10.1.2.3") == "10.1.2.3"
    assert address_group("2001:db8::1") == address_group("2001:db8::ffff:1:2") == "2001:db8::/64"
    assert address_group("2001:db8:0:1::1") != address_group("2001:db8::1")
    assert address_group("::ffff:10.1.2.3") == "10.1.2.3"
    assert address_group("fe80::1%eth0") == "fe80::/64"
    assert address_group("not an address") == "not an address"


def test_inbound_life_cycle() -> None:
    core = slots()
    assert core.admit_inbound(1, "10.0.0.1").refused is None
    assert core.pending_inbound == 1 and core.in_table == 0  # a handshake takes no table slot
    assert core.establish(1) is None
    assert (core.pending_inbound, core.established_inbound, core.in_table) == (0, 1, 1)
    core.release(1)
    core.release(1)  # twice is harmless
    assert core.describe() == {
        "pending_inbound": 0,
        "pending_outbound": 0,
        "established_inbound": 0,
        "established_outbound": 0,
        "addresses": 0,
    }


def test_inbound_fills_only_its_share_of_the_table() -> None:
    core = slots(max_inbound_per_ip=10, max_pending_inbound_per_ip=10)
    for ticket in range(3):
        assert core.admit_inbound(ticket, "10.0.0.1").refused is None
        assert core.establish(ticket) is None
    assert core.admit_inbound(9, "10.0.0.2").refused == "no inbound slot left (the rest are kept for our dials)"
    assert core.admit_outbound(10) is None
    assert core.admit_outbound(11) == "connection table full"
    assert core.establish(10) is None


def test_a_handshake_that_finds_the_table_full_is_released() -> None:
    core = slots(max_inbound_per_ip=10, max_pending_inbound_per_ip=10)
    for ticket in range(3):
        core.admit_inbound(ticket, "10.0.0.1")
    core.admit_inbound(3, "10.0.0.1")  # fails: the pool holds 3
    for ticket in range(2):
        assert core.establish(ticket) is None
    core.admit_outbound(7)
    core.establish(7)
    core.admit_outbound(8)  # 2 inbound + 1 outbound + 1 dial: all 4 slots taken
    assert core.establish(2) == "connection table full"
    assert core.pending_inbound == 0 and core.established_inbound == 2


def test_eviction_takes_the_oldest_handshake_of_the_busiest_address() -> None:
    core = slots(max_pending_inbound=3, max_pending_inbound_per_ip=2)
    core.admit_inbound(1, "10.0.0.1")
    core.admit_inbound(2, "10.0.0.1")
    core.admit_inbound(3, "10.0.0.2")
    admission = core.admit_inbound(4, "10.0.0.3")
    assert admission.refused is None and admission.evict == 1
    assert core.admit_inbound(5, "10.0.0.3").refused == "too many handshakes in progress"  # all hold one
    assert core.pending_inbound == 3


def test_tickets_are_not_reused() -> None:
    core = slots()
    core.admit_inbound(1, "10.0.0.1")
    with pytest.raises(ValueError):
        core.admit_inbound(1, "10.0.0.2")
    with pytest.raises(ValueError):
        core.admit_outbound(1)


def test_bad_limits() -> None:
    with pytest.raises(ValueError):
        slots(reserved_outbound=4)
    with pytest.raises(ValueError):
        slots(max_pending_inbound=0)


ADDRESSES = st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1", "2001:db8::2"])


class SlotMachine(RuleBasedStateMachine):
    """Random admissions, handshakes and closes against a plain model of who holds what."""

    def __init__(self) -> None:
        super().__init__()
        self.core = slots(max_connections=5, reserved_outbound=2, max_pending_inbound=4)
        self.next_ticket = 0
        self.stage: dict[int, str] = {}  # the model: ticket -> pending-in | in | pending-out | out
        self.group: dict[int, str] = {}

    def _ticket(self) -> int:
        self.next_ticket += 1
        return self.next_ticket

    def _count(self, stage: str, group: str | None = None) -> int:
        return sum(1 for t, s in self.stage.items() if s == stage and (group is None or self.group.get(t) == group))

    @rule(ip=ADDRESSES)
    def inbound(self, ip: str) -> None:
        ticket, group = self._ticket(), address_group(ip)
        pending_here = self._count("pending-in", group)
        admission = self.core.admit_inbound(ticket, ip)
        if admission.refused is not None:
            assert admission.evict is None
            return
        if admission.evict is not None:
            victim = admission.evict
            assert self.stage.pop(victim) == "pending-in"
            assert self._count("pending-in", self.group[victim]) + 1 > pending_here  # it was the busier
            del self.group[victim]
        else:
            assert self._count("pending-in") < self.core.max_pending_inbound
        self.stage[ticket], self.group[ticket] = "pending-in", group

    @rule()
    def outbound(self) -> None:
        ticket = self._ticket()
        full = self._count("in") + self._count("out") + self._count("pending-out") >= self.core.max_connections
        assert (self.core.admit_outbound(ticket) is not None) == full
        if not full:
            self.stage[ticket] = "pending-out"

    @precondition(lambda self: any(s.startswith("pending") for s in self.stage.values()))
    @rule(data=st.data())
    def handshake_done(self, data: st.DataObject) -> None:
        ticket = data.draw(st.sampled_from(sorted(t for t, s in self.stage.items() if s.startswith("pending"))))
        if self.core.establish(ticket) is None:
            self.stage[ticket] = "in" if self.stage[ticket] == "pending-in" else "out"
        else:
            assert self.stage.pop(ticket) == "pending-in"  # our dials always keep their slot
            self.group.pop(ticket)

    @precondition(lambda self: bool(self.stage))
    @rule(data=st.data())
    def closed(self, data: st.DataObject) -> None:
        ticket = data.draw(st.sampled_from(sorted(self.stage)))
        self.core.release(ticket)
        del self.stage[ticket]
        self.group.pop(ticket, None)

    @invariant()
    def counts_match_the_model_and_stay_within_bounds(self) -> None:
        core = self.core
        assert core.pending_inbound == self._count("pending-in") <= core.max_pending_inbound
        assert core.established_inbound == self._count("in") <= core.max_inbound
        assert core.pending_outbound == self._count("pending-out")
        assert core.established_outbound == self._count("out")
        assert core.in_table <= core.max_connections
        for group in set(self.group.values()):
            assert self._count("pending-in", group) <= core.max_pending_inbound_per_ip
            assert self._count("pending-in", group) + self._count("in", group) <= core.max_inbound_per_ip
        assert core.describe()["addresses"] == len(set(self.group.values()))


TestSlotMachine = SlotMachine.TestCase
TestSlotMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
