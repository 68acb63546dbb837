"""A libp2p host on asyncio: listens, dials, keeps connections and serves protocols.

The host owns the TCP servers and the table of live connections (at most one per peer
is reused for dialing), registers protocol handlers, and serves identify and ping to
every peer. Handlers get a :class:`~kosmesh.wire.connection.Stream`; an exception in a
handler resets that stream only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.wire import identify
from kosmesh.wire.buffers import BufferBudget
from kosmesh.wire.connection import (
    Connection,
    ConnectionClosedError,
    ConnectionLimits,
    Direction,
    Stream,
    StreamHandler,
)
from kosmesh.wire.multiaddr import Multiaddr, MultiaddrError
from kosmesh.wire.ping import PING_SIZE, PingInitiator, PingResponder

log = logging.getLogger(__name__)

IDENTIFY_PROTOCOL = "/ipfs/id/1.0.0"
PING_PROTOCOL = "/ipfs/ping/1.0.0"
IDENTIFY_PROTOCOL_VERSION = "ipfs/0.1.0"
IDENTIFY_TIMEOUT = 10.0
PING_READ_TIMEOUT = 30.0
MAX_IDENTIFY_BYTES = 64 * 1024


class DialError(ConnectionError):
    """A dial failed: unreachable address, handshake failure or wrong peer."""


@dataclass(frozen=True, slots=True)
class HostLimits:
    """Host-wide bounds (per-connection ones are in ConnectionLimits)."""

    max_connections: int = 512
    max_inbound_per_ip: int = 64
    dial_timeout: float = 10.0
    connection: ConnectionLimits = field(default_factory=ConnectionLimits)


@dataclass(slots=True)
class PeerInfo:
    """What identify told us about a peer."""

    agent_version: str = ""
    protocol_version: str = ""
    protocols: tuple[str, ...] = ()
    listen_addrs: tuple[Multiaddr, ...] = ()
    observed_addr: Multiaddr | None = None


class Host:
    """Listens and dials; one object per node."""

    def __init__(
        self,
        identity: Ed25519PrivateKey,
        *,
        agent_version: str = "kosmesh/0.1.0",
        limits: HostLimits | None = None,
    ) -> None:
        self.identity = identity
        self.peer_id = PeerId.from_public_key(identity.public_key)
        self.agent_version = agent_version
        self.limits = limits or HostLimits()
        self.buffers = BufferBudget()  # node-wide totals of buffered bytes, shared by every connection
        self._handlers: dict[str, StreamHandler] = {}
        self._servers: list[asyncio.Server] = []
        self.listen_addrs: list[Multiaddr] = []
        self._connections: dict[str, Connection] = {}
        self._by_peer: dict[PeerId, list[Connection]] = {}
        self._dialing: dict[PeerId, asyncio.Future[Connection]] = {}
        self.peer_info: dict[PeerId, PeerInfo] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.on_connected: list[Callable[[Connection], None]] = []
        self.on_disconnected: list[Callable[[Connection], None]] = []
        self.on_identified: list[Callable[[PeerId, PeerInfo], None]] = []
        self.set_stream_handler(IDENTIFY_PROTOCOL, self._serve_identify)
        self.set_stream_handler(PING_PROTOCOL, self._serve_ping)

    # -- protocols ---------------------------------------------------------------------
    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        self._handlers[protocol] = handler

    def remove_stream_handler(self, protocol: str) -> None:
        self._handlers.pop(protocol, None)

    @property
    def protocols(self) -> list[str]:
        return sorted(self._handlers)

    def _lookup(self, protocol: str) -> StreamHandler | None:
        return self._handlers.get(protocol)

    # -- listening ---------------------------------------------------------------------
    async def listen(self, addr: Multiaddr | str) -> Multiaddr:
        """Listen on a TCP multiaddr (port 0 picks one); returns the address with /p2p/."""
        ma = Multiaddr.parse(addr) if isinstance(addr, str) else addr
        host, port = ma.tcp_endpoint()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: self._new_connection("inbound", None), host, port, reuse_address=True, backlog=512
        )
        self._servers.append(server)
        added: list[Multiaddr] = []
        for sock in server.sockets:
            sock_host, sock_port = sock.getsockname()[:2]
            added.append(Multiaddr.from_tcp(sock_host, sock_port).with_peer_id(self.peer_id))
        self.listen_addrs.extend(added)
        return added[0]

    # -- dialing -----------------------------------------------------------------------
    async def dial(self, addr: Multiaddr | str, *, reuse: bool = True) -> Connection:
        """Connect to ``addr``; with /p2p/ the remote must prove it is that peer."""
        try:
            ma = Multiaddr.parse(addr) if isinstance(addr, str) else addr
            host, port = ma.tcp_endpoint()
        except MultiaddrError as exc:
            raise DialError(str(exc)) from None
        expected = ma.peer_id
        if expected == self.peer_id:
            raise DialError("refusing to dial ourselves")
        if expected is not None and reuse:
            existing = self.connection_to(expected)
            if existing is not None:
                return existing
            pending = self._dialing.get(expected)
            if pending is not None:
                return await asyncio.shield(pending)
        if len(self._connections) >= self.limits.max_connections:
            raise DialError("connection limit reached")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Connection] = loop.create_future()
        if expected is not None:
            self._dialing[expected] = future
        try:
            conn = await self._dial_once(host, port, expected)
            future.set_result(conn)
            return conn
        except BaseException as exc:
            future.set_exception(exc if isinstance(exc, Exception) else DialError("cancelled"))
            future.exception()
            raise
        finally:
            if expected is not None:
                self._dialing.pop(expected, None)

    async def _dial_once(self, host: str, port: int, expected: PeerId | None) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.limits.dial_timeout):
                _, conn = await loop.create_connection(
                    lambda: self._new_connection("outbound", expected), host, port
                )
                await conn.ready
        except TimeoutError:
            raise DialError(f"dial to {host}:{port} timed out") from None
        except ConnectionClosedError as exc:
            raise DialError(f"handshake with {host}:{port} failed: {exc}") from None
        except OSError as exc:
            raise DialError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
        return conn

    def _new_connection(self, direction: Direction, expected: PeerId | None) -> Connection:
        conn = Connection(
            identity=self.identity,
            direction=direction,
            limits=self.limits.connection,
            expected_peer_id=expected,
            stream_handler=self._lookup,
            on_closed=self._forget,
            budget=self.buffers,
        )
        self._connections[conn.connection_id] = conn
        conn.ready.add_done_callback(lambda fut: self._on_ready(conn, fut))
        if direction == "inbound" and (
            len(self._connections) > self.limits.max_connections or self._closing
        ):
            # refuse after the fact: asyncio has already accepted the socket
            asyncio.get_running_loop().call_soon(conn.abort, "connection limit reached")
        return conn

    def _on_ready(self, conn: Connection, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            self._connections.pop(conn.connection_id, None)
            return
        if conn.direction == "inbound" and conn.remote_address is not None:
            same_ip = sum(
                1
                for c in self._connections.values()
                if c.remote_address and c.remote_address[0] == conn.remote_address[0]
            )
            if same_ip > self.limits.max_inbound_per_ip:
                conn.abort("too many connections from this address")
                return
        self._by_peer.setdefault(conn.remote_peer_id, []).append(conn)
        for callback in self.on_connected:
            with contextlib.suppress(Exception):
                callback(conn)
        self._spawn(self._identify(conn))

    def _forget(self, conn: Connection) -> None:
        self._connections.pop(conn.connection_id, None)
        peers = self._by_peer.get(conn.remote_peer_id)
        if peers is not None:
            with contextlib.suppress(ValueError):
                peers.remove(conn)
            if not peers:
                del self._by_peer[conn.remote_peer_id]
        for callback in self.on_disconnected:
            with contextlib.suppress(Exception):
                callback(conn)

    def connection_to(self, peer_id: PeerId) -> Connection | None:
        for conn in self._by_peer.get(peer_id, ()):
            if not conn.closed:
                return conn
        return None

    @property
    def connections(self) -> list[Connection]:
        return [c for c in self._connections.values() if c.ready.done() and not c.closed]

    async def new_stream(self, peer: PeerId | Multiaddr | str, protocols: list[str] | str) -> Stream:
        """A stream to ``peer`` (dialing a multiaddr if needed) speaking one of ``protocols``."""
        if isinstance(peer, PeerId):
            conn = self.connection_to(peer)
            if conn is None:
                raise DialError(f"not connected to {peer}")
        else:
            conn = await self.dial(peer)
        return await conn.open_stream(protocols)

    # -- identify and ping ---------------------------------------------------------------
    def identify_info(self, conn: Connection) -> identify.IdentifyInfo:
        observed = None
        if conn.remote_address is not None:
            with contextlib.suppress(MultiaddrError, ValueError):
                observed = Multiaddr.from_tcp(*conn.remote_address)
        return identify.IdentifyInfo(
            protocol_version=IDENTIFY_PROTOCOL_VERSION,
            agent_version=self.agent_version,
            public_key=self.identity.public_key.to_protobuf(),
            listen_addrs=tuple(a.without_peer_id() for a in self.listen_addrs),
            observed_addr=observed,
            protocols=tuple(self.protocols),
            signed_peer_record=None,
        )

    async def _serve_identify(self, stream: Stream) -> None:
        await stream.write_all(identify.encode_identify(self.identify_info(stream.connection)))

    async def _identify(self, conn: Connection) -> None:
        with contextlib.suppress(ConnectionError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            info = await self.request_identify(conn)
            for callback in self.on_identified:
                with contextlib.suppress(Exception):
                    callback(conn.remote_peer_id, info)

    async def request_identify(self, conn: Connection) -> PeerInfo:
        """Ask the remote who it is; checks its key matches the authenticated peer."""
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
        if info.peer_id() != conn.remote_peer_id:
            conn.abort("identify public key does not match the authenticated peer")
            raise ConnectionClosedError("identify key mismatch")
        peer = PeerInfo(
            agent_version=info.agent_version,
            protocol_version=info.protocol_version,
            protocols=info.protocols,
            listen_addrs=info.listen_addrs,
            observed_addr=info.observed_addr,
        )
        self.peer_info[conn.remote_peer_id] = peer
        return peer

    async def _serve_ping(self, stream: Stream) -> None:
        responder = PingResponder()
        while True:
            async with asyncio.timeout(PING_READ_TIMEOUT):
                chunk = await stream.read()
            if not chunk:
                return
            echo = responder.receive_data(chunk)
            if echo:
                stream.write(echo)
                await stream.drain()

    async def ping(self, peer: PeerId | Multiaddr | str, count: int = 1, timeout: float = 10.0) -> list[float]:
        """RTTs in seconds of ``count`` libp2p pings (``/ipfs/ping/1.0.0``)."""
        stream = await self.new_stream(peer, PING_PROTOCOL)
        initiator = PingInitiator()
        rtts: list[float] = []
        try:
            for _ in range(count):
                started = time.perf_counter()
                stream.write(initiator.request(os.urandom(PING_SIZE)))
                done: list[bytes] = []
                async with asyncio.timeout(timeout):
                    while not done:
                        chunk = await stream.read()
                        if not chunk:
                            raise ConnectionClosedError("ping stream closed")
                        done = initiator.receive_data(chunk)
                rtts.append(time.perf_counter() - started)
        finally:
            await stream.close()
        return rtts

    # -- lifecycle ---------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._closing = True
        for server in self._servers:
            server.close()
        conns = list(self._connections.values())
        if conns:
            await asyncio.gather(*(c.close("host shutting down") for c in conns), return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._servers.clear()
