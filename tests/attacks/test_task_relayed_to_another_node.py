"""Attack: node A takes a TASK_REQUEST that B signed and addressed to A, and writes the same bytes on a
``/kos/klp/1.0.0`` stream to node C. Before the fix C ran its agent and recorded the task as coming from
B, with B's trust. Now C answers ``source_mismatch`` (the signer is not the Noise-authenticated sender)
or ``not_for_this_node`` (the message names another node), runs nothing and records nothing.
"""

from __future__ import annotations

from kosmesh import Node
from kosmesh.agents import Task
from kosmesh.klp import KLPAddress
from kosmesh.wire.host import Host
from tests.attacks.klp_frames import Answers, open_klp, signed_task


async def _tasks_recorded(node: Node) -> int:
    return await node.storage.tasks.count()


async def test_task_relayed_to_another_node(target: Node, honest: Node, attacker: Host) -> None:
    ran: list[Task] = []
    target.register_agent("work", lambda task: ran.append(task) or "done")
    # B (the honest node) signs a task for A (the attacker); it could as well be addressed to C
    for_attacker = signed_task(honest.identity, KLPAddress.for_agent(attacker.peer_id, "work"), "pay B's bill")
    for_target = signed_task(honest.identity, KLPAddress.for_agent(target.peer_id, "work"), "pay B's bill")

    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await open_klp(conn)
    answers = Answers(stream)
    stream.write(for_attacker)  # B's bytes for A, written to C by A
    stream.write(for_target)  # B's bytes for C, written to C by A
    got = await answers.next(2)
    assert [(a.status, a.reason) for a in got] == [("rejected", "source_mismatch")] * 2

    # B itself writing its message for A to C: C is not whom it was signed for
    own = honest.host.connection_to(target.peer_id)
    assert own is not None
    honest_stream = await open_klp(own)
    honest_stream.write(for_attacker)
    got = await Answers(honest_stream).next(1)
    assert [(a.status, a.reason) for a in got] == [("rejected", "not_for_this_node")]

    assert ran == [] and await _tasks_recorded(target) == 0
    # B's own task sent the honest way is still served
    reply = await honest.send_task(f"klp://{target.peer_id}/agents/work", "really B", timeout=5)
    assert reply.status == "processed" and [t.data for t in ran] == ["really B"]
