"""kosmesh signed KLP tasks: TASK_REQUEST → echo agent → TASK_RESPONSE between two nodes.

Every request is built and Ed25519-signed by the client node, verified by the server's
pipeline (structure, signature, timestamp, TTL, replay, trust), dispatched through its
priority queue to the built-in echo agent, recorded in SQLite (committed before the
reply, group-committed), answered with a signed response, and verified by the client.

Metrics: ``rtt`` = sequential task round-trips/s with a 256-byte payload; ``extra``:
``tasks_per_s_16_inflight`` (16 concurrent requesters) and its p50/p99 latency;
``bulk`` = MB/s of task payload, sequential 512 KiB tasks to a ``sink`` agent that answers
with the size it got (the envelope limit is 1 MiB); ``streams`` = signed tasks/s each on a
new ``/kos/klp/1.0.0`` stream (open, negotiate, one task, close); ``dial`` = time to
connect the two nodes.

READY line: ``READY <host> <port> <peer id>``.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from _common import (
    RTT_PAYLOAD,
    ClientArgs,
    CpuMeter,
    Result,
    announce_ready,
    describe,
    emit,
    install_stop_handlers,
    median,
    now,
    parse_cli,
    record_in_flight,
)

from kosmesh import Node
from kosmesh.agents import Task
from kosmesh.identity import PeerId
from kosmesh.klp import (
    PROTOCOL_ID as KLP_PROTOCOL,
)
from kosmesh.klp import (
    Accepted,
    FrameReader,
    KLPAddress,
    MessageType,
    build_message,
    encode_frame,
    encode_message,
    parse_response,
)
from kosmesh.node.config import NodeConfig, TrustConfig

HOST = "127.0.0.1"
IN_FLIGHT = 16
BULK_TASK_BYTES = 512 * 1024


async def sink_agent(task: Task) -> int:
    """Answers with how many bytes it received: the bulk metric's server side."""
    return len(task.data) if isinstance(task.data, bytes) else -1


async def serve() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-klp-server-"))
    try:
        # The server trusts its client (trust 8): a trusted peer's per-peer limits are ten times an
        # unknown one's, which is what a benchmark of one peer's throughput is about.
        config = NodeConfig(trust=TrustConfig(default_score=8.0))
        config.listen = [f"/ip4/{HOST}/tcp/0"]
        config.wire.stream_open_rate = 1e6  # the streams metric opens them as fast as it can (default: 1,000/s)
        async with Node(home, config=config) as node:
            node.register_agent("sink", sink_agent)
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            install_stop_handlers(lambda: loop.call_soon_threadsafe(stop.set))
            announce_ready(HOST, node.host.listen_addrs[0].tcp_endpoint()[1], str(node.peer_id))
            await stop.wait()
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def measure_rtt(node: Node, target: str, args: ClientArgs, result: Result) -> None:
    payload = "r" * RTT_PAYLOAD
    end_warmup = now() + args.warmup
    while now() < end_warmup:
        await node.send_task(target, payload)
    samples: list[float] = []
    cpu = CpuMeter()
    start = t = now()
    while t < start + args.duration:
        reply = await node.send_task(target, payload)
        if reply.status != "processed" or reply.result != payload:
            raise RuntimeError(f"bad reply: {reply.status} {reply.reason}")
        t2 = now()
        samples.append(t2 - t)
        t = t2
    result.rtt_per_s = len(samples) / (t - start)
    p50 = median(samples)
    result.rtt_p50_us = None if p50 is None else p50 * 1e6
    cpu.record(result, "rtt", len(samples))


async def measure_in_flight(node: Node, target: str, args: ClientArgs, result: Result) -> None:
    payload = "r" * RTT_PAYLOAD
    latencies: list[float] = []
    failures = 0
    deadline = 0.0

    async def requester() -> None:
        nonlocal failures
        while now() < deadline:
            t = now()
            reply = await node.send_task(target, payload)
            if reply.status == "processed":
                latencies.append(now() - t)
            else:
                failures += 1

    deadline = now() + args.warmup
    await asyncio.gather(*(requester() for _ in range(IN_FLIGHT)))
    latencies.clear()
    cpu = CpuMeter()
    start = now()
    deadline = start + args.duration
    await asyncio.gather(*(requester() for _ in range(IN_FLIGHT)))
    elapsed = now() - start
    record_in_flight(result, latencies, elapsed, failures, cpu)


