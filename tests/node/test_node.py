"""Two in-process nodes on loopback: tasks, rejections, priorities, trust, restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kosmesh import Node
from kosmesh.agents import AgentError, Task
from kosmesh.klp import Priority
from kosmesh.node.config import NodeConfig
from kosmesh.node.node import NodeError
from tests.waiting import wait_for

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


@contextlib.asynccontextmanager
async def connected_pair(tmp_path: Path, b_config: NodeConfig | None = None) -> AsyncIterator[tuple[Node, Node]]:
    """Node a connected to node b (b optionally with its own configuration)."""
    a = Node(tmp_path / "a", listen=LOOPBACK)
    b = Node(tmp_path / "b", listen=LOOPBACK, config=b_config)
    async with a, b:
        await a.connect(str(b.host.listen_addrs[0]))
        yield a, b


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    async with connected_pair(tmp_path) as pair:
        yield pair


async def test_echo_task_round_trip(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    reply = await a.send_task(f"klp://{b.peer_id}/agents/echo", {"hello": "mesh", "n": [1, 2, 3]})
    assert reply.status == "processed"
    assert reply.result == {"hello": "mesh", "n": [1, 2, 3]}
    assert reply.responder.startswith(f"klp://{b.peer_id}")
    assert reply.rtt_ms > 0


async def test_task_is_recorded_before_the_reply(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    reply = await a.send_task(f"klp://{b.peer_id}/agents/echo", "persist me")
    rows = await b.storage.db.query("SELECT status, agent, request FROM tasks WHERE task_id=?", (reply.message_id,))
    assert [(r["status"], r["agent"], r["request"]) for r in rows] == [("processed", "echo", '"persist me"')]


async def test_custom_agent_and_agent_error(nodes: tuple[Node, Node]) -> None:
    a, b = nodes

    @b.agent("upper", capabilities=["text"])
    async def upper(task: Task) -> Any:
        if not isinstance(task.data, str):
            raise AgentError("expected text")
        return {"text": task.data.upper(), "from": str(task.source)}

    ok = await a.send_task(f"klp://{b.peer_id}/agents/upper", "shout")
    assert ok.status == "processed"
    assert ok.result["text"] == "SHOUT"
    assert ok.result["from"] == f"klp://{a.peer_id}/"
    bad = await a.send_task(f"klp://{b.peer_id}/agents/upper", 42)
    assert (bad.status, bad.reason) == ("rejected", "expected text")


async def test_an_answer_too_large_to_carry_is_a_rejection_not_a_silence(nodes: tuple[Node, Node]) -> None:
    a, b = nodes

    @b.agent("inflate")
    async def inflate(task: Task) -> Any:
        return b"x" * (2 * 1024 * 1024)  # over the 1 MiB message limit

    reply = await a.send_task(f"klp://{b.peer_id}/agents/inflate", "go", timeout=10)
    assert reply.status == "rejected" and reply.reason is not None, reply
    assert reply.reason.startswith("response_too_large"), reply.reason
    again = await a.send_task(f"klp://{b.peer_id}/agents/echo", "still here")
    assert again.result == "still here"


async def test_unknown_agent_is_rejected(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    reply = await a.send_task(f"klp://{b.peer_id}/agents/nobody", {})
    assert (reply.status, reply.reason) == ("rejected", "no_eligible_agents")


async def test_crashing_agent_does_not_take_node_down(nodes: tuple[Node, Node]) -> None:
    a, b = nodes

    async def crash(task: Task) -> Any:
        raise RuntimeError("bug in agent")

    b.register_agent("crash", crash)
    reply = await a.send_task(f"klp://{b.peer_id}/agents/crash", None)
    assert (reply.status, reply.reason) == ("rejected", "agent_error")
    assert (await a.send_task(f"klp://{b.peer_id}/agents/echo", 1)).status == "processed"


async def test_inline_agents_answer_refuse_and_fail_like_async_ones(nodes: tuple[Node, Node]) -> None:
    """A plain-function agent runs inline; its results, AgentErrors and crashes are answered alike."""
    a, b = nodes

    def count(task: Task) -> Any:
        if task.data == "refuse":
            raise AgentError("not today")
        if task.data == "crash":
            raise ZeroDivisionError("bug")
        return len(task.data)

    b.register_agent("count", count)
    target = f"klp://{b.peer_id}/agents/count"
    ok = await a.send_task(target, "four")
    assert (ok.status, ok.result) == ("processed", 4)
    refused = await a.send_task(target, "refuse")
    assert (refused.status, refused.reason) == ("rejected", "not today")
    crashed = await a.send_task(target, "crash")
    assert (crashed.status, crashed.reason) == ("rejected", "agent_error")
    rows = await b.storage.db.query("SELECT task_id, status FROM tasks WHERE agent='count' ORDER BY seq")
    assert [(r["task_id"], r["status"]) for r in rows] == [
        (ok.message_id, "processed"), (refused.message_id, "rejected"), (crashed.message_id, "rejected")
    ]


async def test_slow_async_agent_times_out(tmp_path: Path) -> None:
    cfg = NodeConfig()
    cfg.klp.task_timeout_s = 0.2
    async with connected_pair(tmp_path, cfg) as (a, b):
        never = asyncio.Event()

        async def stuck(task: Task) -> Any:
            await never.wait()

        b.register_agent("stuck", stuck)
        reply = await a.send_task(f"klp://{b.peer_id}/agents/stuck", None, timeout=10)
        assert (reply.status, reply.reason) == ("rejected", "agent_timeout")
        assert (await a.send_task(f"klp://{b.peer_id}/agents/echo", 1)).status == "processed"


async def test_a_task_that_cannot_be_recorded_is_not_acknowledged(nodes: tuple[Node, Node]) -> None:
    """The answer is the acknowledgement: if the task's record cannot be committed, no 'processed'."""
    a, b = nodes
    assert b.storage.db._db is not None
    refuse = "CREATE TRIGGER refuse BEFORE INSERT ON tasks BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    b.storage.db._db.execute(refuse)
    reply = await a.send_task(f"klp://{b.peer_id}/agents/echo", "lost?")
    assert (reply.status, reply.reason) == ("rejected", "internal_error")
    b.storage.db._db.execute("DROP TRIGGER refuse")
    assert (await a.send_task(f"klp://{b.peer_id}/agents/echo", "kept")).status == "processed"


