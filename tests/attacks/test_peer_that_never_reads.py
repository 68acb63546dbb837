"""Attack "memory": a peer that never reads its answers.

The attacker sends small gzip'd echo requests (about 2 KB each on the wire) whose answers are
about 0.9 MB, and never reads a byte of them. The node used to queue every answer without
limit (answers written without waiting for drain, yamux's queue uncapped), so its memory grew
by an answer per request. Now answers wait for the stream to drain: the KLP endpoint holds them
(at most ``MAX_WAITING_ANSWERS`` per connection) and resets the stream of a peer that reads
nothing; and whatever an application does, the wire's send queues are capped (a write that finds
its stream's queue, ``max_stream_write_buffer``, or its connection's, ``max_write_buffer``,
already full fails and resets the stream). So the attacker's streams are reset one after
another, the node's buffered bytes stay bounded, and honest peers' tasks still complete.
"""

from __future__ import annotations

import time

from kosmesh import Node
from kosmesh.identity import PeerId
from kosmesh.klp import PROTOCOL_ID, KLPAddress, MessageType, build_message, encode_frame, encode_message
from kosmesh.klp.endpoint import HIGH_WATER, MAX_WAITING_ANSWERS
from kosmesh.wire.connection import ConnectionLimits, Stream
from kosmesh.wire.host import Host
from tests.attacks.conftest import rss_mb
from tests.waiting import wait_for

ANSWER_BYTES = 900_000
REQUESTS = 80
MiB = 1024 * 1024


def big_echo_request(attacker: Host, target: Node) -> bytes:
    message = build_message(
        attacker.identity,
        type=MessageType.TASK_REQUEST,
        source=KLPAddress.for_node(PeerId.from_public_key(attacker.identity.public_key)),
        target=KLPAddress.for_agent(target.peer_id, "echo"),
        data="x" * ANSWER_BYTES,  # the echo agent answers with all of it
        compression="gzip",
        timestamp_ms=int(time.time() * 1000),
    )
    return encode_frame(encode_message(message))


async def test_answers_queued_for_a_peer_that_never_reads_stay_bounded(
    target: Node, honest: Node, attacker: Host
) -> None:
    assert target.klp is not None
    stats = target.klp.stats
    conn = await attacker.dial(target.host.listen_addrs[0])
    request = big_echo_request(attacker, target)
    assert len(request) < 4096  # a small request ...
    rss_before = rss_mb()
    streams: list[Stream] = []
    most_buffered_out = 0
    def answered() -> int:
        return stats["processed"] + stats["rejected"] + stats["deferred"]

    for _ in range(REQUESTS):
        if not streams or streams[-1].is_reset:
            streams.append(await conn.open_stream(PROTOCOL_ID))  # ... on a stream whose answers nobody reads
        stream = streams[-1]
        received, done = stats["received"], answered()
        stream.write(big_echo_request(attacker, target))
        # the node takes it (unless it has just reset that stream, which the attacker learns now)
        await wait_for(lambda: stats["received"] > received or stream.is_reset)  # noqa: B023
        if stats["received"] > received:
            await wait_for(lambda: answered() > done)  # noqa: B023
        if getattr(target.host, "buffers", None) is not None:
            most_buffered_out = max(most_buffered_out, target.host.buffers.buffered_out)
    grown = rss_mb() - rss_before
    # before: every answer stayed queued (REQUESTS x 0.9 MB = 72 MB)
    assert grown < 30, f"the node's memory grew by {grown:.0f} MiB for a peer that reads nothing"
    limits = ConnectionLimits()
    assert most_buffered_out <= limits.max_write_buffer + ANSWER_BYTES + 256 * 1024
    # the attacker's streams were reset, one after another: each held what fits below the high
    # water mark plus what the endpoint holds for it
    per_stream = (HIGH_WATER + MAX_WAITING_ANSWERS) // ANSWER_BYTES + 2
    assert len(streams) >= REQUESTS // per_stream
    assert target.klp.stats["not_reading"] >= len(streams) - 1
    reply = await honest.send_task(f"klp://{target.peer_id}/agents/echo", {"still": "served"})
    assert reply.status == "processed" and reply.result == {"still": "served"}