async def measure_bulk(node: Node, peer: str, args: ClientArgs, result: Result) -> None:
    target = f"klp://{peer}/agents/sink"
    payload = b"b" * BULK_TASK_BYTES
    await node.send_task(target, payload)  # untimed
    tasks = 0
    cpu = CpuMeter()
    start = now()
    while now() - start < args.duration:
        reply = await node.send_task(target, payload)
        if reply.status != "processed" or reply.result != BULK_TASK_BYTES:
            raise RuntimeError(f"bad sink reply: {reply.status} {reply.reason} {reply.result}")
        tasks += 1
    elapsed = now() - start
    result.bulk_bytes = tasks * BULK_TASK_BYTES
    result.bulk_mb_s = result.bulk_bytes / elapsed / 1e6
    result.extra["bulk_tasks"] = tasks
    cpu.record(result, "bulk", result.bulk_bytes / 1e6)


async def one_task_stream(node: Node, peer_id: PeerId) -> None:
    """A fresh KLP stream carrying one signed task and its verified answer, then closed."""
    conn = node.host.connection_to(peer_id)
    assert conn is not None and node.klp is not None
    stream = await conn.open_stream(KLP_PROTOCOL)
    message = build_message(
        node.identity,
        type=MessageType.TASK_REQUEST,
        source=node.address,
        target=KLPAddress.for_agent(peer_id, "echo"),
        data="s",
        timestamp_ms=int(time.time() * 1000),
    )
    stream.write(encode_frame(encode_message(message)))
    reader = FrameReader()
    frames: list[bytes] = []
    while not frames:
        chunk = await stream.read()
        if not chunk:
            raise RuntimeError("stream closed before the answer")
        frames = reader.receive_data(chunk)
    verdict = node.klp.processor.check_response(frames[0], time.time(), peer_id)
    if not isinstance(verdict, Accepted) or parse_response(verdict.message).status != "processed":
        raise RuntimeError(f"bad answer on a new stream: {verdict}")
    await stream.close()


async def measure_streams(node: Node, peer: str, args: ClientArgs, result: Result) -> None:
    peer_id = PeerId.from_string(peer)
    end_warmup = now() + min(args.warmup, 0.5)
    while now() < end_warmup:
        await one_task_stream(node, peer_id)
    count = 0
    cpu = CpuMeter()
    start = now()
    while now() - start < args.duration:
        await one_task_stream(node, peer_id)
        count += 1
    result.streams_per_s = count / (now() - start)
    cpu.record(result, "streams", count)


async def measure_dial(node: Node, target: str, args: ClientArgs, result: Result) -> None:
    times: list[float] = []
    for _ in range(args.dials):
        started = now()
        conn = await node.host.dial(target, reuse=False)
        times.append((now() - started) * 1000)
        await conn.close()
    result.dial_ms_all = times
    result.dial_ms = median(times)


async def client(args: ClientArgs) -> None:
    result = Result(system="kosmesh-klp")
    peer = args.extra[0]
    addr = f"/ip4/{args.host}/tcp/{args.port}/p2p/{peer}"
    target = f"klp://{peer}/agents/echo"
    home = Path(tempfile.mkdtemp(prefix="bench-klp-client-"))
    try:
        # The server trusts its client (trust 8): a trusted peer's per-peer limits are ten times an
        # unknown one's, which is what a benchmark of one peer's throughput is about.
        config = NodeConfig(trust=TrustConfig(default_score=8.0))
        config.listen = [f"/ip4/{HOST}/tcp/0"]
        config.wire.stream_open_rate = 1e6  # the streams metric opens them as fast as it can (default: 1,000/s)
        async with Node(home, config=config) as node:
            await node.connect(addr)
            steps = {
                "rtt": lambda: measure_rtt(node, target, args, result),
                "inflight": lambda: measure_in_flight(node, target, args, result),
                "bulk": lambda: measure_bulk(node, peer, args, result),
                "streams": lambda: measure_streams(node, peer, args, result),
                "dial": lambda: measure_dial(node, addr, args, result),
            }
            wanted = [m for m in args.metrics if m in steps]
            if "rtt" in wanted and "inflight" not in wanted:
                wanted.insert(wanted.index("rtt") + 1, "inflight")
            for metric in wanted:
                try:
                    await steps[metric]()
                except Exception as exc:
                    result.errors[metric] = describe(exc)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    result.notes.append("bulk: 512 KiB signed tasks to a sink agent; streams: one signed task per new KLP stream")
    emit(result)


def main() -> None:
    mode, args = parse_cli()
    if mode == "server":
        asyncio.run(serve())
    else:
        assert args is not None
        asyncio.run(client(args))


if __name__ == "__main__":
    main()
