"""The trust service: the score this node gives each peer, from the operator's word.

Scores are on the seed's 0-10 scale. For now they come from the operator only: levels given with
``kosmesh trust`` (kept in ``node.db``), per-peer scores and the default in ``config.toml``. The
KLP pipeline asks :meth:`TrustService.score` for the receiver's policy (the node's floor for
tasks, the priority a sender may claim); earned trust (receipts, attestations, EigenTrust) builds
on this service later.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

from kosmesh.identity import PeerId
from kosmesh.klp import AddressError, KLPAddress
from kosmesh.storage import TrustedAgents
from kosmesh.wire.service import Service, ServiceRuntime


class TrustError(ValueError):
    """A trust level or address the operator gave is not acceptable."""


class TrustService(Service):
    name = "trust"

    def __init__(self, table: TrustedAgents, *, default_score: float, configured: Mapping[str, float]) -> None:
        self.table = table
        self.default_score = default_score
        self.configured = configured  # the live config mapping: an edit applies at once
        self._given: dict[str, float] = {}

    async def start(self, runtime: ServiceRuntime) -> None:
        await super().start(runtime)
        self._given = await self.table.levels()

    def score(self, peer: PeerId | str) -> float:
        """What this node trusts ``peer`` with: the operator's level, else config, else the default."""
        text = str(peer)
        given = self._given.get(text)
        if given is not None:
            return given
        return self.configured.get(text, self.default_score)

    async def trust_agent(self, address: str, level: float) -> float:
        """Keep ``level`` (0-10) for the agent at ``address``; its node is trusted that much."""
        try:
            klp = KLPAddress.parse(address)
        except AddressError as exc:
            raise TrustError(str(exc)) from None
        if not (math.isfinite(level) and 0 <= level <= 10):
            raise TrustError("trust level must be between 0 and 10")
        self._given[klp.authority] = await self.table.add(str(klp), klp.authority, level, time.time())
        return level

    def trusted(self) -> set[str]:
        """Peers the operator named, whom housekeeping never forgets."""
        return set(self._given) | set(self.configured)

    def describe(self) -> dict[str, Any]:
        return {"default_score": self.default_score, "given": len(self._given), "configured": len(self.configured)}
