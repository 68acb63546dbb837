"""The node's SQLite store (WAL mode): peers, connections, message log, tasks, trust.

SQLite calls run on one dedicated thread so the event loop never blocks on disk.
Writes are group-committed: callers await their write, many writes share one commit,
and nothing is acknowledged to a remote before the commit that records it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (
    peer_id TEXT PRIMARY KEY,
    addrs TEXT NOT NULL DEFAULT '[]',
    role TEXT NOT NULL DEFAULT '',
    capabilities TEXT NOT NULL DEFAULT '[]',
    agents TEXT NOT NULL DEFAULT '[]',
    agent_version TEXT NOT NULL DEFAULT '',
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS connections (
    connection_id TEXT PRIMARY KEY,
    peer_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    remote_addr TEXT NOT NULL,
    opened_at REAL NOT NULL,
    closed_at REAL,
    close_reason TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    message_id TEXT NOT NULL,
    direction TEXT NOT NULL,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    logged_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_time ON messages(logged_at);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    request TEXT NOT NULL,
    result TEXT,
    received_at REAL NOT NULL,
    completed_at REAL
);
CREATE TABLE IF NOT EXISTS trusted_agents (
    address TEXT PRIMARY KEY,
    authority TEXT NOT NULL,
    level REAL NOT NULL,
    added_at REAL NOT NULL
);
"""

MAX_BATCH = 512


class Storage:
    """Async facade over one SQLite connection living on its own thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kosmesh-db")
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, Sequence[Any], asyncio.Future[None]]] = []
        self._flushing = False
        self._flush_task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes; fsync at checkpoints
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        self._db = db

    async def close(self) -> None:
        if self._flush_task is not None:
            await self._flush_task  # the last group commit: everything acknowledged is on disk
        await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- group-committed writes -----------------------------------------------------------
    async def write(self, sql: str, params: Sequence[Any]) -> None:
        """Execute one write; returns once it is committed (shared with concurrent writes)."""
        await self.write_nowait(sql, params)

    def write_nowait(self, sql: str, params: Sequence[Any]) -> asyncio.Future[None]:
        """Queue a write for the next group commit; the future resolves when it is on disk."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((sql, params, fut))
        if not self._flushing:
            # the task first runs on the next loop iteration, so writes made meanwhile share its commit
            self._flushing = True
            self._flush_task = loop.create_task(self._flush())
        return fut

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                try:
                    await self._run(self._commit_batch, [(sql, params) for sql, params, _ in batch])
                except Exception as exc:
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                            fut.exception()  # fire-and-forget writers may never look
                    continue
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._flushing = False

    def _commit_batch(self, batch: list[tuple[str, Sequence[Any]]]) -> None:
        db = self._db
        assert db is not None
        db.execute("BEGIN")
        try:
            for sql, params in batch:
                db.execute(sql, params)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self._run(self._query_sync, sql, params)

    def _query_sync(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        db = self._db
        assert db is not None
        db.row_factory = sqlite3.Row
        return db.execute(sql, params).fetchall()

    # -- domain helpers -------------------------------------------------------------------
    async def upsert_peer(
        self,
        peer_id: str,
        *,
        addrs: list[str] | None = None,
        role: str | None = None,
        capabilities: list[str] | None = None,
        agents: list[str] | None = None,
        agent_version: str | None = None,
    ) -> None:
        now = time.time()
        await self.write(
            "INSERT INTO peers(peer_id, first_seen, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT(peer_id) DO UPDATE SET last_seen=excluded.last_seen",
            (peer_id, now, now),
        )
        updates = {
            "addrs": json.dumps(addrs) if addrs is not None else None,
            "role": role,
            "capabilities": json.dumps(capabilities) if capabilities is not None else None,
            "agents": json.dumps(agents) if agents is not None else None,
            "agent_version": agent_version,
        }
        for column, value in updates.items():
            if value is not None:
                await self.write(f"UPDATE peers SET {column}=? WHERE peer_id=?", (value, peer_id))

    async def peers(self) -> list[dict[str, Any]]:
        rows = await self.query("SELECT * FROM peers ORDER BY last_seen DESC")
        out = []
        for row in rows:
            item = dict(row)
            for key in ("addrs", "capabilities", "agents"):
                item[key] = json.loads(item[key])
            out.append(item)
        return out

    async def trusted_agents(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.query("SELECT * FROM trusted_agents ORDER BY added_at")]
