"""The connection and message logs: what happened on the wire, for the operator; bounded by retention."""

from __future__ import annotations

from kosmesh.storage.database import Database


class ConnectionLog:
    """A row per connection: who, which way, from where, when it opened and closed, and why."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def opened(self, connection_id: str, peer_id: str, direction: str, remote_addr: str, when: float) -> None:
        self._db.write_then(
            "INSERT OR REPLACE INTO connections(connection_id, peer_id, direction, remote_addr, opened_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (connection_id, peer_id, direction, remote_addr, when),
            None,
        )

    def closed(self, connection_id: str, reason: str | None, when: float) -> None:
        self._db.write_then(
            "UPDATE connections SET closed_at=?, close_reason=? WHERE connection_id=?",
            (when, (reason or "")[:512], connection_id),
            None,
        )

    async def count(self) -> int:
        rows = await self._db.query("SELECT count(*) FROM connections")
        return int(rows[0][0])

    def prune(self, *, max_rows: int, older_than: float, batch: int) -> int:
        return self._db.delete(
            "DELETE FROM connections WHERE rowid IN (SELECT rowid FROM connections WHERE "
            "rowid <= (SELECT max(rowid) FROM connections) - ? OR opened_at < ? ORDER BY rowid LIMIT ?)",
            (max_rows, older_than, batch),
        )


class MessageLog:
    """Messages worth a row: refusals of authenticated senders and non-task traffic, never task bodies."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def log(
        self,
        *,
        message_id: str,
        direction: str,
        type: str,
        source: str,
        target: str,
        status: str,
        reason: str | None,
        when: float,
    ) -> None:
        self._db.write_then(
            "INSERT INTO messages(message_id, direction, type, source, target, status, reason, logged_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (message_id, direction, type, source[:512], target[:512], status, reason[:256] if reason else None, when),
            None,
        )

    async def count(self) -> int:
        rows = await self._db.query("SELECT count(*) FROM messages")
        return int(rows[0][0])

    def prune(self, *, max_rows: int, older_than: float, batch: int) -> int:
        return self._db.delete(
            "DELETE FROM messages WHERE rowid IN (SELECT rowid FROM messages WHERE "
            "rowid <= (SELECT max(rowid) FROM messages) - ? OR logged_at < ? ORDER BY rowid LIMIT ?)",
            (max_rows, older_than, batch),
        )
