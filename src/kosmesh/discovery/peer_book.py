"""The peer book: who this node has met, over which connections, and what each peer said it is.

It journals connections, keeps one row per peer (addresses from identify; role, capabilities and
agents from record exchange, bounded in size) and the trust-on-first-use pins of addresses dialed
without ``/p2p/``. Everything it keeps is about the authenticated peer of a connection, never
about an identity a message merely names.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from kosmesh.identity import PeerId
from kosmesh.storage import Storage
from kosmesh.wire.connection import Connection
from kosmesh.wire.multiaddr import Multiaddr, MultiaddrError
from kosmesh.wire.service import Service, ServiceRuntime

MAX_ROLE = 32
MAX_CAPABILITIES = 32
MAX_AGENTS = 32
MAX_NAME = 64
MAX_ADDRS = 16
MAX_AGENT_VERSION = 128


def bounded_strings(value: object, limit: int, max_len: int = MAX_NAME) -> list[str]:
    """The first ``limit`` strings of ``value`` (a list), each cut to ``max_len``; anything else: []."""
    if not isinstance(value, list):
        return []
    return [v[:max_len] for v in value[:limit] if isinstance(v, str)]


def remote_multiaddr(conn: Connection) -> str:
    """``/ip4/…/tcp/…`` of the connection's remote end, or "" if it has none we can spell."""
    if conn.remote_address is None:
        return ""
    with contextlib.suppress(MultiaddrError, ValueError):
        return str(Multiaddr.from_tcp(*conn.remote_address))
    return ""


class PeerBookService(Service):
    """At most ~4 KiB of what a peer says about itself is kept (32 capabilities and 32 agents of 64
    characters, 16 addresses), and at most ``[storage] peers_max_rows`` peers (retention)."""

    name = "peers"

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.pins: dict[str, str] = {}  # address dialed without /p2p/ -> the peer id that answered first

    async def start(self, runtime: ServiceRuntime) -> None:
        await super().start(runtime)
        self.pins = await self.storage.peers.pins()

    def peer_connected(self, conn: Connection, now: float) -> None:
        peer, when, addr = str(conn.remote_peer_id), time.time(), remote_multiaddr(conn)
        self.storage.connections.opened(conn.connection_id, peer, conn.direction, addr, when)
        # An address we dialed is one the peer listens on: known at once, before identify says more.
        # (An inbound connection's remote port is ephemeral: never kept as an address.)
        dialed = [addr] if conn.direction == "outbound" and addr else None
        self.storage.peers.seen(peer, addrs=dialed, now=when)

    def peer_disconnected(self, conn: Connection, now: float) -> None:
        when = time.time()
        self.storage.connections.closed(conn.connection_id, conn.close_reason, when)
        self.storage.peers.last_seen(str(conn.remote_peer_id), when)

    def identified(self, peer: PeerId, listen_addrs: Sequence[Multiaddr], agent_version: str) -> None:
        """What identify told us about an authenticated peer."""
        addrs = [str(a) for a in listen_addrs[:MAX_ADDRS]]
        self.storage.peers.seen(str(peer), addrs=addrs, agent_version=agent_version[:MAX_AGENT_VERSION])

    def described(self, peer: PeerId, record: dict[str, Any]) -> None:
        """A node record (role, capabilities, agents) the authenticated ``peer`` sent about itself."""
        role = record.get("role")
        self.storage.peers.seen(
            str(peer),
            role=role if isinstance(role, str) and len(role) <= MAX_ROLE else None,
            capabilities=bounded_strings(record.get("capabilities"), MAX_CAPABILITIES),
            agents=bounded_strings(record.get("agents"), MAX_AGENTS),
        )

    def pin(self, address: str, peer: PeerId) -> str | None:
        """Trust on first use of ``address``: keep the peer that answered; returns the peer id it was
        already pinned to, if that is another one (the caller then refuses the connection)."""
        pinned = self.pins.get(address)
        if pinned is not None:
            return pinned if pinned != str(peer) else None
        self.pins[address] = str(peer)
        self.storage.peers.pin(address, str(peer), time.time())
        return None

    def pinned_peers(self) -> set[str]:
        return set(self.pins.values())

    async def known_addrs(self, peer: PeerId) -> list[str]:
        return await self.storage.peers.addrs(str(peer))

    async def peers(self) -> list[dict[str, Any]]:
        return await self.storage.peers.all()
