"""The task journal: every task an agent ran, in arrival order, with a bounded preview of its data."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from kosmesh.storage.database import Database

PREVIEW_CHARS = 4096


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A JSON view of ``value`` cut at about ``limit`` characters, for the journal.

    The walk stops as soon as the budget is spent, so a payload of a million items costs no more
    than a small one: the journal is a record for the operator, not a copy of the data. The cut is
    marked with a trailing ``…``; bytes are summarised, never rendered.
    """
    parts: list[str] = []
    budget = limit

    def emit(text: str) -> bool:
        nonlocal budget
        if budget <= 0:
            return False
        if len(text) > budget:
            text = text[:budget]
        parts.append(text)
        budget -= len(text)
        return budget > 0

    def walk(item: Any, depth: int) -> bool:
        if item is None or isinstance(item, bool):
            return emit("null" if item is None else ("true" if item else "false"))
        if isinstance(item, int):
            return emit(str(item) if abs(item) < 1 << 64 else "<big int>")
        if isinstance(item, float):
            return emit(repr(item) if math.isfinite(item) else json.dumps(str(item)))
        if isinstance(item, str):
            return emit(json.dumps(item[: budget + 1]))
        if isinstance(item, bytes | bytearray | memoryview):
            return emit(json.dumps(f"<{len(item)} bytes>"))
        if depth > 32:
            return emit('"<nested too deep>"')
        if isinstance(item, dict):
            if not emit("{"):
                return False
            for i, (key, sub) in enumerate(item.items()):
                if (i and not emit(", ")) or not emit(json.dumps(str(key)[:256]) + ": ") or not walk(sub, depth + 1):
                    return False
            return emit("}")
        if isinstance(item, list | tuple):
            if not emit("["):
                return False
            for i, sub in enumerate(item):
                if (i and not emit(", ")) or not walk(sub, depth + 1):
                    return False
            return emit("]")
        return emit(json.dumps(repr(item)[:256]))

    if not walk(value, 0):
        return "".join(parts)[: max(0, limit - 1)] + "…"
    return "".join(parts)


class TaskJournal:
    """Append-only: a row per task run, kept until retention removes the oldest."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def record(
        self,
        *,
        task_id: str,
        agent: str,
        source: str,
        status: str,
        reason: str | None,
        request: Any,
        result: Any,
        received_at: float,
        completed_at: float,
        then: Callable[[BaseException | None], None],
    ) -> None:
        """Journal a task; ``then(None)`` once it is committed (``then(error)`` if it could not be)."""
        self._db.write_then(
            "INSERT INTO tasks(task_id, agent, source, status, reason, request, result, received_at, completed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (task_id, agent, source, status, reason, preview(request), preview(result), received_at, completed_at),
            then,
        )

    async def find(self, task_id: str) -> list[dict[str, Any]]:
        """Every journal row of ``task_id`` (a retried task may appear more than once)."""
        rows = await self._db.query("SELECT * FROM tasks WHERE task_id=? ORDER BY seq", (task_id,))
        return [dict(row) for row in rows]

    async def count(self) -> int:
        rows = await self._db.query("SELECT count(*) FROM tasks")
        return int(rows[0][0])

    def prune(self, *, max_rows: int, older_than: float, batch: int) -> int:
        """Remove up to ``batch`` of the oldest rows: those past ``max_rows``, or received before
        ``older_than``. The journal is in arrival order, so the oldest rows are the lowest seqs."""
        return self._db.delete(
            "DELETE FROM tasks WHERE seq IN (SELECT seq FROM tasks WHERE "
            "seq <= (SELECT max(seq) FROM tasks) - ? OR received_at < ? ORDER BY seq LIMIT ?)",
            (max_rows, older_than, batch),
        )
