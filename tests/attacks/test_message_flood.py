"""Attack: valid signed messages, as fast as the attacker can sign them.

Before: no per-peer limit at all; a peer could keep the node's CPU busy verifying and answering.
Now: each peer has a token bucket of messages and of bytes. Over it, a request is answered
``deferred`` with the wait until the bucket refills (never silence); a peer that keeps sending
once deferred has its stream reset. An honest peer's tasks go on being processed.
"""

from __future__ import annotations

import pytest

from kosmesh import Node
from kosmesh.klp import PROTOCOL_ID, KLPAddress
from kosmesh.node.config import NodeConfig
from kosmesh.wire.host import Host
from tests.attacks.signed import read_answers, signed_frame

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
    answers = await read_answers(stream, flood)
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
    answers = await read_answers(stream, 2_000)
    assert len(answers) < 2_000 and stream.is_reset  # the node stopped answering and reset the stream
    assert target.klp.stats["rate_limited"] > 1_000
