"""When to dial whom so a node reconnects on its own after a restart, crash or partition.

A sans-I/O schedule: the node tells it what happened (connected, disconnected, dial failed)
with ``now``; it answers which targets are due and when the next one will be. Seeds are kept
forever; a peer we dialed ourselves is kept until it has failed for ``give_up_s``. Only the
side that dialed redials, so two nodes cut apart do not both dial and end up with two
connections. Delays double from ``min_s`` to ``max_s`` with jitter, so a seed that comes back
is not hit by every node at the same instant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

JITTER = 0.2  # each delay is drawn from [d·(1-JITTER), d·(1+JITTER)]


@dataclass(slots=True)
class RedialTarget:
    """One peer (or one seed address) the node wants to stay connected to."""

    key: str  # the peer id, or the address of a seed whose peer id we have not learned yet
    addrs: list[str]
    forever: bool  # a seed: never given up
    connected: bool = False
    failures: int = 0
    failing_since: float | None = None
    due_at: float | None = None  # None while connected or while a dial is in flight
    dialing: bool = False


@dataclass(slots=True)
class RedialPolicy:
    min_s: float = 1.0
    max_s: float = 60.0
    give_up_s: float = 600.0

    def delay(self, failures: int, rng: random.Random) -> float:
        base = min(self.max_s, self.min_s * 2.0 ** min(failures, 32))
        return base * rng.uniform(1 - JITTER, 1 + JITTER)


@dataclass
class Redialer:
    """The schedule. Keys are peer ids once known; ``peer_of`` maps seed addresses to them."""

    policy: RedialPolicy = field(default_factory=RedialPolicy)
    rng: random.Random = field(default_factory=random.Random)
    targets: dict[str, RedialTarget] = field(default_factory=dict)
    max_targets: int = 256  # bounds the state a flood of inbound-then-dialed peers can create

    def keep_seed(self, addr: str, now: float, peer_id: str | None = None) -> None:
        """A seed: dial now, and redial whenever it is not connected, for as long as we run."""
        key = peer_id or addr
        if key not in self.targets:
            self.targets[key] = RedialTarget(key, [addr], forever=True, due_at=now)

    def keep_peer(self, peer_id: str, addrs: list[str], now: float, *, connected: bool) -> None:
        """A peer we dialed (or knew before a restart): redial it if the connection drops."""
        if not addrs:
            return
        target = self.targets.get(peer_id)
        if target is None:
            if len(self.targets) >= self.max_targets:
                return
            target = self.targets[peer_id] = RedialTarget(peer_id, [], forever=False)
            target.due_at = None if connected else now
        for addr in addrs:
            if addr not in target.addrs:
                target.addrs.append(addr)
        del target.addrs[4:]
        if connected:
            self._mark_connected(target)

    def due(self, now: float) -> list[RedialTarget]:
        """Targets to dial now; each is marked as dialing until :meth:`dial_failed` or :meth:`connected`."""
        ready = [t for t in self.targets.values() if t.due_at is not None and t.due_at <= now and not t.dialing]
        for target in ready:
            target.dialing = True
            target.due_at = None
        return ready

    def next_due(self) -> float | None:
        times = [t.due_at for t in self.targets.values() if t.due_at is not None]
        return min(times) if times else None

    def connected(self, peer_id: str, now: float, *, dialed_addr: str | None = None) -> None:
        """Any connection to ``peer_id`` is up; a seed dialed by address learns its peer id here."""
        if dialed_addr is not None and dialed_addr in self.targets:
            seed = self.targets.pop(dialed_addr)
            seed.key = peer_id
            existing = self.targets.get(peer_id)
            if existing is not None:
                seed.addrs += [a for a in existing.addrs if a not in seed.addrs]
            self.targets[peer_id] = seed
        target = self.targets.get(peer_id)
        if target is not None:
            self._mark_connected(target)

    def disconnected(self, peer_id: str, now: float) -> None:
        """The last connection to ``peer_id`` closed: schedule the first redial."""
        target = self.targets.get(peer_id)
        if target is None or not target.connected:
            return
        target.connected = False
        target.failing_since = now
        if not target.dialing:
            target.due_at = now + self.policy.delay(0, self.rng)

    def dial_failed(self, key: str, now: float) -> None:
        target = self.targets.get(key)
        if target is None:
            return
        target.dialing = False
        if target.connected:
            return  # the peer dialed us meanwhile
        target.failures += 1
        if target.failing_since is None:
            target.failing_since = now
        if not target.forever and now - target.failing_since >= self.policy.give_up_s:
            del self.targets[key]
            return
        target.due_at = now + self.policy.delay(target.failures, self.rng)

    def dial_succeeded(self, key: str, peer_id: str, now: float) -> None:
        self.connected(peer_id, now, dialed_addr=key if key != peer_id else None)
        target = self.targets.get(peer_id)
        if target is not None:
            target.dialing = False

    def _mark_connected(self, target: RedialTarget) -> None:
        target.connected = True
        target.failures = 0
        target.failing_since = None
        target.due_at = None

    def describe(self, now: float) -> list[dict[str, object]]:
        """For ``kosmesh status``: each target, whether it is up, and when it is next dialed."""
        return [
            {"target": t.key, "seed": t.forever, "connected": t.connected, "failures": t.failures,
             "next_dial_in_s": None if t.due_at is None else round(max(0.0, t.due_at - now), 1)}
            for t in self.targets.values()
        ]  # fmt: skip
