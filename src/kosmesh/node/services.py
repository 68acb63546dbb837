"""The list of services a node runs. Adding a protocol is a new service module and one entry here.

Order matters only at start (in list order) and stop (in reverse): a service that others use
comes before them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kosmesh.agents.task_service import AgentTaskService
from kosmesh.discovery.peer_book import PeerBookService
from kosmesh.discovery.redial import RedialPolicy
from kosmesh.discovery.redial_service import RedialService
from kosmesh.identity import PeerId
from kosmesh.klp import KLPProcessor
from kosmesh.klp.endpoint import KLPEndpoint
from kosmesh.klp.record_exchange import RecordExchangeService
from kosmesh.node.message_log import MessageLogger
from kosmesh.node.retention import RetentionService
from kosmesh.trust.service import TrustService
from kosmesh.wire.identify_service import IdentifyService, PeerInfo
from kosmesh.wire.ping_service import PingService
from kosmesh.wire.service import Service

if TYPE_CHECKING:
    from kosmesh.node.node import Node


def build_services(node: Node) -> list[Service]:
    """The services of ``node``, wired to each other, in start order."""
    cfg = node.config
    ping = PingService(node.host)
    identify = IdentifyService(node.host)
    book = PeerBookService(node.storage)
    trust = TrustService(node.storage.trust, default_score=cfg.trust.default_score, configured=cfg.trust.peers)
    processor = KLPProcessor(
        local_peer_id=node.peer_id,
        max_message_bytes=cfg.klp.max_message_bytes,
        max_clock_skew_s=cfg.klp.max_clock_skew_s,
        max_future_skew_s=cfg.klp.max_future_skew_s,
        replay_capacity=cfg.klp.replay_capacity,
        replay_per_peer=cfg.klp.replay_per_peer,
        min_trust_for_tasks=cfg.klp.min_trust_for_tasks,
        trust_score=trust.score,
        supported_types=frozenset(),  # the node sets it once every service is known
    )
    klp = KLPEndpoint(
        identity=node.identity,
        processor=processor,
        dispatch=node.driver.dispatch_message,
        record=node.driver.commit_message,
        workers=cfg.klp.workers,
        queue_capacity=cfg.klp.queue_capacity,
        default_ttl=cfg.klp.default_ttl,
        limits=cfg.klp.rate_limits(),
        on_message=MessageLogger(node.storage.messages),
    )
    node.storage.db.after_commit.append(klp.flush_answers)  # answers kept by one commit leave together
    records = RecordExchangeService(node.host, klp, book, node.node_record)

    def identified(peer: PeerId, info: PeerInfo) -> None:
        book.identified(peer, info.listen_addrs, info.agent_version)
        records.identified(peer, info.protocols)

    identify.on_identified.append(identified)

    def keep_peers() -> set[str]:
        connected = {str(c.remote_peer_id) for c in node.host.connections}
        return connected | trust.trusted() | book.pinned_peers()

    return [
        ping,
        identify,
        book,
        trust,
        klp,
        RedialService(
            node.host,
            book,
            RedialPolicy(min_s=cfg.redial.min_s, max_s=cfg.redial.max_s, give_up_s=cfg.redial.give_up_s),
            seeds=cfg.seeds,
        ),
        records,
        AgentTaskService(node.agents, node.storage.tasks, task_timeout_s=cfg.klp.task_timeout_s),
        RetentionService(
            node.storage, cfg.storage.retention(), interval_s=cfg.storage.retention_interval_s, keep_peers=keep_peers
        ),
    ]

