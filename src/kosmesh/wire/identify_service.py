"""libp2p identify (``/ipfs/id/1.0.0``, and push ``/ipfs/id/push/1.0.0``) as a service.

Every new connection is asked who it is. The answer must carry the key the Noise handshake
authenticated, or the connection is aborted: a peer cannot claim another's addresses or
protocols. What a peer said is kept in :attr:`IdentifyService.peer_info` only while it has a
connection (and for at most ``max_peers`` peers), and subscribers of
:attr:`IdentifyService.on_identified` are told. We answer with our agent, listen addresses,
the address we see the asker at, and the protocols the host serves at that moment.

The codec is :mod:`kosmesh.wire.identify`; this is its asyncio adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from kosmesh.identity import PeerId
from kosmesh.wire import identify
from kosmesh.wire.connection import Connection, ConnectionClosedError, Stream
from kosmesh.wire.host import Host
from kosmesh.wire.multiaddr import Multiaddr, MultiaddrError
from kosmesh.wire.service import Service, StreamHandler

log = logging.getLogger(__name__)

IDENTIFY_PROTOCOL = identify.PROTOCOL_ID
IDENTIFY_PUSH_PROTOCOL = identify.PUSH_PROTOCOL_ID
IDENTIFY_PROTOCOL_VERSION = "ipfs/0.1.0"
IDENTIFY_TIMEOUT = 10.0  # for the whole exchange, asked or pushed


@dataclass(slots=True)
class PeerInfo:
    """What identify told us about a peer."""

    agent_version: str = ""
    protocol_version: str = ""
    protocols: tuple[str, ...] = ()
    listen_addrs: tuple[Multiaddr, ...] = ()
    observed_addr: Multiaddr | None = None


IdentifiedCallback = Callable[[PeerId, PeerInfo], None]


class IdentifyService(Service):
    """Asks each new connection who it is, answers the same question, and accepts pushes."""

    name: ClassVar[str] = "identify"

    def __init__(self, host: Host, *, max_peers: int | None = None) -> None:
        self.host = host
        self.max_peers = max_peers if max_peers is not None else host.limits.max_connections
        self.peer_info: dict[PeerId, PeerInfo] = {}  # connected peers only
        self.on_identified: list[IdentifiedCallback] = []
        self.mismatches = 0  # connections aborted because identify named another key

    def stream_handlers(self) -> Mapping[str, StreamHandler]:
        return {IDENTIFY_PROTOCOL: self._serve, IDENTIFY_PUSH_PROTOCOL: self._receive_push}

    # -- answering -------------------------------------------------------------------------
    def info_for(self, conn: Connection) -> identify.IdentifyInfo:
        """Our identify message as the peer of ``conn`` should see it."""
        observed = None
        if conn.remote_address is not None:
            with contextlib.suppress(MultiaddrError, ValueError):
                observed = Multiaddr.from_tcp(*conn.remote_address)
        host = self.host
        return identify.IdentifyInfo(
            protocol_version=IDENTIFY_PROTOCOL_VERSION,
            agent_version=host.agent_version,
            public_key=host.identity.public_key.to_protobuf(),
            listen_addrs=tuple(a.without_peer_id() for a in host.listen_addrs)[: identify.MAX_ITEMS],
            observed_addr=observed,
            protocols=tuple(host.protocols)[: identify.MAX_ITEMS],
            signed_peer_record=None,
        )

    async def _serve(self, stream: Stream) -> None:
        await stream.write_all(identify.encode_identify(self.info_for(stream.connection)))

    # -- asking ----------------------------------------------------------------------------
    def peer_connected(self, conn: Connection, now: float) -> None:
        self.runtime.spawn(self._identify(conn), f"identify {conn.remote_peer_id}")

    def peer_disconnected(self, conn: Connection, now: float) -> None:
        if self.host.connection_to(conn.remote_peer_id) is None:
            self.peer_info.pop(conn.remote_peer_id, None)

    async def _identify(self, conn: Connection) -> None:
        try:
            info = await self.request(conn)
        except (ConnectionError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
            log.info("could not identify %s on connection %s: %s", conn.remote_peer_id, conn.connection_id,
                     exc or type(exc).__name__)  # fmt: skip
            return
        self._announce(conn.remote_peer_id, info)

    async def request(self, conn: Connection) -> PeerInfo:
        """Ask the peer of ``conn`` who it is; a key other than the authenticated one aborts ``conn``."""
        async with asyncio.timeout(IDENTIFY_TIMEOUT):
            stream = await conn.open_stream(IDENTIFY_PROTOCOL)
            await stream.close()
            reader = identify.IdentifyReader()
            info = None
            while info is None:
                chunk = await stream.read()
                if not chunk:
                    raise ConnectionClosedError("identify stream ended early")
                info = reader.receive_data(chunk)
        stream.reset()  # the first complete message is all we use: drop whatever else comes
        self._check_key(conn, info)
        peer = PeerInfo(
            agent_version=info.agent_version,
            protocol_version=info.protocol_version,
            protocols=info.protocols,
            listen_addrs=info.listen_addrs,
            observed_addr=info.observed_addr,
        )
        self._remember(conn, peer)
        return peer

    def _check_key(self, conn: Connection, info: identify.IdentifyInfo) -> None:
        if info.peer_id() != conn.remote_peer_id:
            self.mismatches += 1
            log.warning("identify from %s names another key: aborting connection %s",
                        conn.remote_peer_id, conn.connection_id)  # fmt: skip
            conn.abort("identify public key does not match the authenticated peer")
            raise ConnectionClosedError("identify key mismatch")

    async def _receive_push(self, stream: Stream) -> None:
        """A peer tells us what changed (fields it leaves out keep their value)."""
        conn = stream.connection
        reader = identify.IdentifyReader()
        async with asyncio.timeout(IDENTIFY_TIMEOUT):
            while chunk := await stream.read():
                reader.receive_data(chunk)
        pushed = reader.eof()
        if pushed.public_key:
            self._check_key(conn, pushed)
        known = self.peer_info.get(conn.remote_peer_id)
        if known is None:
            return  # not identified yet: the answer to our own request will carry all of it
        updated = PeerInfo(
            agent_version=pushed.agent_version or known.agent_version,
            protocol_version=pushed.protocol_version or known.protocol_version,
            protocols=pushed.protocols or known.protocols,
            listen_addrs=pushed.listen_addrs or known.listen_addrs,
            observed_addr=pushed.observed_addr or known.observed_addr,
        )
        self._remember(conn, updated)
        self._announce(conn.remote_peer_id, updated)

    # -- what we know ----------------------------------------------------------------------
    def _remember(self, conn: Connection, info: PeerInfo) -> None:
        peer = conn.remote_peer_id
        if conn.closed or self.host.connection_to(peer) is None:
            return  # gone meanwhile: keep nothing for a peer without a connection
        if peer not in self.peer_info and len(self.peer_info) >= self.max_peers:
            del self.peer_info[next(iter(self.peer_info))]  # the longest-known peer makes room
        self.peer_info[peer] = info

    def _announce(self, peer: PeerId, info: PeerInfo) -> None:
        for callback in list(self.on_identified):
            try:
                callback(peer, info)
            except Exception:
                log.exception("on_identified callback %s failed for peer %s",
                              getattr(callback, "__qualname__", repr(callback)), peer)  # fmt: skip

    def describe(self) -> Mapping[str, Any]:
        return {"identified_peers": len(self.peer_info), "key_mismatches": self.mismatches}
