"""Attack: an unknown key floods a busy node with tasks it declares CRITICAL. Before the fix, each one
displaced a queued honest task (answered "deferred") and ran ahead of the rest: 136 of 200 queued honest
tasks were evicted or starved.

Now the priority a task gets is capped by the receiver's trust in its sender (an unknown key at the
default trust 5.0 gets at most NORMAL): the flood queues behind the honest tasks, or is deferred itself
when the queue is full, and every honest task is processed, first.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from kosmesh import Node
from kosmesh.agents import Task
from kosmesh.klp import KLPAddress, Priority
from kosmesh.node.config import NodeConfig
from kosmesh.wire.host import Host
from tests.attacks.klp_frames import Answers, open_klp, signed_task
from tests.waiting import wait_for

HONEST = 60
FLOOD = 120
QUEUE = 80


@pytest.fixture
def target_config() -> NodeConfig:
    cfg = NodeConfig()
    cfg.klp.workers = 1  # one task at a time: everything else waits in the priority queue
    cfg.klp.queue_capacity = QUEUE
    return cfg


async def test_self_declared_critical_flood(target: Node, honest: Node, attacker: Host) -> None:
    gate = asyncio.Event()
    order: list[str] = []

    async def slow(task: Task) -> str:
        await gate.wait()
        order.append(str(task.data).split(":")[0])
        return "done"

    target.register_agent("slow", slow)
    address = f"klp://{target.peer_id}/agents/slow"
    honest_tasks = [asyncio.create_task(honest.send_task(address, f"honest:{i}", timeout=20)) for i in range(HONEST)]
    assert target.klp is not None
    await wait_for(lambda: target.klp is not None and target.klp.queue_depth == HONEST - 1)  # one runs

    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await open_klp(conn)
    answers = Answers(stream)
    flood = [
        signed_task(attacker.identity, KLPAddress.parse(address), f"flood:{i}", priority=Priority.CRITICAL)
        for i in range(FLOOD)
    ]
    received = target.klp.stats["received"]
    stream.write(b"".join(flood))
    await wait_for(lambda: target.klp is not None and target.klp.stats["received"] >= received + FLOOD)

    gate.set()
    replies = await asyncio.gather(*honest_tasks)
    assert Counter(r.status for r in replies) == {"processed": HONEST}  # none evicted
    assert order[:HONEST] == ["honest"] * HONEST  # none starved: the flood ran after them
    # the queue had room for QUEUE - (HONEST - 1) of the flood, queued behind the honest tasks
    flood_answers = Counter(a.status for a in await answers.next(FLOOD, timeout=20))
    assert flood_answers == {"deferred": FLOOD - (QUEUE - (HONEST - 1)), "processed": QUEUE - (HONEST - 1)}
