"""Housekeeping as a service: node.db is pruned by age and rows on a timer, a bounded batch at a time."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from kosmesh.storage import Pruned, Retention, Storage
from kosmesh.wire.service import Service, ServiceRuntime

log = logging.getLogger(__name__)

BATCH_ROWS = 2000  # per table per pass: a pass holds the event loop for a few milliseconds at most
CATCH_UP_S = 0.05  # the pause between passes while a table is still over its bound


class RetentionService(Service):
    name = "retention"

    def __init__(
        self, storage: Storage, retention: Retention, *, interval_s: float, keep_peers: Callable[[], set[str]]
    ) -> None:
        self.storage = storage
        self.retention = retention
        self.interval_s = interval_s
        self.keep_peers = keep_peers
        self._due: float | None = None
        self.totals = Pruned()

    async def start(self, runtime: ServiceRuntime) -> None:
        await super().start(runtime)
        self._due = runtime.now()  # a pass at start: a node that was down may be over its bounds

    def next_timer(self) -> float | None:
        return self._due

    def handle_timer(self, now: float) -> None:
        try:
            pruned = self.storage.prune(self.retention, keep_peers=self.keep_peers(), batch=BATCH_ROWS)
        except sqlite3.Error as exc:
            log.warning("retention pass failed: %s", exc)
            self._due = now + self.interval_s
            return
        t = self.totals
        self.totals = Pruned(
            t.tasks + pruned.tasks, t.messages + pruned.messages, t.connections + pruned.connections,
            t.peers + pruned.peers, pruned.more,
        )  # fmt: skip
        self._due = now + (CATCH_UP_S if pruned.more else self.interval_s)

    def describe(self) -> dict[str, Any]:
        t = self.totals
        return {"pruned": {"tasks": t.tasks, "messages": t.messages, "connections": t.connections, "peers": t.peers}}
