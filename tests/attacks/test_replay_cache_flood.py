"""Attack: one key floods the target with future-dated signed messages to fill its replay cache, so that
honest peers' tasks get ``replay_cache_full``. (At full scale: ~100k messages stamped +119 s with ttl 120,
17 s of sending, kept 239 s each.)

Now a message may be stamped at most ``max_future_skew_s`` ahead (the +119 s ones are refused and take
no entry), ids live no longer than they could pass, and each peer holds at most ``replay_per_peer`` ids:
the flooder is refused alone at its quota while honest tasks are still processed. Scaled down by config
(a quota of 300 ids) so it runs in seconds.
"""

from __future__ import annotations

from collections import Counter

import pytest

from kosmesh import Node
from kosmesh.klp import KLPAddress
from kosmesh.node.config import NodeConfig
from kosmesh.wire.host import Host
from tests.attacks.klp_frames import Answers, open_klp, signed_task

QUOTA = 300


@pytest.fixture
def target_config() -> NodeConfig:
    cfg = NodeConfig()
    cfg.klp.replay_capacity = 2 * QUOTA
    cfg.klp.replay_per_peer = QUOTA
    return cfg


async def test_replay_cache_flood(target: Node, honest: Node, attacker: Host) -> None:
    echo = KLPAddress.for_agent(target.peer_id, "echo")
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await open_klp(conn)
    answers = Answers(stream)

    far_ahead = [signed_task(attacker.identity, echo, i, offset_s=119, ttl=120) for i in range(50)]
    stream.write(b"".join(far_ahead))
    got = Counter((a.status, a.reason) for a in await answers.next(len(far_ahead)))
    assert got == {("rejected", "timestamp_out_of_window"): len(far_ahead)}  # no entries taken
    assert target.klp is not None and target.klp.processor.replay_cache.count(str(attacker.peer_id)) == 0

    # more than the whole cache holds: without per-peer quotas this alone would fill it
    flood = [signed_task(attacker.identity, echo, i, offset_s=9, ttl=120) for i in range(2 * QUOTA + 100)]
    stream.write(b"".join(flood))
    got = Counter((a.status, a.reason) for a in await answers.next(len(flood)))
    assert got == {("processed", None): QUOTA, ("rejected", "replay_cache_full"): QUOTA + 100}

    for i in range(20):  # the honest peer is not starved by the flooder's entries
        reply = await honest.send_task(f"klp://{target.peer_id}/agents/echo", {"honest": i}, timeout=5)
        assert (reply.status, reply.result) == ("processed", {"honest": i})
    # and the flooder is still refused: its quota is its own
    stream.write(signed_task(attacker.identity, echo, "one more", offset_s=9, ttl=120))
    assert [(a.status, a.reason) for a in await answers.next(1)] == [("rejected", "replay_cache_full")]
