"""Record exchange (PEER_DISCOVERY "hello"): each side learns the other's role, capabilities, agents.

When identify shows that a newly connected peer speaks KLP, this node sends it its node record
and stores the one that comes back; a peer's hello is answered the same way. A record is only
ever stored for the authenticated peer of the connection it came over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from kosmesh.discovery.peer_book import PeerBookService
from kosmesh.identity import PeerId
from kosmesh.klp import PROTOCOL_ID, KLPAddress, KLPMessage, MessageType, ProcessingResult
from kosmesh.klp.endpoint import KLPEndpoint, TaskError
from kosmesh.wire.host import Host
from kosmesh.wire.service import Service

log = logging.getLogger(__name__)

HELLO_TIMEOUT_S = 10.0


class RecordExchangeService(Service):
    name = "records"
    message_types: ClassVar[frozenset[str]] = frozenset({MessageType.PEER_DISCOVERY.value})

    def __init__(
        self, host: Host, endpoint: KLPEndpoint, book: PeerBookService, record: Callable[[], dict[str, Any]]
    ) -> None:
        self.host = host
        self.endpoint = endpoint
        self.book = book
        self.record = record

    def identified(self, peer: PeerId, protocols: Iterable[str]) -> None:
        """Identify finished for ``peer``: say hello if it speaks KLP."""
        if PROTOCOL_ID in protocols:
            self.runtime.spawn(self._hello(peer), f"hello to {peer}")

    async def _hello(self, peer: PeerId) -> None:
        conn = self.host.connection_to(peer)
        if conn is None:
            return
        try:
            reply = await self.endpoint.request(
                conn,
                type=MessageType.PEER_DISCOVERY,
                target=KLPAddress.for_node(peer),
                data={"action": "hello", **self.record()},
                timeout=HELLO_TIMEOUT_S,
            )
        except (TaskError, ConnectionError, TimeoutError) as exc:
            log.info("no record from %s: %s", peer, exc)
            return
        if reply.status == "processed" and isinstance(reply.result, dict):
            self.book.described(peer, reply.result)

    def handle_message(self, message: KLPMessage, remote: PeerId) -> ProcessingResult:
        data = message.payload.data
        if isinstance(data, dict):
            self.book.described(remote, data)
        return ProcessingResult("processed", data=self.record())
