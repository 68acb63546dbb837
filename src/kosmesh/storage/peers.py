"""Peers the node has met: addresses, role, capabilities, agents, when seen; and TOFU pins."""

from __future__ import annotations

import json
import time
from typing import Any

from kosmesh.storage.database import Database


def _json_list(value: list[str] | None) -> str | None:
    return json.dumps(value) if value is not None else None


class PeerTable:
    """One row per peer, bounded in number (the least recently seen go first, see :meth:`prune`)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def seen(
        self,
        peer_id: str,
        *,
        addrs: list[str] | None = None,
        role: str | None = None,
        capabilities: list[str] | None = None,
        agents: list[str] | None = None,
        agent_version: str | None = None,
        now: float | None = None,
    ) -> None:
        """Record that we saw ``peer_id`` (now); fields given as None keep their stored value."""
        when = time.time() if now is None else now
        self._db.write_then(
            "INSERT INTO peers(peer_id, addrs, role, capabilities, agents, agent_version, first_seen, last_seen) "
            "VALUES (:peer_id, coalesce(:addrs, '[]'), coalesce(:role, ''), coalesce(:capabilities, '[]'), "
            "coalesce(:agents, '[]'), coalesce(:agent_version, ''), :now, :now) "
            "ON CONFLICT(peer_id) DO UPDATE SET last_seen=excluded.last_seen, "
            "addrs=coalesce(:addrs, addrs), role=coalesce(:role, role), "
            "capabilities=coalesce(:capabilities, capabilities), agents=coalesce(:agents, agents), "
            "agent_version=coalesce(:agent_version, agent_version)",
            {
                "peer_id": peer_id,
                "addrs": _json_list(addrs),
                "role": role,
                "capabilities": _json_list(capabilities),
                "agents": _json_list(agents),
                "agent_version": agent_version,
                "now": when,
            },
            None,
        )

    def last_seen(self, peer_id: str, when: float) -> None:
        self._db.write_then("UPDATE peers SET last_seen=? WHERE peer_id=?", (when, peer_id), None)

    async def all(self, limit: int = 10_000) -> list[dict[str, Any]]:
        """Every known peer, most recently seen first, with list fields decoded."""
        rows = await self._db.query("SELECT * FROM peers ORDER BY last_seen DESC LIMIT ?", (limit,))
        out = []
        for row in rows:
            item = dict(row)
            for key in ("addrs", "capabilities", "agents"):
                item[key] = json.loads(item[key])
            out.append(item)
        return out

    async def addrs(self, peer_id: str) -> list[str]:
        rows = await self._db.query("SELECT addrs FROM peers WHERE peer_id=?", (peer_id,))
        return list(json.loads(rows[0]["addrs"])) if rows else []

    def pin(self, address: str, peer_id: str, when: float) -> None:
        """Trust on first use: bind ``address`` (dialed without /p2p/) to the peer that answered."""
        self._db.write_then(
            "INSERT OR IGNORE INTO pinned_addresses(address, peer_id, pinned_at) VALUES (?, ?, ?)",
            (address, peer_id, when),
            None,
        )

    async def pins(self) -> dict[str, str]:
        """address -> pinned peer id."""
        rows = await self._db.query("SELECT address, peer_id FROM pinned_addresses")
        return {row["address"]: row["peer_id"] for row in rows}

    def prune(self, max_rows: int, keep: set[str], batch: int) -> int:
        """Forget the least recently seen peers beyond ``max_rows``, except those in ``keep``
        (connected, trusted or pinned ones); at most ``batch`` rows at a time."""
        if not keep:
            return self._db.delete(
                "DELETE FROM peers WHERE peer_id IN "
                "(SELECT peer_id FROM peers ORDER BY last_seen DESC LIMIT ? OFFSET ?)",
                (batch, max_rows),
            )
        marks = ",".join("?" * len(keep))
        return self._db.delete(
            "DELETE FROM peers WHERE peer_id IN (SELECT peer_id FROM peers "
            f"WHERE peer_id NOT IN ({marks}) ORDER BY last_seen DESC LIMIT ? OFFSET ?)",
            (*sorted(keep), batch, max(0, max_rows - len(keep))),
        )
