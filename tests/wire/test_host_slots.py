"""Connection slots on real sockets: refused sockets are reset at once, handshakes in progress
are bounded per address and in total, and inbound peers never take the slots kept for our dials.

Attacker sockets come from other loopback addresses (127.0.0.2, ...) than honest hosts
(127.0.0.1), as they would from other machines. The handshake timeout is a minute, so any
socket closed during a test was closed by a slot decision, never by a timeout.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest

from kosmesh.identity import Ed25519PrivateKey
from kosmesh.wire.connection import ConnectionLimits
from kosmesh.wire.host import DialError, Host, HostLimits
from kosmesh.wire.multiaddr import Multiaddr
from tests.waiting import wait_for

PATIENT = ConnectionLimits(handshake_timeout=60.0)


def limits(**kwargs: int) -> HostLimits:
    return HostLimits(connection=PATIENT, **kwargs)


@dataclass
class RawSocket:
    """An attacker's idle socket: did the host start a handshake on it, and did it close it?"""

    reader: asyncio.StreamReader | None  # None: reset before the connect call even returned
    writer: asyncio.StreamWriter | None
    greeted: bool = False  # the host sent its multistream header: admitted
    closed: bool = False

    async def watch(self) -> None:
        try:
            while self.reader is not None and await self.reader.read(4096):
                self.greeted = True
        except ConnectionError:
            pass
        self.closed = True


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[Multiaddr, str], asyncio.Future[RawSocket]]]:
    sockets: list[RawSocket] = []
    tasks: list[asyncio.Task[None]] = []

    async def connect(addr: Multiaddr, source: str) -> RawSocket:
        host, port = addr.tcp_endpoint()
        try:
            sock = RawSocket(*await asyncio.open_connection(host, port, local_addr=(source, 0)))
        except ConnectionResetError:
            sock = RawSocket(None, None)
        sockets.append(sock)
        tasks.append(asyncio.get_running_loop().create_task(sock.watch()))
        return sock

    def start(addr: Multiaddr, source: str) -> asyncio.Future[RawSocket]:
        return asyncio.ensure_future(connect(addr, source))

    yield start
    for sock in sockets:
        if sock.writer is not None:
            sock.writer.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def hosts() -> AsyncIterator[Callable[..., Host]]:
    made: list[Host] = []

    def make(host_limits: HostLimits | None = None) -> Host:
        made.append(Host(Ed25519PrivateKey.generate(), limits=host_limits))
        return made[-1]

    yield make
    for host in made:
        await host.close()


async def settled(sock: RawSocket) -> RawSocket:
    await wait_for(lambda: sock.greeted or sock.closed)
    return sock


async def test_a_refused_socket_is_reset_at_once_without_a_word(
    raw: Callable[[Multiaddr, str], asyncio.Future[RawSocket]], hosts: Callable[..., Host]
) -> None:
    target = hosts(limits(max_connections=2, reserved_outbound=1))
    addr = await target.listen("/ip4/127.0.0.1/tcp/0")
    await hosts().dial(addr)  # takes the only inbound slot
    await wait_for(lambda: target.connections)
    sock = await settled(await raw(addr, "127.0.0.2"))
    assert sock.closed and not sock.greeted
    assert target.refused == {"no inbound slot left (the rest are kept for our dials)": 1}
    assert target.describe()["pending_inbound"] == 0


async def test_the_per_address_cap_applies_when_the_socket_is_accepted(
    raw: Callable[[Multiaddr, str], asyncio.Future[RawSocket]], hosts: Callable[..., Host]
) -> None:
    target = hosts(limits(max_inbound_per_ip=2))
    addr = await target.listen("/ip4/127.0.0.1/tcp/0")
    first, second = [await settled(await raw(addr, "127.0.0.2")) for _ in range(2)]
    third = await settled(await raw(addr, "127.0.0.2"))
    assert first.greeted and second.greeted and not first.closed and not second.closed
    assert third.closed and not third.greeted
    other = await settled(await raw(addr, "127.0.0.3"))  # another address has its own share
    assert other.greeted and not other.closed
    assert dict(target.refused) == {"too many connections from this address": 1}


async def test_pending_handshakes_are_bounded_per_address_and_in_total(
    raw: Callable[[Multiaddr, str], asyncio.Future[RawSocket]], hosts: Callable[..., Host]
) -> None:
    target = hosts(limits(max_pending_inbound=4, max_pending_inbound_per_ip=3))
    addr = await target.listen("/ip4/127.0.0.1/tcp/0")
    a1, a2, a3 = [await settled(await raw(addr, "127.0.0.2")) for _ in range(3)]
    a4 = await settled(await raw(addr, "127.0.0.2"))
    assert a1.greeted and a2.greeted and a3.greeted and a4.closed and not a4.greeted  # per address
    b1 = await settled(await raw(addr, "127.0.0.3"))
    assert b1.greeted and target.describe()["pending_inbound"] == 4  # the pool is full
    # a newcomer from an address with fewer handshakes than the busiest takes its oldest one's place
    b2 = await settled(await raw(addr, "127.0.0.3"))
    assert b2.greeted
    await wait_for(lambda: a1.closed)
    assert not any(s.closed for s in (a2, a3, b1))
    # both addresses now hold as many as the newcomer's would: refused
    b3 = await settled(await raw(addr, "127.0.0.3"))
    assert b3.closed and not b3.greeted
    c1 = await settled(await raw(addr, "127.0.0.4"))  # a quiet address still gets in
    assert c1.greeted
    await wait_for(lambda: a2.closed)  # in place of the oldest handshake of a busiest address
    assert target.describe()["pending_inbound"] == 4
    assert target.refused == {"too many handshakes from this address": 1, "too many handshakes in progress": 1}