async def test_many_tasks_in_flight_each_get_their_own_answer(nodes: tuple[Node, Node]) -> None:
    """Answers kept by one commit share a write; each still reaches its own caller."""
    a, b = nodes
    target = f"klp://{b.peer_id}/agents/echo"
    replies = await asyncio.gather(*(a.send_task(target, {"i": i}) for i in range(64)))
    assert [r.result for r in replies] == [{"i": i} for i in range(64)]
    assert all(r.status == "processed" for r in replies)
    rows = await b.storage.db.query("SELECT count(*) AS n FROM tasks WHERE agent='echo'")
    assert rows[0]["n"] == 64


async def test_insufficient_trust_end_to_end(tmp_path: Path) -> None:
    cfg = NodeConfig()
    cfg.trust.default_score = 2.0
    async with connected_pair(tmp_path, cfg) as (a, b):
        from kosmesh.klp import MessageType, TrustRequirements

        # the default request asks for no trust: accepted
        assert (await a.send_task(f"klp://{b.peer_id}/agents/echo", 1)).status == "processed"
        # b trusts a at 2.0 by default; a request demanding 6.0 is refused at b
        conn = a.host.connection_to(b.peer_id)
        assert conn is not None and a.klp is not None
        reply = await a.klp.request(
            conn, type=MessageType.TASK_REQUEST, target=_addr(b, "echo"), data=1, timeout=5,
            trust_requirements=TrustRequirements(minimum_trust_score=6.0),
        )
        assert (reply.status, reply.reason) == ("rejected", "insufficient_trust")
        await b.add_trusted_agent(f"klp://{a.peer_id}/", 7.0)
        reply = await a.klp.request(
            conn, type=MessageType.TASK_REQUEST, target=_addr(b, "echo"), data=1, timeout=5,
            trust_requirements=TrustRequirements(minimum_trust_score=6.0),
        )
        assert reply.status == "processed"


def _addr(node: Node, agent: str) -> Any:
    from kosmesh.klp import KLPAddress

    return KLPAddress.for_agent(node.peer_id, agent)


async def test_critical_before_low_under_load(tmp_path: Path) -> None:
    cfg = NodeConfig()
    cfg.klp.workers = 1
    async with connected_pair(tmp_path, cfg) as (a, b):
        await hellos_done(a, b)
        gate, running = asyncio.Event(), asyncio.Event()
        order: list[str] = []

        async def worker(task: Task) -> Any:
            if task.data == "blocker":
                running.set()
                await gate.wait()
            order.append(task.data)
            return task.data

        b.register_agent("work", worker)
        target = f"klp://{b.peer_id}/agents/work"
        blocker = asyncio.create_task(a.send_task(target, "blocker"))
        await asyncio.wait_for(running.wait(), 10)  # the only worker is now busy
        lows = [asyncio.create_task(a.send_task(target, f"low{i}", priority=Priority.LOW)) for i in range(5)]
        await _until(lambda: b.klp is not None and b.klp.queue_depth == 5)
        critical = asyncio.create_task(a.send_task(target, "critical", priority=Priority.CRITICAL))
        await _until(lambda: b.klp is not None and b.klp.queue_depth == 6)
        gate.set()
        await asyncio.gather(blocker, critical, *lows)
        assert order[0] == "blocker"
        assert order[1] == "critical", order
        assert order[2:] == [f"low{i}" for i in range(5)]


