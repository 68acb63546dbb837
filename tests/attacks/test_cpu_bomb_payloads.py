"""Attack: ~1.6 KB of gzip'd CBOR that decodes to a million small items. Before the fix each one cost
0.3 s (ints) to 1.2 s (maps) of CPU inline on the event loop (item count, decode, re-encoding the echo
with a Python hook per map), and an honest peer's ping went from 0.5 ms to 316-1,105 ms.

Now a payload inflates at most to the largest message, and its items are counted (at most 16,384)
before cbor2 builds anything: each bomb is refused with its reason after a few milliseconds, and the
honest peer's yamux ping on its own connection stays fast while the bombs arrive.
"""

from __future__ import annotations

import asyncio

from kosmesh import Node
from kosmesh.klp import KLPAddress
from kosmesh.wire.host import Host
from tests.attacks.conftest import cpu_seconds
from tests.attacks.klp_frames import Answers, open_klp, signed_payload_bomb

MILLION = (1_000_000).to_bytes(4, "big")
THOUSAND = b"\x99\x03\xe8"  # an array of 1,000 items
BOMBS = {
    "1M ints": (b"\x9a" + MILLION + b"\x00" * 1_000_000, "payload_too_complex"),
    "1M empty maps": (b"\x9a" + MILLION + b"\xa0" * 1_000_000, "payload_too_complex"),
    # spread over nested arrays, so no single head gives the count away
    "1M empty lists, nested": (THOUSAND + (THOUSAND + b"\x80" * 1000) * 1000, "payload_too_complex"),
    "1M empty maps, nested": (THOUSAND + (THOUSAND + b"\xa0" * 1000) * 1000, "payload_too_complex"),
    "500k strings, nested": (b"\x99\x01\xf4" + (THOUSAND + b"\x61a" * 1000) * 500, "payload_too_complex"),
    "16 MiB of zeros": (b"\x00" * (16 << 20), "decompression_bomb"),
}
ROUNDS = 4
RTT_BOUND_S = 0.100  # generous: an honest ping takes ~1 ms here; before the fix it took 0.3-1.1 s


async def test_cpu_bomb_payloads(target: Node, honest: Node, attacker: Host) -> None:
    echo = KLPAddress.for_agent(target.peer_id, "echo")
    rounds = [
        {name: signed_payload_bomb(attacker.identity, echo, payload) for name, (payload, _) in BOMBS.items()}
        for _ in range(ROUNDS)
    ]
    assert max(len(frame) for frame in rounds[0].values()) < 20_000  # small on the wire
    conn = await attacker.dial(target.host.listen_addrs[0])
    stream = await open_klp(conn)
    answers = Answers(stream)
    honest_conn = honest.host.connection_to(target.peer_id)
    assert honest_conn is not None
    quiet = [await honest_conn.ping() for _ in range(20)]

    rtts: list[float] = []
    reasons: dict[str, set[tuple[str, str | None]]] = {name: set() for name in BOMBS}
    done = asyncio.Event()

    async def ping_while_bombed() -> None:
        while not done.is_set():
            rtts.append(await honest_conn.ping(timeout=10))

    async def bombard() -> None:
        try:
            for frames in rounds:
                for name, frame in frames.items():
                    stream.write(frame)
                    got = await answers.next(1, timeout=5, partial=True)
                    reasons[name].add((got[0].status, got[0].reason) if got else ("no answer", None))
        finally:
            done.set()

    cpu_before = cpu_seconds()
    await asyncio.gather(bombard(), ping_while_bombed())
    cpu_per_bomb_ms = (cpu_seconds() - cpu_before) / (ROUNDS * len(BOMBS)) * 1000

    print(
        f"\nhonest ping RTT: quiet max {max(quiet) * 1000:.2f} ms; under {ROUNDS * len(BOMBS)} bombs: "
        f"{len(rtts)} pings, median {sorted(rtts)[len(rtts) // 2] * 1000:.2f} ms, max {max(rtts) * 1000:.2f} ms; "
        f"process CPU per bomb (all three nodes, pings included) {cpu_per_bomb_ms:.1f} ms"
    )
    for name, (_, reason) in BOMBS.items():
        assert reasons[name] == {("rejected", reason)}, name
    assert max(rtts) < RTT_BOUND_S
    reply = await honest.send_task(f"klp://{target.peer_id}/agents/echo", "still served", timeout=5)
    assert reply.status == "processed"
