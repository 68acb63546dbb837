"""Hostile peers on the application protocols every host serves: identify and ping.

A malicious peer may send garbage to our identify/ping handlers, or answer our identify
request with garbage or an impossible length. None of it may crash the host, break the
connection's other streams, or stop it serving honest peers.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from kosmesh.codec.varint import encode_uvarint
from kosmesh.identity import Ed25519PrivateKey
from kosmesh.wire.attach import WireServices, attach_identify_and_ping
from kosmesh.wire.connection import Stream
from kosmesh.wire.host import Host
from kosmesh.wire.identify_service import IDENTIFY_PROTOCOL
from kosmesh.wire.ping_service import PING_PROTOCOL


@pytest.fixture
async def target_services() -> AsyncIterator[WireServices]:
    host = Host(Ed25519PrivateKey.generate())
    services = await attach_identify_and_ping(host)
    await host.listen("/ip4/127.0.0.1/tcp/0")
    try:
        yield services
    finally:
        await host.close()


@pytest.fixture
def target(target_services: WireServices) -> Host:
    return target_services.ping.host


async def still_serving(target: Host) -> None:
    honest = Host(Ed25519PrivateKey.generate())
    try:
        services = await attach_identify_and_ping(honest)
        conn = await honest.dial(target.listen_addrs[0])
        assert (await services.ping.ping(target.peer_id))[0] > 0
        assert (await services.identify.request(conn)).agent_version.startswith("kosmesh/")
    finally:
        await honest.close()


async def test_garbage_into_ping_is_bounded_and_harmless(target: Host) -> None:
    attacker = Host(Ed25519PrivateKey.generate())
    try:
        conn = await attacker.dial(target.listen_addrs[0])
        stream = await conn.open_stream(PING_PROTOCOL)
        junk = os.urandom(1024 * 1024 + 7)  # not a multiple of 32: the tail is never echoed
        stream.write(junk)
        await stream.close()
        echoed = await stream.read_all(limit=len(junk))
        assert echoed == junk[: len(junk) // 32 * 32]  # ping echoes whole 32-byte payloads only
        assert await conn.ping() > 0
    finally:
        await attacker.close()
    await still_serving(target)


async def test_garbage_into_identify_is_ignored(target: Host) -> None:
    attacker = Host(Ed25519PrivateKey.generate())
    try:
        conn = await attacker.dial(target.listen_addrs[0])
        stream = await conn.open_stream(IDENTIFY_PROTOCOL)
        stream.write(os.urandom(100_000))
        await stream.close()
        answer = await stream.read_all(limit=64 * 1024)
        assert answer  # the target still sends its own identify message
        assert await conn.ping() > 0
    finally:
        await attacker.close()
    await still_serving(target)


@pytest.mark.parametrize(
    "reply",
    [
        os.urandom(3000),  # random bytes
        encode_uvarint(10_000_000) + b"\x0a" * 100,  # claims 10 MB: over the 64 KiB identify limit
        encode_uvarint(200) + b"\x0a\x05abc",  # truncated, then the stream ends
        b"",  # nothing at all
    ],
    ids=["random", "oversized", "truncated", "empty"],
)
async def test_lying_identify_answers_do_not_hurt_the_asker(
    target: Host, target_services: WireServices, reply: bytes
) -> None:
    liar = Host(Ed25519PrivateKey.generate())

    async def lie(stream: Stream) -> None:
        await stream.write_all(reply)

    liar.set_stream_handler(IDENTIFY_PROTOCOL, lie)
    addr = await liar.listen("/ip4/127.0.0.1/tcp/0")
    try:
        conn = await target.dial(addr)
        with pytest.raises((ValueError, ConnectionError, asyncio.IncompleteReadError)):
            await target_services.identify.request(conn)
        assert liar.peer_id not in target_services.identify.peer_info
        assert await conn.ping() > 0  # the connection itself is fine
    finally:
        await liar.close()
    await still_serving(target)
