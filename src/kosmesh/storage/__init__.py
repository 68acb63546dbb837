"""The node's store: one SQLite database (``node.db``) behind named methods, bounded by retention.

``Storage`` opens the database and groups its tables; every SQL statement of the project lives
in this package. Writes are group-committed (see :mod:`kosmesh.storage.database`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from kosmesh.storage.database import Database
from kosmesh.storage.log import ConnectionLog, MessageLog
from kosmesh.storage.peers import PeerTable
from kosmesh.storage.schema import SCHEMA_VERSION
from kosmesh.storage.tasks import TaskJournal, preview
from kosmesh.storage.trust import TrustedAgents

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history the node keeps: by rows and by age, per table."""

    tasks_max_rows: int = 1_000_000
    tasks_max_age_s: float = 30 * DAY
    messages_max_rows: int = 100_000
    messages_max_age_s: float = 7 * DAY
    connections_max_rows: int = 100_000
    connections_max_age_s: float = 7 * DAY
    peers_max_rows: int = 10_000


@dataclass(frozen=True, slots=True)
class Pruned:
    """Rows one retention pass removed; ``more`` says a table still holds rows past its bound."""

    tasks: int = 0
    messages: int = 0
    connections: int = 0
    peers: int = 0
    more: bool = False


class Storage:
    """The database and its tables: ``peers``, ``tasks``, ``connections``, ``messages``, ``trust``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = Database(path)
        self.peers = PeerTable(self.db)
        self.tasks = TaskJournal(self.db)
        self.connections = ConnectionLog(self.db)
        self.messages = MessageLog(self.db)
        self.trust = TrustedAgents(self.db)

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    def prune(
        self, retention: Retention, *, keep_peers: set[str], now: float | None = None, batch: int = 5000
    ) -> Pruned:
        """One bounded retention pass: at most ``batch`` rows per table, so the loop is never held long."""
        when = time.time() if now is None else now
        tasks = self.tasks.prune(
            max_rows=retention.tasks_max_rows, older_than=when - retention.tasks_max_age_s, batch=batch
        )
        messages = self.messages.prune(
            max_rows=retention.messages_max_rows, older_than=when - retention.messages_max_age_s, batch=batch
        )
        connections = self.connections.prune(
            max_rows=retention.connections_max_rows, older_than=when - retention.connections_max_age_s, batch=batch
        )
        peers = self.peers.prune(retention.peers_max_rows, keep_peers, batch)
        more = batch in (tasks, messages, connections, peers)
        return Pruned(tasks, messages, connections, peers, more)


__all__ = [
    "SCHEMA_VERSION",
    "ConnectionLog",
    "Database",
    "MessageLog",
    "PeerTable",
    "Pruned",
    "Retention",
    "Storage",
    "TaskJournal",
    "TrustedAgents",
    "preview",
]
