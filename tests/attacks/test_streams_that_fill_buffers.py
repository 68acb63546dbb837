"""Attack "buffers": many streams, each sent up to its window, with nobody reading.

A connection may hold 1024 streams with a 1 MiB receive window each, and there was no total
per connection or per node; data arriving on a stream whose handler had returned was kept
until the remote closed it. Now data for a stream nobody will read is dropped at once, unread
bytes are held to ``max_buffered_in`` per connection (the biggest streams are reset past it, a
connection that keeps at it is dropped), and to the host's ``BufferBudget`` across connections.
"""

from __future__ import annotations

import asyncio
import contextlib

from kosmesh import Node
from kosmesh.wire.connection import Connection, ConnectionLimits, Stream, StreamResetError
from kosmesh.wire.host import Host
from kosmesh.wire.identify_service import IDENTIFY_PROTOCOL
from tests.attacks.conftest import rss_mb
from tests.waiting import wait_for

MiB = 1024 * 1024
WINDOW = ConnectionLimits().stream_receive_window
SLOW = "/test/slow-reader/1.0.0"


async def never_reads(stream: Stream) -> None:
    """An application that is slow to read: it holds the stream and reads nothing."""
    await asyncio.Event().wait()


async def fill(conn: Connection, protocol: str, streams: int) -> int:
    """Open ``streams`` streams and send (almost) a full window on each; returns how many were filled."""
    sent = 0
    async with asyncio.timeout(10):
        for _ in range(streams):
            try:
                stream = await conn.open_stream(protocol)
                stream.write(b"f" * (WINDOW - 1024))
                await stream.drain()  # our own socket may be full: wait, or our own caps would stop us
            except StreamResetError:
                continue  # the node reset this one already
            except ConnectionError:
                break  # the node dropped us
            sent += 1
        with contextlib.suppress(ConnectionError):
            await conn.ping()  # a barrier: the node has handled everything sent before the pong
    return sent


def inbound_from(target: Node, attacker: Host) -> list[Connection]:
    return [c for c in target.host.connections if c.remote_peer_id == attacker.peer_id]


async def test_data_for_finished_streams_is_not_kept(target: Node, honest: Node, attacker: Host) -> None:
    conn = await attacker.dial(target.host.listen_addrs[0])
    before = rss_mb()
    # identify's handler answers and returns: whatever arrives on the stream later has no reader
    assert await fill(conn, IDENTIFY_PROTOCOL, 40) == 40
    grown = rss_mb() - before
    assert grown < 20, f"the node kept {grown:.0f} MiB that no handler will ever read"  # before: 40 MiB
    [inbound] = inbound_from(target, attacker)
    assert inbound.buffered_in == 0
    assert target.host.buffers.buffered_in == 0
    assert (await honest.ping.ping(target.peer_id))[0] > 0


async def test_unread_streams_stay_within_the_connection_budget(
    target: Node, honest: Node, attacker: Host
) -> None:
    target.host.set_stream_handler(SLOW, never_reads)
    limits = ConnectionLimits()
    conn = await attacker.dial(target.host.listen_addrs[0])
    before = rss_mb()
    [inbound] = inbound_from(target, attacker)
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, inbound.buffered_in)
            await asyncio.sleep(0)

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        sent = await fill(conn, SLOW, 40)
    finally:
        watcher.cancel()
    grown = rss_mb() - before
    assert grown < 30, f"the node holds {grown:.0f} MiB of unread data for one peer"  # before: 40 MiB
    # the cap, plus the one read (at most 256 KiB) in which it was crossed
    assert most <= limits.max_buffered_in + 256 * 1024
    # the biggest streams were reset until the peer had been reset max_budget_resets times: dropped
    await wait_for(lambda: conn.closed)
    assert "kept filling the receive buffers" in (inbound.close_reason or "")
    assert sent >= limits.max_buffered_in // WINDOW  # the budget was filled before it bit
    assert target.host.buffers.buffered_in == 0
    assert (await honest.ping.ping(target.peer_id))[0] > 0


async def test_the_node_budget_holds_across_connections(target: Node, honest: Node) -> None:
    target.host.set_stream_handler(SLOW, never_reads)
    target.host.buffers.max_buffered_in = 8 * MiB
    attackers = [Host(honest.identity.__class__.generate()) for _ in range(4)]
    try:
        most = 0
        for attacker in attackers:
            conn = await attacker.dial(target.host.listen_addrs[0])
            await fill(conn, SLOW, 3)  # 3 MiB each: under the connection budget, over the node's in all
            most = max(most, target.host.buffers.buffered_in)
            await wait_for(lambda: target.host.buffers.reserved_in <= 8 * MiB)  # quiet connections shed soon
        # the node's cap, plus each connection's allowance and the one window in flight
        assert most <= 8 * MiB + 4 * 64 * 1024 + WINDOW
        assert target.host.buffers.buffered_in <= 8 * MiB + 4 * 64 * 1024
        assert (await honest.ping.ping(target.peer_id))[0] > 0
    finally:
        for attacker in attackers:
            await attacker.close()
