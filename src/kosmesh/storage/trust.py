"""Trust levels the operator gave to agents and their nodes (``kosmesh trust``)."""

from __future__ import annotations

from kosmesh.storage.database import Database


class TrustedAgents:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(self, address: str, authority: str, level: float, when: float) -> float:
        """Keep ``level`` for ``address``; returns the highest level now held by its authority."""
        await self._db.write(
            "INSERT INTO trusted_agents(address, authority, level, added_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(address) DO UPDATE SET level=excluded.level",
            (address, authority, level, when),
        )
        rows = await self._db.query("SELECT MAX(level) AS level FROM trusted_agents WHERE authority=?", (authority,))
        return float(rows[0]["level"])

    async def levels(self) -> dict[str, float]:
        """authority (peer id) -> the highest level given to any of its agents."""
        rows = await self._db.query("SELECT authority, MAX(level) AS level FROM trusted_agents GROUP BY authority")
        return {row["authority"]: float(row["level"]) for row in rows}