async def test_full_queue_defers_with_retry_after(tmp_path: Path) -> None:
    cfg = NodeConfig()
    cfg.klp.workers = 1
    cfg.klp.queue_capacity = 2
    async with connected_pair(tmp_path, cfg) as (a, b):
        await hellos_done(a, b)
        gate, running = asyncio.Event(), asyncio.Event()

        async def slow(task: Task) -> Any:
            running.set()
            await gate.wait()
            return task.data

        b.register_agent("slow", slow)
        target = f"klp://{b.peer_id}/agents/slow"
        first = [asyncio.create_task(a.send_task(target, 0))]
        await asyncio.wait_for(running.wait(), 10)  # the only worker is busy...
        first += [asyncio.create_task(a.send_task(target, i)) for i in (1, 2)]  # ...and these fill the queue
        await _until(lambda: b.klp is not None and b.klp.queue_depth == 2)
        overflow = await a.send_task(target, "one too many")
        assert overflow.status == "deferred"
        assert overflow.retry_after is not None and overflow.retry_after > 0
        gate.set()
        assert all(r.status == "processed" for r in await asyncio.gather(*first))


async def test_peer_records_exchanged(nodes: tuple[Node, Node]) -> None:
    a, b = nodes

    async def record_known() -> bool:
        peers = {p["peer_id"]: p for p in await a.peers()}
        entry = peers.get(str(b.peer_id))
        return bool(entry and entry["role"] == "peer" and "echo" in entry["agents"])

    async with asyncio.timeout(10):
        while not await record_known():
            await asyncio.sleep(0.02)
    peers = {p["peer_id"]: p for p in await a.peers()}
    assert peers[str(b.peer_id)]["status"] == "connected"
    assert "agent_hosting" in peers[str(b.peer_id)]["capabilities"]


async def test_restart_keeps_identity_and_peers(tmp_path: Path) -> None:
    b = Node(tmp_path / "b", listen=LOOPBACK)
    async with b:
        async with Node(tmp_path / "a", listen=LOOPBACK) as a:
            first_id = a.peer_id
            await a.connect(str(b.host.listen_addrs[0]))
            await a.send_task(f"klp://{b.peer_id}/agents/echo", 1)
        key_mode = stat.S_IMODE(os.stat(tmp_path / "a" / "identity.key").st_mode)
        assert key_mode == 0o600
        async with Node(tmp_path / "a", listen=LOOPBACK) as again:
            assert again.peer_id == first_id
            known = {p["peer_id"] for p in await again.peers()}
            assert str(b.peer_id) in known
            # it dials the peers it knew before the restart on its own
            await _until(lambda: again.host.connection_to(b.peer_id) is not None)


async def test_bad_inputs_are_node_errors(nodes: tuple[Node, Node]) -> None:
    a, _ = nodes
    with pytest.raises(NodeError, match="multiaddr"):
        await a.connect("/ip4/nonsense")
    with pytest.raises(NodeError):
        await a.send_task("http://not-klp/agents/x", 1)
    with pytest.raises(NodeError, match="name records"):
        await a.send_task("klp://node.domain.kai/agents/x", 1)
    from kosmesh.identity import Ed25519PrivateKey, PeerId

    unknown = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
    with pytest.raises(NodeError, match="no address of it is known"):
        await a.send_task(f"klp://{unknown}/agents/echo", 1)


async def test_a_known_but_unreachable_peer_says_why(tmp_path: Path) -> None:
    async with connected_pair(tmp_path) as (_, b):
        b_id = b.peer_id
    async with Node(tmp_path / "a", listen=LOOPBACK) as again:  # b is down; its address is on disk
        with pytest.raises(NodeError, match="dialing its known addresses failed: cannot reach"):
            await again.send_task(f"klp://{b_id}/agents/echo", 1)


async def hellos_done(a: Node, b: Node) -> None:
    """Wait until both PEER_DISCOVERY hellos were served, so only the test's tasks are queued."""
    await _until(lambda: all(n.klp is not None and n.klp.stats["processed"] >= 1 for n in (a, b)))


async def _until(check: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.005)


