"""``python -m tests.rig.attacker``: one hostile peer that runs every attack in turn against a node.

    python -m tests.rig.attacker --target /ip4/…/tcp/…/p2p/12D3KooW… [--seconds 120] [--only NAME,…]

Each attack gets an equal share of ``--seconds`` and is run as the issue that found it describes
it (tests/attacks has one test per attack with the same names). Stdout, one JSON object a line:
``{"event": "attack", "name": …, "at_s": …}`` when an attack starts, ``{"event": "attack_done",
"name": …, "at_s": …, "stats": {…}}`` when it ends (what it sent and what the node answered), and a
final ``{"event": "summary", …}``. The attacker never stops on an error: a refused connection or a
reset stream is what a defended node does, so it is counted and the attack goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kosmesh.identity import Ed25519PrivateKey
from kosmesh.klp import (
    PROTOCOL_ID as KLP,
)
from kosmesh.klp import (
    FrameReader,
    KLPAddress,
    MessageType,
    Priority,
    decode_message,
    parse_response,
)
from kosmesh.wire.connection import Connection, Stream
from kosmesh.wire.host import Host
from kosmesh.wire.multiaddr import Multiaddr
from tests.attacks.klp_frames import signed_frame, signed_payload_bomb

IDENTIFY = "/ipfs/id/1.0.0"
MAX_TTL = 30 * 24 * 3600


@dataclass
class Attack:
    """What one attack did: counters of what it sent and of what came back."""

    name: str
    counts: Counter[str] = field(default_factory=Counter)

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] += n


class Attacker:
    def __init__(self, target: Multiaddr) -> None:
        self.target = target
        peer = target.peer_id
        assert peer is not None, "the target multiaddr must end in /p2p/<peer id>"
        self.peer = peer
        self.host_port = target.tcp_endpoint()
        self.echo = KLPAddress.for_agent(peer, "echo")
        self.node = KLPAddress.for_node(peer)

    # -- helpers -----------------------------------------------------------------------
    async def _host(self, attack: Attack) -> tuple[Host, Connection] | None:
        host = Host(Ed25519PrivateKey.generate())
        try:
            conn = await host.dial(self.target)
        except (ConnectionError, OSError, TimeoutError) as exc:
            attack.count(f"dial refused: {type(exc).__name__}")
            await host.close()
            return None
        return host, conn

    @contextlib.asynccontextmanager
    async def _connected(self, attack: Attack) -> AsyncIterator[tuple[Host, Connection] | None]:
        """A fresh identity's connection to the target (None if refused), closed afterwards."""
        opened = await self._host(attack)
        try:
            yield opened
        finally:
            if opened is not None:
                await opened[0].close()

    @staticmethod
    async def _stream(conn: Connection, protocol: str, attack: Attack) -> Stream | None:
        try:
            return await asyncio.wait_for(conn.open_stream(protocol), 5)
        except (ConnectionError, TimeoutError) as exc:
            attack.count(f"stream refused: {type(exc).__name__}")
            return None

    @staticmethod
    async def _answers(stream: Stream, attack: Attack, *, until: float) -> None:
        """Read and tally answers until the stream ends or ``until``."""
        reader = FrameReader()
        with contextlib.suppress(ConnectionError, TimeoutError, asyncio.IncompleteReadError, ValueError):
            while time.monotonic() < until:
                chunk = await asyncio.wait_for(stream.read(), max(0.01, until - time.monotonic()))
                if not chunk:
                    attack.count("stream ended")
                    return
                for raw in reader.receive_data(chunk):
                    result = parse_response(decode_message(raw))
                    attack.count(f"{result.status}: {result.reason}" if result.reason else result.status)

    async def _flood(self, attack: Attack, seconds: float, frames: Callable[[Host], list[bytes]]) -> None:
        """Write batches from ``frames`` on a KLP stream as fast as the node takes them, reading the
        answers; when the node resets the stream or drops the connection, start again on a new one."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            async with self._connected(attack) as opened:
                stream = None if opened is None else await self._stream(opened[1], KLP, attack)
                if opened is None or stream is None:
                    await asyncio.sleep(0.1)  # pacing after a refusal, not waiting for a condition
                    continue
                reading = asyncio.create_task(self._answers(stream, attack, until=until))
                while time.monotonic() < until and not reading.done():
                    batch = frames(opened[0])
                    try:
                        await asyncio.wait_for(stream.write_all(b"".join(batch)), max(0.01, until - time.monotonic()))
                    except (ConnectionError, TimeoutError):
                        attack.count("stream reset or stalled: started again")
                        break
                    attack.count("sent", len(batch))
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)

    # -- the attacks -------------------------------------------------------------------
    async def task_relayed_to_another_node(self, attack: Attack, seconds: float) -> None:
        """Tasks signed by one identity, sent over another's connection: never run, never recorded."""
        signer = Ed25519PrivateKey.generate()
        await self._flood(attack, seconds, lambda _: [signed_frame(signer, self.echo, "relayed") for _ in range(20)])

    async def peer_that_never_reads(self, attack: Attack, seconds: float) -> None:
        """Small gzip'd requests whose answers are ~900 KB, on a connection that never reads (what the
        node then does to the stream it cannot see: it reads nothing)."""
        async with self._connected(attack) as opened:
            stream = None if opened is None else await self._stream(opened[1], KLP, attack)
            if opened is None or stream is None:
                return
            host, conn = opened
            until = time.monotonic() + seconds
            transport = getattr(conn, "_transport", None)
            if transport is not None:
                transport.pause_reading()  # from now on nothing the node sends is read
            big = "x" * 900_000
            while time.monotonic() < until and not conn.closed and not stream.is_reset:
                try:
                    stream.write(signed_frame(host.identity, self.echo, big, compression="gzip"))
                except ConnectionError:
                    break
                attack.count("sent")
                await asyncio.sleep(0.005)  # pacing the attacker's own CPU, not waiting for a condition

    async def replay_cache_flood(self, attack: Attack, seconds: float) -> None:
        """Distinct messages stamped as far in the future as allowed, with the longest ttl."""

        def batch(host: Host) -> list[bytes]:
            return [signed_frame(host.identity, self.echo, i, offset_s=119, ttl=MAX_TTL) for i in range(50)]

        await self._flood(attack, seconds, batch)  # its own key: only the per-peer quota stops it

    async def cpu_bomb_payloads(self, attack: Attack, seconds: float) -> None:
        """1.6 KB of gzip'd CBOR that decodes to a million small items, in turn ints, maps and lists."""
        bombs = [
            b"\x9a\x00\x0f\x42\x40" + b"\x00" * 1_000_000,  # [0, 0, … ] a million ints
            b"\x9a\x00\x07\xa1\x20" + b"\xa0" * 500_000,  # [{}, {}, … ] maps
            b"\x9a\x00\x0f\x42\x40" + b"\x80" * 1_000_000,  # [[], [], … ] lists
        ]
        turn = 0

        def batch(host: Host) -> list[bytes]:
            nonlocal turn
            turn += 1
            return [signed_payload_bomb(host.identity, self.echo, bombs[turn % len(bombs)])]

        await self._flood(attack, seconds, batch)

    async def idle_sockets_fill_the_slots(self, attack: Attack, seconds: float) -> None:
        """Hundreds of TCP sockets that connect and never say a word, opened 50 at a time."""
        until = time.monotonic() + seconds
        loop = asyncio.get_running_loop()
        socks: list[socket.socket] = []

        async def one() -> None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, self.host_port), 2)
            except (OSError, TimeoutError):
                attack.count("connect refused")
                sock.close()
                return
            socks.append(sock)
            attack.count("opened")

        try:
            while time.monotonic() < until and len(socks) < 800:
                await asyncio.gather(*(one() for _ in range(50)))
            await asyncio.sleep(max(0.0, until - time.monotonic()))  # hold them: the attack is the holding
        finally:
            for sock in socks:
                sock.close()

    async def streams_that_fill_buffers(self, attack: Attack, seconds: float) -> None:
        """Many streams, each sending up to its window to a handler that never reads it, 50 at a time."""
        async with self._connected(attack) as opened:
            if opened is None:
                return
            conn = opened[1]
            until = time.monotonic() + seconds
            chunk = b"\x00" * 65536

            async def fill() -> None:
                stream = await self._stream(conn, IDENTIFY, attack)
                if stream is None:
                    return
                with contextlib.suppress(ConnectionError):
                    for _ in range(16):
                        stream.write(chunk)
                    attack.count("stream filled")

            filled = 0
            while time.monotonic() < until and filled < 1000 and not conn.closed:
                await asyncio.gather(*(fill() for _ in range(50)))
                filled += 50
            await asyncio.sleep(max(0.0, until - time.monotonic()))
            attack.count("connection dropped by the node" if conn.closed else "connection still up")

    async def records_and_replays_fill_the_disk(self, attack: Attack, seconds: float) -> None:
        """PEER_DISCOVERY records signed by fresh keys, then one message replayed over and over."""
        record = {"action": "hello", "role": "peer", "capabilities": ["x" * 200] * 256, "agents": ["y" * 200] * 256}
        half = seconds / 2
        await self._flood(
            attack, half,
            lambda _: [signed_frame(Ed25519PrivateKey.generate(), self.node, record, type=MessageType.PEER_DISCOVERY,
                                    compression="gzip") for _ in range(10)],
        )  # fmt: skip
        once: list[bytes] = []

        def replays(host: Host) -> list[bytes]:
            if not once:
                once.append(signed_frame(host.identity, self.echo, "again"))
            return once * 50

        await self._flood(attack, half, replays)

    async def self_declared_critical_flood(self, attack: Attack, seconds: float) -> None:
        """CRITICAL tasks from a key nobody trusts."""
        await self._flood(
            attack, seconds,
            lambda host: [signed_frame(host.identity, self.echo, n, priority=Priority.CRITICAL) for n in range(20)],
        )  # fmt: skip

    async def message_flood(self, attack: Attack, seconds: float) -> None:
        """Valid signed tasks as fast as one process can sign them: the per-peer rate answers deferred."""
        await self._flood(attack, seconds, lambda host: [signed_frame(host.identity, self.echo, n) for n in range(50)])

    async def stream_open_flood(self, attack: Attack, seconds: float) -> None:
        """New streams as fast as they can be opened, each abandoned at once."""
        async with self._connected(attack) as opened:
            if opened is None:
                return
            conn = opened[1]
            until = time.monotonic() + seconds
            while time.monotonic() < until and not conn.closed:
                stream = await self._stream(conn, KLP, attack)
                if stream is None:
                    await asyncio.sleep(0.01)  # pacing after a refusal
                    continue
                attack.count("opened")
                stream.reset()

    async def markup_in_remote_strings(self, attack: Attack, seconds: float) -> None:
        """A node record whose strings are Rich markup, for `kosmesh peers` to choke on."""
        record = {"action": "hello", "role": "[/x]", "capabilities": ["[/x]", "[bold red]boom[/]", "[link=x]y"],
                  "agents": ["[/]"]}  # fmt: skip
        await self._flood(
            attack, seconds,
            lambda host: [signed_frame(host.identity, self.node, record, type=MessageType.PEER_DISCOVERY)],
        )  # fmt: skip

    ATTACKS = (
        "task_relayed_to_another_node",
        "peer_that_never_reads",
        "replay_cache_flood",
        "cpu_bomb_payloads",
        "idle_sockets_fill_the_slots",
        "streams_that_fill_buffers",
        "records_and_replays_fill_the_disk",
        "self_declared_critical_flood",
        "message_flood",
        "stream_open_flood",
        "markup_in_remote_strings",
    )


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def run(target: Multiaddr, seconds: float, only: list[str]) -> dict[str, Any]:
    attacker = Attacker(target)
    names = only or list(Attacker.ATTACKS)
    share = seconds / len(names)
    start = time.monotonic()
    done: dict[str, dict[str, int]] = {}
    for name in names:
        attack = Attack(name)
        _emit({"event": "attack", "name": name, "at_s": round(time.monotonic() - start, 2)})
        method: Callable[[Attack, float], Awaitable[None]] = getattr(attacker, name)
        try:
            await asyncio.wait_for(method(attack, share), share + 10)
        except Exception as exc:  # the attacker carries on whatever the node does to it
            attack.count(f"attack ended: {type(exc).__name__}: {str(exc)[:80]}")
        done[name] = dict(attack.counts)
        _emit({"event": "attack_done", "name": name, "at_s": round(time.monotonic() - start, 2),
               "stats": done[name]})  # fmt: skip
    summary = {"event": "summary", "attacks": done, "elapsed_s": round(time.monotonic() - start, 2)}
    _emit(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rig.attacker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--target", required=True, help="the victim's multiaddr, with /p2p/")
    parser.add_argument("--seconds", type=float, default=120.0, help="all attacks together")
    parser.add_argument("--only", default="", help="comma-separated attack names (default: all, in turn)")
    args = parser.parse_args(argv)
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in Attacker.ATTACKS]
    if unknown:
        parser.error(f"unknown attacks {unknown}; known: {', '.join(Attacker.ATTACKS)}")
    asyncio.run(run(Multiaddr.parse(args.target), args.seconds, only))
    return 0


if __name__ == "__main__":
    sys.exit(main())
