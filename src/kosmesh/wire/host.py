"""A libp2p host on asyncio: listens, dials, keeps the connection table and routes streams.

The host owns the listening sockets and the table of live connections (at most one per peer
is reused for dialing). Its own accept loop admits or refuses every socket the instant it is
accepted (:mod:`kosmesh.wire.slots`: refused sockets are reset at once, handshakes in progress
are bounded per address and in total, and slots are kept for our own dials), and routes each
inbound stream to the handler registered for its protocol. Protocols themselves, identify
and ping included, are services (:mod:`kosmesh.wire.service`) that register handlers and
follow ``on_connected`` / ``on_disconnected``. Handlers get a
:class:`~kosmesh.wire.connection.Stream`; an exception in a handler resets that stream only.
An exception in a callback is logged with the callback and the peer, and the others still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.wire.buffers import DEFAULT_NODE_MAX_BUFFERED_IN, BufferBudget
from kosmesh.wire.connection import (
    Connection,
    ConnectionClosedError,
    ConnectionLimits,
    Direction,
    Stream,
    StreamHandler,
)
from kosmesh.wire.multiaddr import Multiaddr, MultiaddrError
from kosmesh.wire.slots import ConnectionSlots

log = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL = 10.0  # seconds between two warnings about refused sockets: a flood is one line
ACCEPT_BATCH = 32  # sockets accepted per wake-up: a flood gets a descriptor ahead of its refusal this many at a time
ACCEPT_RETRY_DELAY = 1.0  # out of descriptors: accepting again sooner would only spin (asyncio waits as long)
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset and keeps no state


class DialError(ConnectionError):
    """A dial failed: unreachable address, handshake failure, wrong peer or no slot left."""


@dataclass(frozen=True, slots=True)
class HostLimits:
    """Host-wide bounds (per-connection ones are in ConnectionLimits).

    The file descriptors a remote can make a host hold are bounded by
    ``max_connections + max_pending_inbound + ACCEPT_BATCH`` (plus the listening sockets):
    established connections and our dials share the table, handshakes in progress have their
    own pool, a refused socket is closed before the next one is accepted, and a handshake
    evicted for a newcomer (at most one per socket of an accept batch) closes at the next turn
    of the event loop.
    """

    max_connections: int = 512  # secured connections, both directions, plus our dials in progress
    reserved_outbound: int = 64  # table slots inbound peers can never take: we can always dial out
    max_inbound_per_ip: int = 64  # inbound sockets (pending and established) per IPv4 address or IPv6 /64
    max_pending_inbound: int = 128  # accepted sockets whose handshake is not finished, in total
    max_pending_inbound_per_ip: int = 16  # ... and per address
    accept_backlog: int = 128  # the kernel's accept queue (sockets there are not ours yet)
    dial_timeout: float = 10.0
    # unread inbound bytes on all connections together (each connection has its own cap too)
    max_buffered_in: int = DEFAULT_NODE_MAX_BUFFERED_IN
    connection: ConnectionLimits = field(default_factory=ConnectionLimits)

    def __post_init__(self) -> None:
        if self.max_connections < 1 or not 0 <= self.reserved_outbound < self.max_connections:
            raise ValueError("HostLimits needs max_connections >= 1 and 0 <= reserved_outbound < max_connections")
        caps = (self.max_inbound_per_ip, self.max_pending_inbound, self.max_pending_inbound_per_ip)
        if min(caps) < 1 or self.accept_backlog < 1 or self.dial_timeout <= 0:
            raise ValueError("HostLimits' per-address caps, pending caps, backlog and dial timeout must be positive")


class _InboundGate(asyncio.Protocol):
    """The first protocol of an admitted socket: it hands the transport to a new Connection, unless
    the socket's slot was given to a newcomer in between, in which case it closes it at once."""

    __slots__ = ("_host", "_ticket", "connection")

    def __init__(self, host: Host, ticket: int) -> None:
        self._host = host
        self._ticket = ticket
        self.connection: Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        host = self._host
        if host._closing or self._ticket not in host._slots:
            cast(asyncio.Transport, transport).abort()  # any loop's stream transport (uvloop's too)
            return
        try:
            conn = self.connection = host._new_connection("inbound", None, self._ticket)
        except Exception:  # never leave the socket open on a protocol that ignores it
            log.exception("cannot set up a connection for the socket from %s", transport.get_extra_info("peername"))
            cast(asyncio.Transport, transport).abort()
            host._release(self._ticket)
            return
        transport.set_protocol(conn)
        conn.connection_made(transport)


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
        self.agent_version = agent_version  # what identify tells peers we run
        self.limits = limits = limits or HostLimits()
        # node-wide totals of buffered bytes, shared by every connection
        self.buffers = BufferBudget(limits.max_buffered_in)
        self._slots = ConnectionSlots(
            max_connections=limits.max_connections,
            reserved_outbound=limits.reserved_outbound,
            max_inbound_per_ip=limits.max_inbound_per_ip,
            max_pending_inbound=limits.max_pending_inbound,
            max_pending_inbound_per_ip=limits.max_pending_inbound_per_ip,
        )
        self._tickets = itertools.count()
        self._live: dict[int, Connection] = {}  # every connection we hold, by slot ticket, in any stage
        self._by_peer: dict[PeerId, list[Connection]] = {}  # established and announced ones
        self._dialing: dict[PeerId, asyncio.Future[Connection]] = {}
        self._handlers: dict[str, StreamHandler] = {}
        self._listeners: list[socket.socket] = []
        self._accepting: dict[int, socket.socket] = {}  # admitted sockets whose transport is not made yet
        self._accept_paused: set[socket.socket] = set()
        self.listen_addrs: list[Multiaddr] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.refused: Counter[str] = Counter()  # inbound sockets refused, by reason (a fixed set)
        self._refused_unreported = 0
        self._refusal_reported_at = float("-inf")
        self.on_connected: list[Callable[[Connection], None]] = []
        self.on_disconnected: list[Callable[[Connection], None]] = []

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
        """Listen on a TCP multiaddr (port 0 picks one); returns the address with /p2p/.

        The host accepts sockets itself rather than through ``loop.create_server``, so that it
        knows a socket's address before any transport, task or Connection exists for it: a
        refused socket costs an ``accept`` and a ``close``, and holds its descriptor for no time.
        """
        ma = Multiaddr.parse(addr) if isinstance(addr, str) else addr
        host, port = ma.tcp_endpoint()
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        added: list[Multiaddr] = []
        for family, kind, proto, _, sockaddr in dict.fromkeys(infos):  # one socket per address, as asyncio
            listener = socket.socket(family, kind, proto)
            try:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listener.bind(sockaddr)
                listener.listen(self.limits.accept_backlog)
                listener.setblocking(False)
            except OSError:
                listener.close()
                raise
            self._listeners.append(listener)
            loop.add_reader(listener.fileno(), self._accept_ready, listener)
            sock_host, sock_port = listener.getsockname()[:2]
            added.append(Multiaddr.from_tcp(sock_host, sock_port).with_peer_id(self.peer_id))
        if not added:
            raise OSError(f"{host} resolves to no address to listen on")
        self.listen_addrs.extend(added)
        return added[0]

    def _accept_ready(self, listener: socket.socket) -> None:
        """Accept what the kernel holds (one batch per wake-up) and decide on each socket at once."""
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # out of descriptors, buffers or memory: pause rather than spin
                self._pause_accepting(listener, exc)
                return
            self._admit(sock, peer)

    def _pause_accepting(self, listener: socket.socket, exc: OSError) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(listener.fileno())
        self._accept_paused.add(listener)
        log.warning("cannot accept on %s (%s): pausing accepts for %.0f s",
                    listener.getsockname(), exc.strerror or exc, ACCEPT_RETRY_DELAY)  # fmt: skip

        def resume() -> None:
            self._accept_paused.discard(listener)
            if not self._closing and listener.fileno() >= 0:
                loop.add_reader(listener.fileno(), self._accept_ready, listener)

        loop.call_later(ACCEPT_RETRY_DELAY, resume)

    def _admit(self, sock: socket.socket, peer: Any) -> None:
        """A socket was just accepted: admit it to a handshake slot, or reset it now."""
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        ticket = next(self._tickets)
        admission = self._slots.admit_inbound(ticket, ip) if not self._closing else None
        refused = "host shutting down" if admission is None else admission.refused
        if refused is not None:
            self._refuse(sock, refused)
            return
        assert admission is not None
        if admission.evict is not None:
            log.debug("evicting the oldest handshake of the busiest address for a socket from %s", ip)
            early = self._accepting.pop(admission.evict, None)
            if early is not None:
                early.close()
            else:  # its transport exists (else the gate, about to run, sees the slot gone and closes it)
                victim = self._live.get(admission.evict)
                if victim is not None:
                    victim.abort("too many handshakes in progress: evicted for a newcomer")
        sock.setblocking(False)
        self._accepting[ticket] = sock
        self.spawn(self._start_inbound(ticket), f"accepting a socket from {ip}")

    async def _start_inbound(self, ticket: int) -> None:
        sock = self._accepting.pop(ticket, None)
        if sock is None:
            return  # evicted (and closed) before its turn
        gate = _InboundGate(self, ticket)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: gate, sock)
        except BaseException as exc:
            if gate.connection is None:
                self._release(ticket)
                sock.close()  # closing what a failed transport already closed is harmless
            if not isinstance(exc, OSError):
                raise
            log.debug("accepted socket from %s died before its handshake: %s", sock, exc)

    def _refuse(self, sock: socket.socket, reason: str) -> None:
        """Reset a refused socket at once (nothing is read or sent); report floods once per interval."""
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        sock.close()
        self.refused[reason] += 1
        self._refused_unreported += 1
        now = asyncio.get_running_loop().time()
        if now - self._refusal_reported_at >= REFUSAL_LOG_INTERVAL:
            log.warning("refused %d inbound socket(s) (latest: %s)", self._refused_unreported, reason)
            self._refusal_reported_at = now
            self._refused_unreported = 0

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
        if self._closing:
            raise DialError("host is shutting down")
        if expected is not None and reuse:
            existing = self.connection_to(expected)
            if existing is not None:
                return existing
            pending = self._dialing.get(expected)
            if pending is not None:
                return await asyncio.shield(pending)
        ticket = next(self._tickets)
        refused = self._slots.admit_outbound(ticket)
        if refused is not None:
            raise DialError(refused)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Connection] = loop.create_future()
        if expected is not None:
            self._dialing[expected] = future
        try:
            conn = await self._dial_once(host, port, expected, ticket)
            future.set_result(conn)
            return conn
        except BaseException as exc:
            self._release(ticket)
            future.set_exception(exc if isinstance(exc, Exception) else DialError("cancelled"))
            future.exception()
            raise
        finally:
            if expected is not None:
                self._dialing.pop(expected, None)

    async def _dial_once(self, host: str, port: int, expected: PeerId | None, ticket: int) -> Connection:
        loop = asyncio.get_running_loop()
        made: list[Connection] = []

        def factory() -> Connection:
            made.append(self._new_connection("outbound", expected, ticket))
            return made[0]

        try:
            async with asyncio.timeout(self.limits.dial_timeout):
                _, conn = await loop.create_connection(factory, host, port)
                await conn.ready
        except BaseException as exc:
            for conn in made:
                conn.abort("dial abandoned")  # no half-made connection outlives its failed dial
            if isinstance(exc, TimeoutError):
                raise DialError(f"dial to {host}:{port} timed out") from None
            if isinstance(exc, ConnectionClosedError):
                raise DialError(f"handshake with {host}:{port} failed: {exc}") from None
            if isinstance(exc, OSError):
                raise DialError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
            raise
        return conn

    def _new_connection(self, direction: Direction, expected: PeerId | None, ticket: int) -> Connection:
        conn = Connection(
            identity=self.identity,
            direction=direction,
            limits=self.limits.connection,
            expected_peer_id=expected,
            stream_handler=self._lookup,
            on_closed=lambda closed: self._forget(closed, ticket),
            budget=self.buffers,
        )
        self._live[ticket] = conn
        conn.ready.add_done_callback(lambda fut: self._on_ready(conn, ticket, fut))
        return conn

    def _on_ready(self, conn: Connection, ticket: int, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or fut.exception() is not None or conn.closed:
            self._release(ticket)
            return
        refused = self._slots.establish(ticket)
        if refused is not None:
            self._live.pop(ticket, None)
            conn.abort(refused)
            return
        self._by_peer.setdefault(conn.remote_peer_id, []).append(conn)
        self._notify(self.on_connected, "on_connected", conn)

    def _release(self, ticket: int) -> None:
        self._slots.release(ticket)
        self._live.pop(ticket, None)

    def _forget(self, conn: Connection, ticket: int) -> None:
        self._release(ticket)
        peers = self._by_peer.get(conn.remote_peer_id)
        if peers is None or conn not in peers:
            return  # never announced as connected, so not announced as gone either
        peers.remove(conn)
        if not peers:
            del self._by_peer[conn.remote_peer_id]
        self._notify(self.on_disconnected, "on_disconnected", conn)

    def _notify(self, callbacks: list[Callable[[Connection], None]], event: str, conn: Connection) -> None:
        for callback in list(callbacks):
            try:
                callback(conn)
            except Exception:
                log.exception(
                    "%s callback %s failed for peer %s (connection %s)",
                    event, getattr(callback, "__qualname__", repr(callback)), conn.remote_peer_id, conn.connection_id,
                )  # fmt: skip

    def connection_to(self, peer_id: PeerId) -> Connection | None:
        for conn in self._by_peer.get(peer_id, ()):
            if not conn.closed:
                return conn
        return None

    @property
    def connections(self) -> list[Connection]:
        """Established connections (secured, multiplexed, announced to ``on_connected``)."""
        return [conn for conns in self._by_peer.values() for conn in conns if not conn.closed]

    async def new_stream(self, peer: PeerId | Multiaddr | str, protocols: list[str] | str) -> Stream:
        """A stream to ``peer`` (dialing a multiaddr if needed) speaking one of ``protocols``."""
        if isinstance(peer, PeerId):
            conn = self.connection_to(peer)
            if conn is None:
                raise DialError(f"not connected to {peer}")
        else:
            conn = await self.dial(peer)
        return await conn.open_stream(protocols)

    def describe(self) -> dict[str, Any]:
        """Slots in use and sockets refused (JSON-ready), for status views."""
        return {
            **self._slots.describe(),
            "refused": dict(self.refused),
            "buffered_in": self.buffers.buffered_in,
            "buffered_out": self.buffers.buffered_out,
            "streams_refused": sum(c.streams_refused for c in self.connections),
        }

    # -- lifecycle ---------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` until it ends or the host closes; a failure is logged as ``what``."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._task_done(done, what))
        return task

    def _task_done(self, task: asyncio.Task[Any], what: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", what, exc_info=task.exception())

    async def close(self) -> None:
        self._closing = True
        loop = asyncio.get_running_loop()
        for listener in self._listeners:
            if listener not in self._accept_paused:
                loop.remove_reader(listener.fileno())
            listener.close()
        self._listeners.clear()
        for sock in self._accepting.values():
            sock.close()
        self._accepting.clear()
        conns = list(self._live.values())
        if conns:
            await asyncio.gather(*(c.close("host shutting down") for c in conns), return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