async def test_busy_workers_drain_the_queue_in_priority_order(tmp_path: Path) -> None:
    """Idle workers take jobs directly; once all are busy, jobs queue and every one is served."""
    cfg = NodeConfig()
    cfg.klp.workers = 2
    async with connected_pair(tmp_path, cfg) as (a, b):
        await hellos_done(a, b)
        gate = asyncio.Event()
        started: list[Any] = []

        async def gated(task: Task) -> Any:
            started.append(task.data)
            await gate.wait()
            return task.data

        b.register_agent("gated", gated)
        target = f"klp://{b.peer_id}/agents/gated"
        assert b.klp is not None
        first = [asyncio.create_task(a.send_task(target, i)) for i in range(2)]
        await _until(lambda: len(started) == 2)
        assert b.klp.queue_depth == 0  # taken by idle workers without queueing
        rest = [asyncio.create_task(a.send_task(target, i, priority=Priority.LOW)) for i in range(2, 12)]
        await _until(lambda: b.klp is not None and b.klp.queue_depth == 10)
        urgent = asyncio.create_task(a.send_task(target, "urgent", priority=Priority.CRITICAL))
        await _until(lambda: b.klp is not None and b.klp.queue_depth == 11)
        gate.set()
        replies = await asyncio.gather(*first, *rest, urgent)
        assert [r.result for r in replies] == [*range(12), "urgent"]
        assert all(r.status == "processed" for r in replies)
        assert started[2] == "urgent", started  # first out of the queue once a worker frees up
        assert b.klp.queue_depth == 0
        # the workers are gone once idle, and new work starts new ones
        assert (await a.send_task(target, "after")).result == "after"


async def test_idle_klp_stream_is_dropped_and_reopened(
    nodes: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    from kosmesh.klp import endpoint as klp_service

    a, b = nodes
    await hellos_done(a, b)
    monkeypatch.setattr(klp_service, "STREAM_IDLE_TIMEOUT", 0.2)  # the server's idle limit per stream
    target = f"klp://{b.peer_id}/agents/echo"
    assert a.klp is not None
    conn = a.host.connection_to(b.peer_id)
    assert conn is not None
    # a fresh KLP stream, served under the short idle limit
    for channel in list(a.klp._channels.values()):
        channel.stream.reset()
    await _until(lambda: not a.klp._channels)
    assert (await a.send_task(target, "first")).result == "first"
    channel = a.klp._channels[conn.connection_id]
    await _until(lambda: not channel.usable)  # the server reset the silent stream
    assert channel.stream.is_reset
    assert (await a.send_task(target, "second")).result == "second"  # on a new stream
    assert not conn.closed


async def test_one_node_per_home(tmp_path: Path) -> None:
    async with Node(tmp_path / "a", listen=LOOPBACK):
        second = Node(tmp_path / "a", listen=LOOPBACK)
        with pytest.raises(NodeError, match=f"already running with home .*pid {os.getpid()}"):
            await second.start()
    # released on stop: the home can be used again
    async with Node(tmp_path / "a", listen=LOOPBACK) as again:
        assert again.host.listen_addrs


async def test_failed_start_releases_the_home(tmp_path: Path) -> None:
    async with Node(tmp_path / "b", listen=LOOPBACK) as holder:
        taken = str(holder.host.listen_addrs[0].without_peer_id())
        broken = Node(tmp_path / "a", listen=[taken])  # the port is in use
        with pytest.raises(NodeError, match="cannot listen"):
            await broken.start()
    async with Node(tmp_path / "a", listen=LOOPBACK) as ok:
        assert ok.host.listen_addrs


async def test_big_answers_for_a_slow_reader_wait_for_the_stream_to_drain_and_all_arrive(
    nodes: tuple[Node, Node],
) -> None:
    """Eight 900 KB answers for a peer that stops reading for a while: far more than a stream may
    queue (2 MiB), so they wait in the endpoint for the stream to drain, instead of being refused
    or resetting the stream, and all arrive once the peer reads again."""
    a, b = nodes
    big = "y" * 900_000

    async def big_answer(task: Task) -> str:  # a small request, a big answer, each in its own time
        await asyncio.sleep(0.02 * task.data)  # a stagger, so each answer is written on its own
        return big + str(task.data)

    b.register_agent("big", big_answer)
    conn = a.host.connection_to(b.peer_id)
    assert conn is not None and conn._transport is not None
    await a.send_task(f"klp://{b.peer_id}/agents/echo", "warm up")  # the KLP stream is open
    done = b.klp.stats["processed"]
    conn._transport.pause_reading()  # a reads nothing for now: to b, a slow reader
    sending = [asyncio.ensure_future(a.send_task(f"klp://{b.peer_id}/agents/big", i, timeout=30)) for i in range(8)]
    await wait_for(lambda: b.klp.stats["processed"] >= done + 8, timeout=20)
    # held, not refused: more than a stream may queue waits in the endpoint for the stream to drain
    await wait_for(lambda: sum(w.size for w in b.klp._waiting_answers.values()) > 2 * 1024 * 1024)
    conn._transport.resume_reading()
    replies = await asyncio.gather(*sending)
    assert [r.status for r in replies] == ["processed"] * 8
    assert [r.result for r in replies] == [big + str(i) for i in range(8)]
    assert b.klp.stats["not_reading"] == 0
