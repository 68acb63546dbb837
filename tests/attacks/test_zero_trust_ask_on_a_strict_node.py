"""Attack: on a node whose default trust is 0, an unknown key sends a task asking
``minimum_trust_score`` 0.0. Before the fix the only trust check was the one the sender asks for, so
the task was processed. Now the node's own floor for tasks (``klp.min_trust_for_tasks``) applies first:
the task is refused ``insufficient_trust``, its agent never runs; a peer the node trusts is served.
"""

from __future__ import annotations

import pytest

from kosmesh import Node
from kosmesh.agents import Task
from kosmesh.klp import KLPAddress, TrustRequirements
from kosmesh.node.config import NodeConfig
from kosmesh.wire.host import Host
from tests.attacks.klp_frames import Answers, open_klp, signed_task


@pytest.fixture
def target_config() -> NodeConfig:
    cfg = NodeConfig()
    cfg.trust.default_score = 0.0  # strangers are not trusted at all...
    cfg.klp.min_trust_for_tasks = 1.0  # ...and tasks need some trust, whatever the sender asks
    return cfg


async def test_zero_trust_ask_on_a_strict_node(target: Node, honest: Node, attacker: Host) -> None:
    ran: list[Task] = []
    target.register_agent("work", lambda task: ran.append(task) or "done")
    work = KLPAddress.for_agent(target.peer_id, "work")
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await open_klp(conn)
    stream.write(signed_task(attacker.identity, work, "run me", trust_requirements=TrustRequirements(0.0)))
    got = await Answers(stream).next(1)
    assert [(a.status, a.reason) for a in got] == [("rejected", "insufficient_trust")]
    assert ran == []

    target.config.trust.peers[str(honest.peer_id)] = 6.0  # the operator trusts the honest peer
    reply = await honest.send_task(str(work), "trusted", timeout=5)
    assert reply.status == "processed" and [t.data for t in ran] == ["trusted"]
