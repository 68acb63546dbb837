"""The schema of node.db and how an older one is brought up to date."""

from __future__ import annotations

import sqlite3

# Tasks are an append-only journal in arrival order (see MIGRATIONS[1]).
TASKS_TABLE = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY,
    task_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    request TEXT NOT NULL,
    result TEXT,
    received_at REAL NOT NULL,
    completed_at REAL
);
"""

# Trust on first use: an address dialed without /p2p/ is bound to the peer id that answered first.
PINS_TABLE = """
CREATE TABLE IF NOT EXISTS pinned_addresses (
    address TEXT PRIMARY KEY,
    peer_id TEXT NOT NULL,
    pinned_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS peers_by_last_seen ON peers(last_seen);
"""

SCHEMA = TASKS_TABLE + """
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
CREATE TABLE IF NOT EXISTS trusted_agents (
    address TEXT PRIMARY KEY,
    authority TEXT NOT NULL,
    level REAL NOT NULL,
    added_at REAL NOT NULL
);
""" + PINS_TABLE

SCHEMA_VERSION = 2
# Version 0 keyed `tasks` by its random content-addressed id: every insert landed on a random
# B-tree page, ~3x the cost of appending (measured 16-21 us vs 4-11 us per row). Tasks are now an
# append-only journal in arrival order; a lookup by id scans, which only the operator does.
MIGRATIONS: dict[int, str] = {
    1: "ALTER TABLE tasks RENAME TO tasks_v0;"
    + TASKS_TABLE
    + """
    INSERT INTO tasks(task_id, agent, source, status, reason, request, result, received_at, completed_at)
        SELECT task_id, agent, source, status, reason, request, result, received_at, completed_at
        FROM tasks_v0 ORDER BY received_at;
    DROP TABLE tasks_v0;
    """,
    2: PINS_TABLE,
}


def migrate(db: sqlite3.Connection) -> None:
    """Create the schema in a new database, or bring an older one up to SCHEMA_VERSION."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    fresh = db.execute("SELECT count(*) FROM sqlite_master WHERE name='tasks'").fetchone()[0] == 0
    if fresh:
        db.executescript(SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")
        return
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"node.db has schema version {version}, newer than this kosmesh ({SCHEMA_VERSION}); upgrade kosmesh"
        )
    for step in range(version + 1, SCHEMA_VERSION + 1):
        try:
            db.executescript(f"BEGIN; {MIGRATIONS[step]} PRAGMA user_version={step}; COMMIT;")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")  # the old schema stays as it was
            raise
    db.executescript(SCHEMA)  # tables added since, if any


