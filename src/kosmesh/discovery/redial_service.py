"""The redial service: keeps the seeds and the peers this node dialed connected, on their own.

The schedule is the sans-I/O :class:`~kosmesh.discovery.redial.Redialer`; this service feeds it
connection events and runs its dials when its timer falls due. A seed given without ``/p2p/`` is
accepted on first use: the peer that answers is pinned (and a warning logged), and from then on
the seed is dialed as that peer, so another key answering at the same address is refused.
"""

from __future__ import annotations

import logging
from typing import Any

from kosmesh.discovery.peer_book import PeerBookService, remote_multiaddr
from kosmesh.discovery.redial import Redialer, RedialPolicy, RedialTarget
from kosmesh.identity import PeerId
from kosmesh.wire.connection import Connection
from kosmesh.wire.host import DialError, Host
from kosmesh.wire.multiaddr import Multiaddr, MultiaddrError
from kosmesh.wire.service import Service, ServiceRuntime

log = logging.getLogger(__name__)

RECONNECT_KNOWN_PEERS = 16  # peers from before a restart that the node dials again at start


class RedialService(Service):
    name = "redial"

    def __init__(self, host: Host, book: PeerBookService, policy: RedialPolicy, *, seeds: list[str]) -> None:
        self.host = host
        self.book = book
        self.redialer = Redialer(policy)
        self.seeds = list(seeds)

    async def start(self, runtime: ServiceRuntime) -> None:
        await super().start(runtime)
        now = runtime.now()
        for seed in self.seeds:
            addr, peer = self._seed_target(seed)
            if peer != str(self.host.peer_id):
                self.redialer.keep_seed(addr, now, peer)
        for known in (await self.book.peers())[:RECONNECT_KNOWN_PEERS]:
            if known["peer_id"] == str(self.host.peer_id):
                continue
            addrs = [a if "/p2p/" in a else f"{a}/p2p/{known['peer_id']}" for a in known["addrs"][:2]]
            self.redialer.keep_peer(known["peer_id"], addrs, now, connected=False)
        runtime.timers_changed()

    def _seed_target(self, addr: str) -> tuple[str, str | None]:
        """(address to dial, peer id if known): a pinned seed is dialed as the peer first met there."""
        try:
            ma = Multiaddr.parse(addr)
        except MultiaddrError:
            return addr, None
        if ma.peer_id is not None:
            return addr, str(ma.peer_id)
        pinned = self.book.pins.get(addr)
        if pinned is None:
            return addr, None
        return f"{addr}/p2p/{pinned}", pinned

    # -- events ------------------------------------------------------------------------
    def peer_connected(self, conn: Connection, now: float) -> None:
        peer = str(conn.remote_peer_id)
        addr = remote_multiaddr(conn)
        if conn.direction == "outbound" and addr:  # we dialed it, so we are the side that redials it
            self.redialer.keep_peer(peer, [f"{addr}/p2p/{peer}"], now, connected=True)
        else:
            self.redialer.connected(peer, now)

    def peer_disconnected(self, conn: Connection, now: float) -> None:
        if self.host.connection_to(conn.remote_peer_id) is None:
            self.redialer.disconnected(str(conn.remote_peer_id), now)
            self.runtime.timers_changed()

    def next_timer(self) -> float | None:
        return self.redialer.next_due()

    def handle_timer(self, now: float) -> None:
        for target in self.redialer.due(now):
            self.runtime.spawn(self._redial(target), f"redial {target.key}")

    async def _redial(self, target: RedialTarget) -> None:
        error: Exception | None = None
        for addr in list(target.addrs):
            try:
                conn = await self.host.dial(addr)
            except DialError as exc:
                error = exc
                continue
            if target.forever and "/p2p/" not in addr:
                self._pin_seed(addr, conn.remote_peer_id)
            self.redialer.dial_succeeded(target.key, str(conn.remote_peer_id), self.runtime.now())
            return
        log.info("redial %s failed (%d before): %s", target.key, target.failures, error)
        self.redialer.dial_failed(target.key, self.runtime.now())
        self.runtime.timers_changed()

    def _pin_seed(self, addr: str, peer: PeerId) -> None:
        other = self.book.pin(addr, peer)
        if other is None:
            log.warning("seed %s has no /p2p/: trusting %s, which answered first, and pinning it", addr, peer)
            target = self.redialer.targets.get(addr) or self.redialer.targets.get(str(peer))
            if target is not None:
                target.addrs = [f"{addr}/p2p/{peer}" if a == addr else a for a in target.addrs]

    def describe(self) -> dict[str, Any]:
        return {"targets": self.redialer.describe(self.runtime.now())}
