"""The Node: a composition root, a host and a list of services over one home.

Use it in-process::

    async with Node(home="~/.kosmesh-a") as node:
        node.register_agent("greeter", greet)
        reply = await node.send_task("klp://12D3KooW…/agents/echo", {"hi": 1})

or as a process with ``kosmesh node run``. Everything it learns is kept in the home
(``config.toml``, ``identity.key``, ``node.db``) and survives a restart. The protocols live in
services (``kosmesh.node.services`` lists them); this class owns the home, starts and stops
the services, and offers the SDK's few entry points.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from kosmesh import __version__
from kosmesh.agents import AgentHandler, AgentRegistry, echo_agent
from kosmesh.discovery.peer_book import PeerBookService
from kosmesh.discovery.redial_service import RedialService
from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.identity.did_key import did_key_from_public_key
from kosmesh.identity.keystore import load_or_create_key
from kosmesh.klp import AddressError, EnvelopeError, KLPAddress, MessageType, Priority
from kosmesh.klp.endpoint import KLPEndpoint, TaskError, TaskReply, TaskTimeout
from kosmesh.node.config import DB_FILE, KEY_FILE, LOCK_FILE, NodeConfig, load_config, write_config
from kosmesh.node.services import build_services
from kosmesh.storage import Storage
from kosmesh.trust.service import TrustError, TrustService
from kosmesh.wire.connection import Connection
from kosmesh.wire.driver import ServiceDriver
from kosmesh.wire.host import DialError, Host
from kosmesh.wire.identify_service import IdentifyService
from kosmesh.wire.multiaddr import Multiaddr, MultiaddrError
from kosmesh.wire.ping_service import PingService
from kosmesh.wire.service import Service

log = logging.getLogger(__name__)

ROLE_CAPABILITIES = {
    "peer": ["agent_hosting"],
    "gateway": ["agent_hosting", "relay_services"],
    "archive": ["archive_services"],
    "validator": ["validation_services"],
}


class NodeError(Exception):
    """An operation on the node failed in a way the user can act on."""


def default_home() -> Path:
    return Path(os.environ.get("KOSMESH_HOME", "~/.kosmesh")).expanduser()


def init_home(home: Path, *, passphrase: str | None = None) -> tuple[Ed25519PrivateKey, bool]:
    """Create the home (mode 0700), its config and key; idempotent."""
    home.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        home.chmod(0o700)
    if not (home / "config.toml").exists():
        write_config(home, NodeConfig())
    return load_or_create_key(home / KEY_FILE, passphrase)


class Node:
    """A kosmesh node. ``async with Node(home=...)`` starts it; leaving stops it cleanly."""

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        listen: list[str] | None = None,
        seeds: list[str] | None = None,
        role: str | None = None,
        config: NodeConfig | None = None,
        passphrase: str | None = None,
        services: list[Service] | None = None,
    ) -> None:
        """``services`` are protocols of your own, run after the node's (see ``kosmesh.wire.service``)."""
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.identity, _ = init_home(self.home, passphrase=passphrase)
        self.config = config or load_config(self.home)
        if listen is not None:
            self.config.listen = list(listen)
        if seeds is not None:
            self.config.seeds = list(seeds)
        if role is not None:
            self.config.role = role
        self.config.validate()
        self.peer_id = PeerId.from_public_key(self.identity.public_key)
        self.did = did_key_from_public_key(self.identity.public_key)
        self.address = KLPAddress.for_node(self.peer_id)
        self.agents = AgentRegistry()
        self.agents.register("echo", echo_agent, capabilities=["echo"], description="answers with its input")
        self.storage = Storage(self.home / DB_FILE)
        self.host = Host(self.identity, agent_version=f"kosmesh/{__version__}", limits=self.config.wire.host_limits())
        self.driver = ServiceDriver(self.host)
        for service in [*build_services(self), *(services or ())]:
            self.driver.add(service)
        self.klp = self.driver.get(KLPEndpoint)
        self.klp.processor.supported_types = frozenset(MessageType(t) for t in self.driver.message_types)
        self.trust = self.driver.get(TrustService)
        self.peer_book = self.driver.get(PeerBookService)
        self.identify = self.driver.get(IdentifyService)
        self.ping = self.driver.get(PingService)
        self._probing: set[str] = set()
        self.started_at = 0.0
        self._running = False
        self._lock_fd: int | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _lock_home(self) -> None:
        """One node per home: a second one would share the key, database and API file."""
        fd = os.open(self.home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise NodeError(
                f"another node is already running with home {self.home} (pid {holder}); "
                "stop it or choose another --home"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _unlock_home(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the flock
            self._lock_fd = None

    async def start(self) -> None:
        self._lock_home()
        try:
            await self._start()
        except BaseException:
            await self._abort_start()
            raise

    async def _abort_start(self) -> None:
        for step in (self.driver.stop, self.host.close, self.storage.close):
            try:
                await step()
            except Exception:
                log.exception("cleaning up a failed start: %s failed", step.__qualname__)
        self._unlock_home()

    async def _start(self) -> None:
        try:
            await self.storage.open()
        except sqlite3.Error as exc:
            raise NodeError(f"cannot open {self.storage.path}: {exc}") from None
        await self.driver.start()
        for addr in self.config.listen:
            try:
                await self.host.listen(addr)
            except MultiaddrError as exc:
                raise NodeError(f"bad listen address {addr!r}: {exc}") from None
            except OSError as exc:
                raise NodeError(f"cannot listen on {addr}: {exc.strerror or exc}") from None
        self.started_at = time.time()
        self._running = True

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        await self.driver.stop()
        await self.host.close()
        await self.storage.close()
        self._unlock_home()

    # -- peers and trust -----------------------------------------------------------------
    def trust_score(self, peer: PeerId | str) -> float:
        return self.trust.score(peer)

    async def add_trusted_agent(self, address: str, level: float) -> float:
        try:
            return await self.trust.trust_agent(address, level)
        except TrustError as exc:
            raise NodeError(str(exc)) from None

    async def connect(self, addr: str) -> Connection:
        """Dial a multiaddr (``/ip4/…/tcp/…/p2p/…``); returns the live connection.

        Without ``/p2p/`` whoever answers is accepted on first use and pinned to the address (a
        warning is logged): a later dial there that meets another key is refused.
        """
        try:
            ma = Multiaddr.parse(addr)
        except MultiaddrError as exc:
            raise NodeError(f"bad multiaddr: {exc}") from None
        pinned = self.peer_book.pins.get(str(ma)) if ma.peer_id is None else None
        if pinned is not None:
            ma = ma.with_peer_id(PeerId.from_string(pinned))
        try:
            conn = await self.host.dial(ma)
        except DialError as exc:
            hint = f" (the address is pinned to {pinned}, first met there)" if pinned else ""
            raise NodeError(f"{exc}{hint}") from None
        if ma.peer_id is None:
            log.warning("%s has no /p2p/: trusting %s, which answered, and pinning it", addr, conn.remote_peer_id)
            self.peer_book.pin(str(ma), conn.remote_peer_id)
        return conn

    # -- agents and tasks --------------------------------------------------------------
    def register_agent(
        self, name: str, handler: AgentHandler, *, capabilities: list[str] | tuple[str, ...] = (), description: str = ""
    ) -> None:
        self.agents.register(name, handler, capabilities=capabilities, description=description)

    def agent(self, name: str, *, capabilities: list[str] | tuple[str, ...] = ()) -> Any:
        """Decorator form of :meth:`register_agent`."""

        def wrap(handler: AgentHandler) -> AgentHandler:
            self.register_agent(name, handler, capabilities=capabilities)
            return handler

        return wrap

    def node_record(self) -> dict[str, Any]:
        """What this node tells peers about itself in record exchange."""
        return {
            "peer_id": str(self.peer_id),
            "role": self.config.role,
            "capabilities": ROLE_CAPABILITIES[self.config.role] + self.agents.capabilities(),
            "agents": self.agents.names(),
            "listen_addrs": [str(a) for a in self.host.listen_addrs],
        }

    async def send_task(
        self,
        address: str | KLPAddress,
        data: Any,
        *,
        timeout: float = 30.0,
        priority: Priority = Priority.NORMAL,
        ttl: int | None = None,
    ) -> TaskReply:
        """Send a signed TASK_REQUEST to ``klp://<peer id>/agents/<name>``; await the verified reply."""
        try:
            target = KLPAddress.parse(address) if isinstance(address, str) else address
        except AddressError as exc:
            raise NodeError(str(exc)) from None
        peer = target.authority_peer_id()
        if peer is None:
            raise NodeError(f"cannot resolve {target.authority!r}: name records arrive with discovery; use a peer id")
        if not self._running:
            raise NodeError("node is not running")
        conn = self.host.connection_to(peer) or await self._dial_known(peer)
        try:
            return await self.klp.request(
                conn, type=MessageType.TASK_REQUEST, target=target, data=data, timeout=timeout,
                priority=priority, ttl=ttl,
            )  # fmt: skip
        except EnvelopeError as exc:
            raise NodeError(f"cannot send this task: {exc.detail or exc.reason}") from None
        except TaskTimeout as exc:
            self._probe(conn)
            raise NodeError(f"task to {target} failed: {exc}") from None
        except (TaskError, ConnectionError) as exc:
            raise NodeError(f"task to {target} failed: {exc}") from None

    def _probe(self, conn: Connection) -> None:
        """After a timeout, ping the connection; one that cannot answer is dropped, so a retry redials.

        A connection through a cut link stays up until the idle timeout, and once the link heals
        TCP may take seconds more to retransmit; a fresh connection gets through at once.
        """
        if conn.connection_id in self._probing or conn.closed:
            return
        self._probing.add(conn.connection_id)

        async def probe() -> None:
            try:
                await conn.ping(timeout=self.config.wire.probe_timeout_s)
            except (TimeoutError, ConnectionError) as exc:
                log.info("dropping connection %s to %s: no pong (%s)", conn.connection_id, conn.remote_peer_id,
                         exc or "timeout")  # fmt: skip
                conn.abort("no answer to a ping after a task timed out")
            finally:
                self._probing.discard(conn.connection_id)

        self.driver.spawn(probe(), f"probe of {conn.remote_peer_id}")

    async def _dial_known(self, peer: PeerId) -> Connection:
        addrs = await self.peer_book.known_addrs(peer)
        info = self.identify.peer_info.get(peer)
        if info is not None:
            addrs = [str(a) for a in info.listen_addrs] + addrs
        failures = []
        for addr in addrs:
            try:
                return await self.host.dial(Multiaddr.parse(addr).with_peer_id(peer))
            except (DialError, MultiaddrError) as exc:
                failures.append(str(exc))
        if failures:
            raise NodeError(f"not connected to {peer}, and dialing its known addresses failed: {failures[-1]}")
        raise NodeError(f"not connected to {peer} and no address of it is known; run `kosmesh connect`")

    # -- views -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        conns = self.host.connections
        services = self.driver.describe()
        return {
            "peer_id": str(self.peer_id),
            "did": self.did,
            "role": self.config.role,
            "listen_addrs": [str(a) for a in self.host.listen_addrs],
            "connections": [
                {
                    "connection_id": c.connection_id,
                    "peer_id": str(c.remote_peer_id),
                    "direction": c.direction,
                    "remote_addr": f"{c.remote_address[0]}:{c.remote_address[1]}" if c.remote_address else "",
                    "streams": c.num_streams,
                }
                for c in conns
            ],
            "agents": self.agents.describe(),
            "klp": dict(self.klp.stats),
            "redial": self.driver.get(RedialService).describe()["targets"],
            "services": services,
            "wire": self.host.describe(),
            "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else 0,
            "version": __version__,
        }

    async def peers(self) -> list[dict[str, Any]]:
        connected = {str(c.remote_peer_id) for c in self.host.connections}
        pinned = {peer: addr for addr, peer in self.peer_book.pins.items()}
        out = []
        for row in await self.peer_book.peers():
            pid = row["peer_id"]
            out.append(
                {
                    "peer_id": pid,
                    "status": "connected" if pid in connected else "disconnected",
                    "trust_score": self.trust.score(pid),
                    "role": row["role"],
                    "capabilities": row["capabilities"],
                    "agents": row["agents"],
                    "addrs": row["addrs"],
                    "agent_version": row["agent_version"],
                    "last_seen": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["last_seen"]))
                    if pid not in connected
                    else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "pinned_address": pinned.get(pid),
                }
            )
        return out

    def export_config(self) -> dict[str, Any]:
        """The configuration as JSON-ready data; never includes the key."""
        cfg = self.config.to_dict()
        cfg["peer_id"] = str(self.peer_id)
        cfg["did"] = self.did
        cfg["home"] = str(self.home)
        return cfg
