"""Hostile KLP traffic against a running node: garbage, forgeries, replays, oversized frames.

The node must answer only authenticated senders, reset streams that break framing, and
keep serving honest peers (and the attacker's other streams) afterwards.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from kosmesh import Node
from kosmesh.codec.varint import encode_uvarint
from kosmesh.identity import Ed25519PrivateKey
from kosmesh.klp import (
    PROTOCOL_ID,
    FrameReader,
    KLPAddress,
    MessageType,
    build_message,
    decode_message,
    encode_frame,
    encode_message,
    parse_response,
)
from kosmesh.node.config import NodeConfig
from kosmesh.wire.connection import Connection, Stream, StreamResetError
from kosmesh.wire.host import Host

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[Node]:
    cfg = NodeConfig()
    cfg.klp.max_message_bytes = 64 * 1024
    async with Node(tmp_path / "target", listen=LOOPBACK, config=cfg) as node:
        yield node


@pytest.fixture
async def attacker() -> AsyncIterator[Host]:
    host = Host(Ed25519PrivateKey.generate())
    try:
        yield host
    finally:
        await host.close()


def task(identity: Ed25519PrivateKey, node: Node, data: object = "hi", **kw: object) -> bytes:
    from kosmesh.identity import PeerId

    msg = build_message(
        identity,
        type=MessageType.TASK_REQUEST,
        source=KLPAddress.for_node(PeerId.from_public_key(identity.public_key)),
        target=KLPAddress.for_agent(node.peer_id, "echo"),
        data=data,
        timestamp_ms=int(time.time() * 1000),
        **kw,  # type: ignore[arg-type]
    )
    return encode_message(msg)


async def responses(stream: Stream, count: int, timeout: float = 5.0) -> list[object]:
    reader = FrameReader()
    out: list[object] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            chunk = await stream.read()
            if not chunk:
                break
            out += [parse_response(decode_message(f)) for f in reader.receive_data(chunk)]
    return out


async def assert_still_serving(node: Node, conn: Connection, tmp_path: Path) -> None:
    assert await conn.ping() > 0  # the attacker's own connection survived
    async with Node(tmp_path / f"honest{os.urandom(2).hex()}", listen=LOOPBACK) as honest:
        await honest.connect(str(node.host.listen_addrs[0]))
        reply = await honest.send_task(f"klp://{node.peer_id}/agents/echo", {"still": "alive"})
        assert reply.status == "processed" and reply.result == {"still": "alive"}


async def test_garbage_frames_get_no_answer_and_harm_nothing(
    target: Node, attacker: Host, tmp_path: Path
) -> None:
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await conn.open_stream(PROTOCOL_ID)
    rng = random.Random(7)
    valid = task(attacker.identity, target)
    for _ in range(100):
        stream.write(encode_frame(rng.randbytes(rng.randrange(1, 2000))))
    for _ in range(100):  # random single-bit corruptions of a real envelope
        mutated = bytearray(valid)
        mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        stream.write(encode_frame(bytes(mutated)))
    # an honest request on the same stream is still answered, and it is the only answer
    stream.write(encode_frame(task(attacker.identity, target, "after the garbage")))
    got = await responses(stream, 1)
    assert [(r.status, r.data) for r in got] == [("processed", "after the garbage")]  # type: ignore[attr-defined]
    assert target.klp is not None and target.klp.stats["rejected"] >= 100
    await assert_still_serving(target, conn, tmp_path)


async def test_forged_signature_is_never_answered(target: Node, attacker: Host) -> None:
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await conn.open_stream(PROTOCOL_ID)
    msg = decode_message(task(attacker.identity, target))
    forged = replace(msg, signature=Ed25519PrivateKey.generate().sign(b"something else"))
    stream.write(encode_frame(encode_message(forged)))
    stream.write(encode_frame(task(attacker.identity, target, "real")))
    got = await responses(stream, 1)
    assert [(r.status, r.data) for r in got] == [("processed", "real")]  # type: ignore[attr-defined]


async def test_replay_is_rejected_with_a_signed_answer(target: Node, attacker: Host) -> None:
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await conn.open_stream(PROTOCOL_ID)
    raw = task(attacker.identity, target, "once")
    stream.write(encode_frame(raw))
    first = await responses(stream, 1)
    stream.write(encode_frame(raw))
    second = await responses(stream, 1)
    assert first[0].status == "processed"  # type: ignore[attr-defined]
    assert (second[0].status, second[0].reason) == ("rejected", "replay")  # type: ignore[attr-defined]


async def test_oversized_frame_resets_only_that_stream(target: Node, attacker: Host, tmp_path: Path) -> None:
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await conn.open_stream(PROTOCOL_ID)
    stream.write(encode_uvarint(100 * 1024 * 1024) + b"x" * 1000)  # claims 100 MiB; limit is 64 KiB
    with pytest.raises(StreamResetError):
        async with asyncio.timeout(5):
            while await stream.read():
                pass
    other = await conn.open_stream(PROTOCOL_ID)
    other.write(encode_frame(task(attacker.identity, target, "next stream")))
    assert [r.status for r in await responses(other, 1)] == ["processed"]  # type: ignore[attr-defined]
    await assert_still_serving(target, conn, tmp_path)


async def test_truncated_frame_then_hangup(target: Node, attacker: Host, tmp_path: Path) -> None:
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await conn.open_stream(PROTOCOL_ID)
    frame = encode_frame(task(attacker.identity, target))
    stream.write(frame[: len(frame) // 2])
    await stream.close()
    await assert_still_serving(target, conn, tmp_path)


async def test_unknown_type_and_stale_messages_are_rejected_with_reasons(target: Node, attacker: Host) -> None:
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await conn.open_stream(PROTOCOL_ID)
    from kosmesh.identity import PeerId

    me = KLPAddress.for_node(PeerId.from_public_key(attacker.identity.public_key))
    now_ms = int(time.time() * 1000)
    cases = [
        build_message(attacker.identity, type=MessageType.VECTOR_SYNC, source=me,
                      target=KLPAddress.for_node(target.peer_id), data={}, timestamp_ms=now_ms),
        build_message(attacker.identity, type=MessageType.TASK_REQUEST, source=me,
                      target=KLPAddress.for_agent(target.peer_id, "echo"), data=1, timestamp_ms=now_ms - 3_600_000),
        build_message(attacker.identity, type=MessageType.TASK_REQUEST, source=me,
                      target=KLPAddress.for_agent(target.peer_id, "echo"), data=2, ttl=1, timestamp_ms=now_ms - 5_000),
    ]
    for msg in cases:
        stream.write(encode_frame(encode_message(msg)))
    got = await responses(stream, 3)
    assert sorted(r.reason for r in got) == sorted(  # type: ignore[attr-defined]
        ["unsupported_message_type", "timestamp_out_of_window", "expired"]
    )
