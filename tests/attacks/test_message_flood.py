"""Attack: valid signed messages, as fast as the attacker can sign them.

Before: no per-peer limit at all; a peer could keep the node's CPU busy verifying and answering.
Now: each peer has token buckets of messages, bytes and the CPU its messages cost. Over it, a request is answered
``deferred`` with the wait until the bucket refills (never silence); a peer that keeps sending
once deferred has its stream reset. An honest peer's tasks go on being processed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kosmesh import Node
from kosmesh.identity import Ed25519PrivateKey
from kosmesh.klp import PROTOCOL_ID, KLPAddress
from kosmesh.node.config import NodeConfig
from kosmesh.wire.host import Host
from tests.attacks.klp_frames import Answers, signed_frame

RATE, BURST = 50.0, 100.0


@pytest.fixture
def target_config() -> NodeConfig:
    cfg = NodeConfig()
    cfg.klp.peer_messages_per_s, cfg.klp.peer_message_burst = RATE, BURST
    return cfg


async def test_a_peer_over_its_rate_is_deferred_with_a_retry_hint_and_honest_peers_are_served(
    target: Node, attacker: Host, honest: Node
) -> None:
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await conn.open_stream(PROTOCOL_ID)
    echo = KLPAddress.for_agent(target.peer_id, "echo")
    flood = 300
    stream.write(b"".join(signed_frame(attacker.identity, echo, i) for i in range(flood)))
    answers = await Answers(stream).next(flood)
    processed = [a for a in answers if a.status == "processed"]
    deferred = [a for a in answers if a.status == "deferred"]
    assert len(answers) == flood  # every request answered, none dropped in silence
    assert BURST <= len(processed) <= BURST + RATE  # the burst, and what refilled meanwhile
    assert {a.reason for a in deferred} == {"rate_limited"}
    assert all(0 < (a.retry_after or 0) <= 1 / RATE + 1e-6 for a in deferred)

    reply = await honest.send_task(f"klp://{target.peer_id}/agents/echo", "still served")
    assert (reply.status, reply.result) == ("processed", "still served")


async def test_a_peer_that_ignores_deferrals_loses_its_stream(target: Node, attacker: Host) -> None:
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await conn.open_stream(PROTOCOL_ID)
    echo = KLPAddress.for_agent(target.peer_id, "echo")
    frames = b"".join(signed_frame(attacker.identity, echo, i) for i in range(200))
    for _ in range(10):  # 2,000 requests at once: far past the burst and the deferrals allowed
        if stream.is_reset:
            break
        try:
            stream.write(frames)
        except ConnectionError:
            break
    answers = await Answers(stream).next(2_000)
    assert len(answers) < 2_000 and stream.is_reset  # the node stopped answering and reset the stream
    assert target.klp.stats["rate_limited"] > 1_000


@pytest.fixture
def cpu_starved_config() -> NodeConfig:
    cfg = NodeConfig()
    cfg.klp.peer_cpu_per_s, cfg.klp.peer_cpu_burst = 0.01, 0.02  # 10 ms of CPU a second, 20 ms saved up
    return cfg


async def test_expensive_messages_are_charged_what_they_cost(
    tmp_path: Path, cpu_starved_config: NodeConfig, attacker: Host
) -> None:
    """Cheap to send, dear to refuse: a forged source costs a signature check each. The peer's CPU
    budget counts what its messages actually cost, so it is deferred long before its message rate."""
    async with Node(tmp_path / "target", listen=["/ip4/127.0.0.1/tcp/0"], config=cpu_starved_config) as target:
        conn = await attacker.dial(target.host.listen_addrs[0])
        stream = await conn.open_stream(PROTOCOL_ID)
        signer = Ed25519PrivateKey.generate()  # not the connection's key: each costs a verify, then a refusal
        echo = KLPAddress.for_agent(target.peer_id, "echo")
        flood = 400
        stream.write(b"".join(signed_frame(signer, echo, i) for i in range(flood)))
        answers = await Answers(stream).next(flood, timeout=2, partial=True)
        refused = [a for a in answers if a.reason == "source_mismatch"]
        # ~100-300 us each: the 20 ms burst covers well under 400 of them (none get deferral answers:
        # they are not from the connection's peer, so there is nobody to answer)
        assert 0 < len(refused) < flood // 2
        assert target.klp.stats["rate_limited"] >= flood - len(refused)
