"""The Node: one object wiring identity, wire, KLP, agents and storage.

Use it in-process::

    async with Node(home="~/.kosmesh-a") as node:
        node.register_agent("greeter", greet)
        reply = await node.send_task("klp://12D3KooW…/agents/echo", {"hi": 1})

or as a process with ``kosmesh node run``. Everything it learns is kept in the home
(``config.toml``, ``identity.key``, ``node.db``) and survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kosmesh import __version__
from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.identity.did_key import did_key_from_public_key
from kosmesh.identity.keystore import load_or_create_key
from kosmesh.klp import (
    PROTOCOL_ID as KLP_PROTOCOL,
)
from kosmesh.klp import (
    AddressError,
    EnvelopeError,
    KLPAddress,
    KLPMessage,
    KLPProcessor,
    MessageType,
    Priority,
    ProcessingResult,
)
from kosmesh.node.agents import AgentError, AgentHandler, AgentRegistry, Task, echo_agent
from kosmesh.node.config import DB_FILE, KEY_FILE, LOCK_FILE, NodeConfig, load_config, write_config
from kosmesh.node.klp_service import KLPService, Outcome, TaskError, TaskReply, TaskTimeout
from kosmesh.node.redial import Redialer, RedialPolicy, RedialTarget
from kosmesh.node.storage import Storage
from kosmesh.wire.connection import Connection, ConnectionLimits
from kosmesh.wire.host import DialError, Host, HostLimits, PeerInfo
from kosmesh.wire.multiaddr import Multiaddr, MultiaddrError

log = logging.getLogger(__name__)

ROLE_CAPABILITIES = {
    "peer": ["agent_hosting"],
    "gateway": ["agent_hosting", "relay_services"],
    "archive": ["archive_services"],
    "validator": ["validation_services"],
}
SUPPORTED_TYPES = frozenset({MessageType.TASK_REQUEST, MessageType.TASK_RESPONSE, MessageType.PEER_DISCOVERY})
RECONNECT_KNOWN_PEERS = 16


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
    ) -> None:
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
        wire = self.config.wire
        limits = ConnectionLimits(keepalive_interval=wire.keepalive_interval_s, idle_timeout=wire.idle_timeout_s)
        self.host = Host(
            self.identity,
            agent_version=f"kosmesh/{__version__}",
            limits=HostLimits(dial_timeout=wire.dial_timeout_s, connection=limits),
        )
        redial = self.config.redial
        self.redialer = Redialer(RedialPolicy(min_s=redial.min_s, max_s=redial.max_s, give_up_s=redial.give_up_s))
        self._redial_wake = asyncio.Event()
        self._probing: set[str] = set()
        self._trust: dict[str, float] = {}
        self.klp: KLPService | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
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
        with contextlib.suppress(Exception):
            await self.host.close()
        if self.klp is not None:
            with contextlib.suppress(Exception):
                await self.klp.close()
        with contextlib.suppress(Exception):
            await self.storage.close()
        self._unlock_home()

    async def _start(self) -> None:
        try:
            await self.storage.open()
        except sqlite3.Error as exc:
            raise NodeError(f"cannot open {self.storage.path}: {exc}") from None
        for row in await self.storage.trusted_agents():
            self._trust[row["authority"]] = max(self._trust.get(row["authority"], 0.0), row["level"])
        cfg = self.config.klp
        processor = KLPProcessor(
            local_peer_id=self.peer_id,
            max_message_bytes=cfg.max_message_bytes,
            max_clock_skew_s=cfg.max_clock_skew_s,
            max_future_skew_s=cfg.max_future_skew_s,
            replay_capacity=cfg.replay_capacity,
            replay_per_peer=cfg.replay_per_peer,
            min_trust_for_tasks=cfg.min_trust_for_tasks,
            trust_score=self.trust_score,
            supported_types=SUPPORTED_TYPES,
        )
        self.klp = KLPService(
            identity=self.identity,
            processor=processor,
            dispatch=self._dispatch,
            record=self._record,
            workers=cfg.workers,
            queue_capacity=cfg.queue_capacity,
            default_ttl=cfg.default_ttl,
            on_message=self._log_message,
        )
        self.storage.after_commit.append(self.klp.flush_answers)  # answers kept by one commit leave together
        self.host.set_stream_handler(KLP_PROTOCOL, self.klp.handle_stream)
        self.host.on_connected.append(self._on_connected)
        self.host.on_disconnected.append(self._on_disconnected)
        self.host.on_identified.append(self._on_identified)
        for addr in self.config.listen:
            try:
                await self.host.listen(addr)
            except MultiaddrError as exc:
                raise NodeError(f"bad listen address {addr!r}: {exc}") from None
            except OSError as exc:
                raise NodeError(f"cannot listen on {addr}: {exc.strerror or exc}") from None
        self.started_at = time.time()
        self._running = True
        self._spawn(self._bootstrap())

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.klp is not None:
            await self.klp.close()
        await self.host.close()
        await self.storage.close()
        self._unlock_home()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _bootstrap(self) -> None:
        """Keep the seeds and the peers we knew before a restart connected, for as long as we run."""
        now = time.monotonic()
        for addr in self.config.seeds:
            with contextlib.suppress(MultiaddrError):
                expected = Multiaddr.parse(addr).peer_id
                if expected != self.peer_id:
                    self.redialer.keep_seed(addr, now, str(expected) if expected else None)
        for peer in (await self.storage.peers())[:RECONNECT_KNOWN_PEERS]:
            addrs = [a if "/p2p/" in a else f"{a}/p2p/{peer['peer_id']}" for a in peer["addrs"][:2]]
            if peer["peer_id"] != str(self.peer_id):
                self.redialer.keep_peer(peer["peer_id"], addrs, now, connected=False)
        await self._keep_connected()

    async def _keep_connected(self) -> None:
        """Dial what the redial schedule says is due; sleep until the next is due or a peer drops."""
        while True:
            for target in self.redialer.due(time.monotonic()):
                self._spawn(self._redial(target))
            next_due = self.redialer.next_due()
            self._redial_wake.clear()
            timeout = None if next_due is None else max(0.0, next_due - time.monotonic())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._redial_wake.wait()

    async def _redial(self, target: RedialTarget) -> None:
        error: Exception | None = None
        for addr in list(target.addrs):
            try:
                conn = await self.host.dial(addr)
            except DialError as exc:
                error = exc
                continue
            self.redialer.dial_succeeded(target.key, str(conn.remote_peer_id), time.monotonic())
            return
        log.info("redial %s failed (%d before): %s", target.key, target.failures, error)
        self.redialer.dial_failed(target.key, time.monotonic())
        self._redial_wake.set()

    # -- peers and trust -----------------------------------------------------------------
    def trust_score(self, peer: PeerId | str) -> float:
        text = str(peer)
        if text in self._trust:
            return self._trust[text]
        return self.config.trust.peers.get(text, self.config.trust.default_score)

    async def add_trusted_agent(self, address: str, level: float) -> float:
        try:
            klp = KLPAddress.parse(address)
        except AddressError as exc:
            raise NodeError(str(exc)) from None
        if not 0 <= level <= 10:
            raise NodeError("trust level must be between 0 and 10")
        await self.storage.write(
            "INSERT INTO trusted_agents(address, authority, level, added_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(address) DO UPDATE SET level=excluded.level",
            (str(klp), klp.authority, level, time.time()),
        )
        rows = await self.storage.query(
            "SELECT MAX(level) AS level FROM trusted_agents WHERE authority=?", (klp.authority,)
        )
        self._trust[klp.authority] = float(rows[0]["level"])
        return level

    async def connect(self, addr: str) -> Connection:
        """Dial a multiaddr (``/ip4/…/tcp/…/p2p/…``); returns the live connection."""
        try:
            ma = Multiaddr.parse(addr)
        except MultiaddrError as exc:
            raise NodeError(f"bad multiaddr: {exc}") from None
        try:
            conn = await self.host.dial(ma)
        except DialError as exc:
            raise NodeError(str(exc)) from None
        return conn

    def _on_connected(self, conn: Connection) -> None:
        addr = ""
        if conn.remote_address is not None:
            with contextlib.suppress(MultiaddrError, ValueError):
                addr = str(Multiaddr.from_tcp(*conn.remote_address))
        peer = str(conn.remote_peer_id)
        if conn.direction == "outbound" and addr:  # we dialed it, so we are the side that redials it
            self.redialer.keep_peer(peer, [f"{addr}/p2p/{peer}"], time.monotonic(), connected=True)
        else:
            self.redialer.connected(peer, time.monotonic())
        self.storage.write_nowait(
            "INSERT OR REPLACE INTO connections(connection_id, peer_id, direction, remote_addr, opened_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (conn.connection_id, str(conn.remote_peer_id), conn.direction, addr, time.time()),
        )
        self._spawn(self.storage.upsert_peer(str(conn.remote_peer_id)))

    def _on_disconnected(self, conn: Connection) -> None:
        if not self._running:
            return
        if self.host.connection_to(conn.remote_peer_id) is None:
            self.redialer.disconnected(str(conn.remote_peer_id), time.monotonic())
            self._redial_wake.set()
        self.storage.write_nowait(
            "UPDATE connections SET closed_at=?, close_reason=? WHERE connection_id=?",
            (time.time(), conn.close_reason, conn.connection_id),
        )
        self.storage.write_nowait(
            "UPDATE peers SET last_seen=? WHERE peer_id=?", (time.time(), str(conn.remote_peer_id))
        )

    def _on_identified(self, peer: PeerId, info: PeerInfo) -> None:
        addrs = [str(a) for a in info.listen_addrs]
        self._spawn(self.storage.upsert_peer(str(peer), addrs=addrs, agent_version=info.agent_version))
        if KLP_PROTOCOL in info.protocols:
            self._spawn(self._exchange_records(peer))

    async def _exchange_records(self, peer: PeerId) -> None:
        """PEER_DISCOVERY hello: each side learns the other's role, capabilities and agents."""
        conn = self.host.connection_to(peer)
        if conn is None or self.klp is None:
            return
        with contextlib.suppress(TaskError, ConnectionError, TimeoutError):
            reply = await self.klp.request(
                conn,
                type=MessageType.PEER_DISCOVERY,
                target=KLPAddress.for_node(peer),
                data={"action": "hello", **self.node_record()},
                timeout=10.0,
            )
            if reply.status == "processed" and isinstance(reply.result, dict):
                await self._store_record(peer, reply.result)

    async def _store_record(self, peer: PeerId, record: dict[str, Any]) -> None:
        def strings(value: Any, limit: int = 64) -> list[str]:
            if not isinstance(value, list):
                return []
            return [str(v)[:256] for v in value[:limit] if isinstance(v, str)]

        role = record.get("role")
        await self.storage.upsert_peer(
            str(peer),
            role=role if isinstance(role, str) and len(role) < 32 else None,
            capabilities=strings(record.get("capabilities")),
            agents=strings(record.get("agents"), 256),
        )

    def node_record(self) -> dict[str, Any]:
        return {
            "peer_id": str(self.peer_id),
            "role": self.config.role,
            "capabilities": ROLE_CAPABILITIES[self.config.role] + self.agents.capabilities(),
            "agents": self.agents.names(),
            "listen_addrs": [str(a) for a in self.host.listen_addrs],
        }

    # -- KLP dispatch --------------------------------------------------------------------
    def _dispatch(self, message: KLPMessage) -> Outcome:
        """A result now (inline agents, refusals) or an awaitable one (async agents, discovery)."""
        if message.type == MessageType.TASK_REQUEST:
            return self._start_task(message)
        if message.type == MessageType.PEER_DISCOVERY:
            return self._answer_discovery(message)
        return ProcessingResult("rejected", reason="unsupported_message_type")

    async def _answer_discovery(self, message: KLPMessage) -> ProcessingResult:
        data = message.payload.data
        peer = message.source.authority_peer_id()
        if isinstance(data, dict) and peer is not None:
            await self._store_record(peer, data)
        return ProcessingResult("processed", data=self.node_record())

    def _start_task(self, message: KLPMessage) -> Outcome:
        name = message.target.agent_name()
        spec = self.agents.get(name) if name is not None else None
        if spec is None:
            return ProcessingResult("rejected", reason="no_eligible_agents")
        meta = message.metadata
        task = Task(
            task_id=meta.message_id,
            agent=spec.name,
            data=message.payload.data,
            source=message.source,
            priority=meta.priority,
            correlation_id=meta.correlation_id,
        )
        try:
            output = spec.handler(task)
        except Exception as exc:
            return self._agent_failure(spec.name, meta.message_id, exc)
        if hasattr(type(output), "__await__"):
            return self._await_agent(spec.name, meta.message_id, output)
        return ProcessingResult("processed", data=output)

    async def _await_agent(self, agent: str, task_id: str, output: Awaitable[Any]) -> ProcessingResult:
        try:
            async with asyncio.timeout(self.config.klp.task_timeout_s):
                return ProcessingResult("processed", data=await output)
        except TimeoutError:
            return ProcessingResult("rejected", reason="agent_timeout")
        except Exception as exc:
            return self._agent_failure(agent, task_id, exc)

    @staticmethod
    def _agent_failure(agent: str, task_id: str, exc: Exception) -> ProcessingResult:
        if isinstance(exc, AgentError):
            return ProcessingResult("rejected", reason=exc.reason[:200])
        log.error("agent %s failed on task %s", agent, task_id, exc_info=exc)
        return ProcessingResult("rejected", reason="agent_error")

    def _record(
        self, message: KLPMessage, result: ProcessingResult, received_at: float, then: Callable[[Any], None]
    ) -> None:
        """Commit the task's record, then let its answer go: the answer is the acknowledgement."""
        name = message.target.agent_name() if message.type == MessageType.TASK_REQUEST else None
        if name is None or result.reason == "no_eligible_agents":
            then(None)  # nothing was run, nothing to keep
            return
        self.storage.write_then(
            "INSERT INTO tasks(task_id, agent, source, status, reason, request, result, received_at, completed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.metadata.message_id,
                name,
                str(message.source),
                result.status,
                result.reason,
                _json_preview(message.payload.data),
                _json_preview(result.data),
                received_at,
                time.time(),
            ),
            then,
        )

    def _log_message(self, direction: str, message: KLPMessage | None, status: str, reason: str | None) -> None:
        if message is None or (status == "processed" and message.type == MessageType.TASK_REQUEST):
            return  # unverifiable input is not worth a row; processed tasks have theirs in `tasks`
        self.storage.write_nowait(
            "INSERT INTO messages(message_id, direction, type, source, target, status, reason, logged_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                message.metadata.message_id,
                direction,
                message.type.value,
                str(message.source),
                str(message.target),
                status,
                reason,
                time.time(),
            ),
        )

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
        if self.klp is None:
            raise NodeError("node is not running")
        conn = self.host.connection_to(peer) or await self._dial_known(peer)
        try:
            return await self.klp.request(
                conn, type=MessageType.TASK_REQUEST, target=target, data=data, timeout=timeout,
                priority=priority, ttl=ttl,
            )
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

        self._spawn(probe())

    async def _dial_known(self, peer: PeerId) -> Connection:
        rows = await self.storage.query("SELECT addrs FROM peers WHERE peer_id=?", (str(peer),))
        addrs = json.loads(rows[0]["addrs"]) if rows else []
        info = self.host.peer_info.get(peer)
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
            "klp": dict(self.klp.stats) if self.klp else {},
            "redial": self.redialer.describe(time.monotonic()),
            "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else 0,
            "version": __version__,
        }

    async def peers(self) -> list[dict[str, Any]]:
        connected = {str(c.remote_peer_id) for c in self.host.connections}
        out = []
        for row in await self.storage.peers():
            pid = row["peer_id"]
            score = self.trust_score(pid)
            out.append(
                {
                    "peer_id": pid,
                    "status": "connected" if pid in connected else "disconnected",
                    "trust_score": score,
                    "role": row["role"],
                    "capabilities": row["capabilities"],
                    "agents": row["agents"],
                    "addrs": row["addrs"],
                    "agent_version": row["agent_version"],
                    "last_seen": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["last_seen"]))
                    if pid not in connected
                    else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
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


def _json_preview(value: Any, limit: int = 4096) -> str:
    """A short JSON view of task data for the task log; bytes are summarised, not rendered."""
    if isinstance(value, bytes | bytearray):
        return json.dumps(f"<{len(value)} bytes>")
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
    try:
        text = json.dumps(value, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text[:limit]
