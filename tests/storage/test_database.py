"""The SQLite engine under the node's store: group commits, commit callbacks, schema migration."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from kosmesh.storage import SCHEMA_VERSION, Database, PeerTable

TASK_INSERT = (
    "INSERT INTO tasks(task_id, agent, source, status, reason, request, result, received_at, completed_at) "
    "VALUES (?, 'echo', 'klp://x/', 'processed', NULL, '1', '1', ?, ?)"
)


async def test_write_then_calls_back_after_the_commit(tmp_path: Path) -> None:
    storage = Database(tmp_path / "node.db")
    await storage.open()
    try:
        seen: list[tuple[BaseException | None, int]] = []

        def committed(error: BaseException | None) -> None:
            # another connection sees the row: it is committed, not merely executed
            with sqlite3.connect(tmp_path / "node.db") as other:
                seen.append((error, other.execute("SELECT count(*) FROM tasks").fetchone()[0]))

        storage.write_then(TASK_INSERT, ("t1", 1.0, 2.0), committed)
        storage.write_then(TASK_INSERT, ("t2", 1.0, 2.0), committed)
        assert seen == []  # nothing before the commit
        await storage.write(TASK_INSERT, ("t3", 1.0, 2.0))
        assert seen == [(None, 3), (None, 3)]  # one commit for the three writes of one iteration
    finally:
        await storage.close()


async def test_failed_commit_is_reported_to_every_writer_of_the_batch(tmp_path: Path) -> None:
    storage = Database(tmp_path / "node.db")
    await storage.open()
    try:
        errors: list[BaseException | None] = []
        storage.write_then(TASK_INSERT, ("ok", 1.0, 2.0), errors.append)
        failing = storage.write_nowait("INSERT INTO no_such_table VALUES (1)", ())
        with pytest.raises(sqlite3.OperationalError):
            await failing
        assert len(errors) == 1 and isinstance(errors[0], sqlite3.OperationalError)
        rows = await storage.query("SELECT count(*) AS n FROM tasks")
        assert rows[0]["n"] == 0  # the batch was rolled back as a whole
    finally:
        await storage.close()


def _version_0_database(path: Path) -> None:
    """A node.db as kosmesh wrote it before tasks became an append-only journal."""
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE peers (peer_id TEXT PRIMARY KEY, addrs TEXT NOT NULL DEFAULT '[]',
                role TEXT NOT NULL DEFAULT '', capabilities TEXT NOT NULL DEFAULT '[]',
                agents TEXT NOT NULL DEFAULT '[]', agent_version TEXT NOT NULL DEFAULT '',
                first_seen REAL NOT NULL, last_seen REAL NOT NULL);
            CREATE TABLE tasks (task_id TEXT PRIMARY KEY, agent TEXT NOT NULL, source TEXT NOT NULL,
                status TEXT NOT NULL, reason TEXT, request TEXT NOT NULL, result TEXT,
                received_at REAL NOT NULL, completed_at REAL);
            INSERT INTO tasks VALUES ('later', 'echo', 'klp://a/', 'processed', NULL, '2', '2', 20.0, 21.0);
            INSERT INTO tasks VALUES ('earlier', 'echo', 'klp://a/', 'rejected', 'x', '1', NULL, 10.0, 11.0);
            INSERT INTO peers VALUES ('12D3KooWpeer', '[]', 'peer', '[]', '[]', '', 1.0, 2.0);
            """
        )


async def test_version_0_database_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    _version_0_database(tmp_path / "node.db")
    storage = Database(tmp_path / "node.db")
    await storage.open()
    try:
        rows = await storage.query("SELECT seq, task_id, status, reason FROM tasks ORDER BY seq")
        assert [(r["task_id"], r["status"], r["reason"]) for r in rows] == [
            ("earlier", "rejected", "x"),
            ("later", "processed", None),
        ]
        assert [p["peer_id"] for p in await PeerTable(storage).all()] == ["12D3KooWpeer"]
        version = await storage.query("PRAGMA user_version")
        assert version[0][0] == SCHEMA_VERSION
        await storage.write(TASK_INSERT, ("later", 30.0, 31.0))  # ids repeat in a journal
    finally:
        await storage.close()


async def test_database_from_a_newer_kosmesh_is_refused_untouched(tmp_path: Path) -> None:
    storage = Database(tmp_path / "node.db")
    await storage.open()
    await storage.close()
    with sqlite3.connect(tmp_path / "node.db") as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    again = Database(tmp_path / "node.db")
    with pytest.raises(sqlite3.DatabaseError, match="upgrade kosmesh"):
        await again.open()
    with sqlite3.connect(tmp_path / "node.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


async def test_concurrent_writers_share_commits(tmp_path: Path) -> None:
    storage = Database(tmp_path / "node.db")
    await storage.open()
    try:
        await asyncio.gather(*(storage.write(TASK_INSERT, (f"t{i}", 1.0, 2.0)) for i in range(50)))
        rows = await storage.query("SELECT count(*) AS n FROM tasks")
        assert rows[0]["n"] == 50
    finally:
        await storage.close()


async def test_node_on_a_newer_database_fails_with_a_clear_error(tmp_path: Path) -> None:
    from kosmesh import Node
    from kosmesh.node.node import NodeError

    async with Node(tmp_path / "home", listen=[]):
        pass
    with sqlite3.connect(tmp_path / "home" / "node.db") as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(NodeError, match="newer than this kosmesh"):
        async with Node(tmp_path / "home", listen=[]):
            pass
