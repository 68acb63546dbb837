"""Attack: make the node write to disk until it is full.

Before: PEER_DISCOVERY records from 2,000 fresh keys (the signer was never compared with the
connection) grew node.db to 169 MB, 84 KB per key from ~1.5 KB sent; every rejected replay
wrote a row; nothing was ever pruned. Now: a record is kept only for the authenticated peer and
cut to ~4 KiB, replays and forgeries write nothing, each peer has a row budget in the message
log, and retention bounds every table by rows and age.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kosmesh import Node
from kosmesh.identity import Ed25519PrivateKey
from kosmesh.klp import PROTOCOL_ID, KLPAddress, MessageType
from kosmesh.node.config import NodeConfig
from kosmesh.node.message_log import ROW_BURST_PER_PEER, ROWS_PER_S_PER_PEER
from kosmesh.node.retention import RetentionService
from kosmesh.wire.host import Host
from tests.attacks.klp_frames import Answers, signed_frame
from tests.waiting import wait_for

FRESH_KEYS = 2_000
BIG_RECORD = {
    "action": "hello",
    "role": "peer",
    "capabilities": [f"cap-{i}-" + "x" * 200 for i in range(256)],
    "agents": [f"agent-{i}-" + "y" * 200 for i in range(256)],
}


def db_bytes(node: Node) -> int:
    return sum(os.path.getsize(p) for p in node.storage.path.parent.glob("node.db*"))


async def test_records_signed_by_fresh_keys_over_one_connection_are_refused_and_write_nothing(
    target: Node, attacker: Host
) -> None:
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await conn.open_stream(PROTOCOL_ID)
    answers = Answers(stream)
    to_target = KLPAddress.for_node(target.peer_id)
    keys = [Ed25519PrivateKey.generate() for _ in range(FRESH_KEYS)]
    before, started = db_bytes(target), time.monotonic()
    for start in range(0, FRESH_KEYS, 200):
        frames = [
            signed_frame(key, to_target, BIG_RECORD, type=MessageType.PEER_DISCOVERY, compression="gzip")
            for key in keys[start : start + 200]
        ]
        stream.write(b"".join(frames))
        got = await answers.next(len(frames))
        assert {(a.status, a.reason) for a in got} == {("rejected", "source_mismatch")}
    peers = await target.storage.peers.all()
    assert len(peers) == 1 and peers[0]["peer_id"] == str(attacker.peer_id)  # only the real peer
    budget = ROW_BURST_PER_PEER + ROWS_PER_S_PER_PEER * (time.monotonic() - started)
    assert await target.storage.messages.count() <= budget  # one peer, one row budget
    assert db_bytes(target) - before < 512 * 1024  # was 169 MB


async def test_replays_write_no_rows(target: Node, attacker: Host) -> None:
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await conn.open_stream(PROTOCOL_ID)
    answers = Answers(stream)
    frame = signed_frame(attacker.identity, KLPAddress.for_agent(target.peer_id, "echo"), "once")
    stream.write(frame)
    assert [a.status for a in await answers.next(1)] == ["processed"]
    rows = await target.storage.messages.count()
    stream.write(frame * 500)
    assert {(a.status, a.reason) for a in await answers.next(500)} == {("rejected", "replay")}
    assert await target.storage.messages.count() == rows
    assert await target.storage.tasks.count() == 1


@pytest.fixture
def target_config() -> NodeConfig:
    cfg = NodeConfig()
    cfg.storage.peers_max_rows = 20
    cfg.storage.retention_interval_s = 0.05
    return cfg


async def test_many_authenticated_peers_each_keep_a_bounded_record_and_retention_bounds_the_rows(
    target: Node, tmp_path: Path
) -> None:
    """Fresh identities that really connect: each one's record is cut to size, and the peer book
    keeps at most peers_max_rows peers that are neither connected, trusted nor pinned."""
    to_target = KLPAddress.for_node(target.peer_id)
    for _ in range(60):
        host = Host(Ed25519PrivateKey.generate())
        try:
            conn = await host.dial(target.host.listen_addrs[0])
            stream = await conn.open_stream(PROTOCOL_ID)
            stream.write(signed_frame(host.identity, to_target, BIG_RECORD, type=MessageType.PEER_DISCOVERY))
            assert [a.status for a in await Answers(stream).next(1)] == ["processed"]
        finally:
            await host.close()
    await wait_for(lambda: not target.host.connections, timeout=10)
    retention = target.driver.get(RetentionService)
    await wait_for(lambda: retention.totals.peers >= 40, timeout=10)
    peers = await target.storage.peers.all()
    assert len(peers) <= 20
    for peer in peers:
        size = len(str(peer["capabilities"])) + len(str(peer["agents"]))
        assert size < 5 * 1024, size  # was up to ~130 KiB per record
