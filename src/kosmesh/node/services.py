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
from kosmesh.klp.endpoint import KLPEndpoint, RateLimits
from kosmesh.klp.record_exchange import RecordExchangeService
from kosmesh.node.message_log import MessageLogger
from kosmesh.node.retention import RetentionService
from kosmesh.storage import DAY, Retention
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
        limits=RateLimits(
            messages_per_s=cfg.klp.peer_messages_per_s,
            message_burst=cfg.klp.peer_message_burst,
            bytes_per_s=cfg.klp.peer_bytes_per_s,
            byte_burst=cfg.klp.peer_byte_burst,
            cpu_per_s=cfg.klp.peer_cpu_per_s,
            cpu_burst=cfg.klp.peer_cpu_burst,
            trusted_multiplier=cfg.klp.trusted_peer_multiplier,
        ),
        on_message=MessageLogger(node.storage.messages),
    )
    node.storage.db.after_commit.append(klp.flush_answers)  # answers kept by one commit leave together
    records = RecordExchangeService(node.host, klp, book, node.node_record)

    def identified(peer: PeerId, info: PeerInfo) -> None:
        book.identified(peer, info.listen_addrs, info.agent_version)
        records.identified(peer, info.protocols)

    identify.on_identified.append(identified)
    st = cfg.storage
    retention = Retention(
        tasks_max_rows=st.tasks_max_rows,
        tasks_max_age_s=st.tasks_max_age_days * DAY,
        messages_max_rows=st.messages_max_rows,
        messages_max_age_s=st.messages_max_age_days * DAY,
        connections_max_rows=st.connections_max_rows,
        connections_max_age_s=st.connections_max_age_days * DAY,
        peers_max_rows=st.peers_max_rows,
    )

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
        RetentionService(node.storage, retention, interval_s=st.retention_interval_s, keep_peers=keep_peers),
    ]