async def test_an_honest_peer_gets_through_a_pool_full_of_idle_sockets(
    raw: Callable[[Multiaddr, str], asyncio.Future[RawSocket]], hosts: Callable[..., Host]
) -> None:
    target = hosts(limits(max_pending_inbound=4, max_pending_inbound_per_ip=2))
    addr = await target.listen("/ip4/127.0.0.1/tcp/0")
    idle = [await settled(await raw(addr, f"127.0.0.{2 + i % 2}")) for i in range(10)]
    assert sum(not s.closed for s in idle) == 4
    honest = hosts()
    conn = await honest.dial(addr)  # from 127.0.0.1: evicts the oldest idle handshake
    assert conn.remote_peer_id == target.peer_id
    await wait_for(lambda: target.describe()["established_inbound"] == 1)
    assert sum(not s.closed for s in idle) == 3


async def test_inbound_peers_never_take_the_slots_kept_for_our_dials(hosts: Callable[..., Host]) -> None:
    target = hosts(limits(max_connections=3, reserved_outbound=1))
    addr = await target.listen("/ip4/127.0.0.1/tcp/0")
    for _ in range(2):
        await hosts().dial(addr)
    await wait_for(lambda: len(target.connections) == 2)
    with pytest.raises(DialError):
        await hosts().dial(addr)  # the third inbound peer is refused...
    elsewhere = hosts()
    conn = await target.dial(await elsewhere.listen("/ip4/127.0.0.1/tcp/0"))  # ...and we still dial out
    assert conn.remote_peer_id == elsewhere.peer_id
    farther = hosts()
    with pytest.raises(DialError, match="connection table full"):
        await target.dial(await farther.listen("/ip4/127.0.0.1/tcp/0"))
    await conn.close()
    await wait_for(lambda: target.describe()["established_outbound"] == 0)
    assert (await target.dial(farther.listen_addrs[0])).remote_peer_id == farther.peer_id  # the slot came back


async def test_slots_come_back_after_failures_and_closes(
    raw: Callable[[Multiaddr, str], asyncio.Future[RawSocket]], hosts: Callable[..., Host]
) -> None:
    target = hosts(limits(max_connections=2, reserved_outbound=1, max_pending_inbound=2))
    addr = await target.listen("/ip4/127.0.0.1/tcp/0")
    for _ in range(3):
        sock = await settled(await raw(addr, "127.0.0.2"))
        assert target.describe()["pending_inbound"] == 1
        assert sock.writer is not None
        sock.writer.close()  # the handshake fails
        await wait_for(lambda: target.describe()["pending_inbound"] == 0)
        peer = hosts()
        conn = await peer.dial(addr)
        await wait_for(lambda: target.connections)
        await conn.close()
        await wait_for(lambda: not target.connections)
    assert target.describe() == {
        "pending_inbound": 0,
        "pending_outbound": 0,
        "established_inbound": 0,
        "established_outbound": 0,
        "addresses": 0,
        "refused": {},
        "buffered_in": 0,
        "buffered_out": 0,
        "streams_refused": 0,
    }


async def test_a_closing_host_refuses_dials(hosts: Callable[..., Host]) -> None:
    target, other = hosts(), hosts()
    addr = await other.listen("/ip4/127.0.0.1/tcp/0")
    await target.close()
    with pytest.raises(DialError, match="shutting down"):
        await target.dial(addr)


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="reserved_outbound"):
        HostLimits(max_connections=4, reserved_outbound=4)
    with pytest.raises(ValueError):
        HostLimits(max_pending_inbound=0)


HOST_WITH_FEW_FDS = """
import asyncio, logging, os, resource, sys
from kosmesh.identity import Ed25519PrivateKey
from kosmesh.wire.connection import ConnectionLimits
from kosmesh.wire.host import Host, HostLimits

async def main():
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    host = Host(Ed25519PrivateKey.generate(), limits=HostLimits(connection=ConnectionLimits(handshake_timeout=60)))
    addr = await host.listen("/ip4/127.0.0.1/tcp/0")
    warm = Host(Ed25519PrivateKey.generate())  # one whole connection first: lazy imports open files
    await (await warm.dial(addr)).close()
    await warm.close()
    open_now = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 10, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    print(addr, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_out_of_descriptors_pauses_accepting_instead_of_a_log_storm(
    raw: Callable[[Multiaddr, str], asyncio.Future[RawSocket]], hosts: Callable[..., Host]
) -> None:
    """A process whose descriptor limit is below the host's bounds: accept() fails with EMFILE. The
    host pauses accepting for a second (one warning) instead of retrying at once, and resumes."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOST_WITH_FEW_FDS, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        addr = Multiaddr.parse((await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip())
        idle = [await raw(addr, "127.0.0.2") for _ in range(30)]  # 10 get a descriptor, the rest wait
        await wait_for(lambda: sum(s.greeted for s in idle) >= 9)
        for sock in idle:
            if sock.writer is not None:
                sock.writer.close()  # the host sees them go and frees its descriptors
        conn = await hosts().dial(addr)  # accepting resumed
        assert not conn.closed
    finally:
        proc.kill()
        await proc.wait()
    assert proc.stderr is not None
    warnings = [line for line in (await proc.stderr.read()).decode().splitlines() if "pausing accepts" in line]
    assert 1 <= len(warnings) <= 5, warnings
