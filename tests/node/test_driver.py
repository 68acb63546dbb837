"""The service driver: protocols and message types routed to services, timers, errors logged not swallowed.

Also the proof that a protocol is added without editing the node: the services here are defined
in this file and handed to ``Node(services=[...])``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kosmesh import Node
from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.klp import KLPAddress, KLPMessage, MessageType, ProcessingResult
from kosmesh.wire.connection import Connection, Stream
from kosmesh.wire.driver import ServiceDriver, ServiceError
from kosmesh.wire.host import Host
from kosmesh.wire.service import Service, StreamHandler
from tests.waiting import wait_for

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]
SHOUT = "/test/shout/1.0.0"


class Shout(Service):
    """A stream protocol of our own: answers with what it read, upper-cased."""

    name = "shout"

    def __init__(self) -> None:
        self.connected: list[str] = []
        self.left: list[str] = []

    def stream_handlers(self) -> dict[str, StreamHandler]:
        return {SHOUT: self.serve}

    async def serve(self, stream: Stream) -> None:
        data = await stream.read_all(1024)
        await stream.write_all(data.upper())

    def peer_connected(self, conn: Connection, now: float) -> None:
        self.connected.append(str(conn.remote_peer_id))

    def peer_disconnected(self, conn: Connection, now: float) -> None:
        self.left.append(str(conn.remote_peer_id))


class Announcements(Service):
    """A KLP message type of our own: BROADCAST_ANNOUNCE, which no built-in service handles yet."""

    name = "announcements"
    message_types: ClassVar[frozenset[str]] = frozenset({MessageType.BROADCAST_ANNOUNCE.value})

    def __init__(self) -> None:
        self.heard: list[tuple[str, Any]] = []

    def handle_message(self, message: KLPMessage, remote: PeerId) -> ProcessingResult:
        self.heard.append((str(remote), message.payload.data))
        return ProcessingResult("processed", data="noted")


class Ticker(Service):
    """A timer of its own: fires at each due time it asks for."""

    name = "ticker"

    def __init__(self, period: float, fail_first: bool = False) -> None:
        self.period = period
        self.fail_first = fail_first
        self.ticks: list[float] = []
        self._due: float | None = None

    async def start(self, runtime: Any) -> None:
        await super().start(runtime)
        self._due = runtime.now() + self.period

    def next_timer(self) -> float | None:
        return self._due

    def handle_timer(self, now: float) -> None:
        if self.fail_first and not self.ticks:
            self.ticks.append(-1.0)
            raise RuntimeError("ticker broke")
        self.ticks.append(now)
        self._due = now + self.period


async def test_a_protocol_of_our_own_is_added_without_touching_the_node(tmp_path: Path) -> None:
    shout, news = Shout(), Announcements()
    async with Node(tmp_path / "a", listen=LOOPBACK, services=[shout, news]) as a, \
               Node(tmp_path / "b", listen=LOOPBACK) as b:  # fmt: skip
        conn = await b.connect(str(a.host.listen_addrs[0]))
        await wait_for(lambda: str(b.peer_id) in shout.connected)

        stream = await conn.open_stream(SHOUT)
        await stream.write_all(b"hello")
        await stream.close()
        assert await stream.read_all(1024) == b"HELLO"

        reply = await b.klp.request(
            conn, type=MessageType.BROADCAST_ANNOUNCE, target=KLPAddress.for_node(a.peer_id),
            data={"topic": "weather"}, timeout=5,
        )  # fmt: skip
        assert (reply.status, reply.result) == ("processed", "noted")
        assert news.heard == [(str(b.peer_id), {"topic": "weather"})]

        await conn.close()
        await wait_for(lambda: str(b.peer_id) in shout.left)


async def test_a_message_type_no_service_handles_is_rejected_with_a_reason(tmp_path: Path) -> None:
    async with Node(tmp_path / "a", listen=LOOPBACK) as a, Node(tmp_path / "b", listen=LOOPBACK) as b:
        conn = await b.connect(str(a.host.listen_addrs[0]))
        reply = await b.klp.request(
            conn, type=MessageType.VECTOR_SYNC, target=KLPAddress.for_node(a.peer_id), data=None, timeout=5
        )
        assert (reply.status, reply.reason) == ("rejected", "unsupported_message_type")


def test_a_protocol_or_message_type_claimed_twice_is_refused() -> None:
    driver = ServiceDriver(Host(Ed25519PrivateKey.generate()))
    driver.add(Shout())
    with pytest.raises(ServiceError, match="empty or taken"):
        driver.add(Shout())

    class OtherShout(Shout):
        name = "other-shout"

    with pytest.raises(ServiceError, match="already served by shout"):
        driver.add(OtherShout())
    driver.add(Announcements())

    class OtherNews(Announcements):
        name = "other-news"

    with pytest.raises(ServiceError, match="handled by both"):
        driver.add(OtherNews())


async def test_timers_fire_and_a_failing_service_is_logged_and_held_back(caplog: pytest.LogCaptureFixture) -> None:
    class BrokenTicker(Ticker):
        name = "broken-ticker"

    host = Host(Ed25519PrivateKey.generate())
    steady, broken = Ticker(0.01), BrokenTicker(0.01, fail_first=True)
    driver = ServiceDriver(host)
    driver.add(steady)
    driver.add(broken)
    with caplog.at_level(logging.ERROR):
        await driver.start()
        try:
            await wait_for(lambda: len(steady.ticks) >= 5)
            assert broken.ticks == [-1.0]  # failed once, held back a second, not spinning
            assert "service ticker " not in caplog.text
        finally:
            await driver.stop()
            await host.close()
    assert any("failed handling its timer" in r.getMessage() and r.exc_info for r in caplog.records)
    assert all(b - a >= 0.009 for a, b in zip(steady.ticks, steady.ticks[1:], strict=False))


async def test_errors_in_event_callbacks_are_logged_with_the_service_and_peer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Grumpy(Service):
        name = "grumpy"

        def peer_connected(self, conn: Connection, now: float) -> None:
            raise ValueError("not today")

    shout = Shout()
    async with Node(tmp_path / "a", listen=LOOPBACK, services=[Grumpy(), shout]) as a, \
               Node(tmp_path / "b", listen=LOOPBACK) as b:  # fmt: skip
        with caplog.at_level(logging.ERROR):
            await b.connect(str(a.host.listen_addrs[0]))
            await wait_for(lambda: shout.connected)  # the next service still heard of the peer
    record = next(r for r in caplog.records if "grumpy" in r.getMessage())
    assert str(b.peer_id) in record.getMessage() and record.exc_info is not None


async def test_spawned_work_is_cancelled_at_stop_and_its_failure_logged(caplog: pytest.LogCaptureFixture) -> None:
    host = Host(Ed25519PrivateKey.generate())
    driver = ServiceDriver(host)
    await driver.start()
    forever = driver.spawn(asyncio.Event().wait(), "waiting forever")

    async def fail() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR):
        driver.spawn(fail(), "failing work")
        await wait_for(lambda: any(r.getMessage() == "failing work failed" for r in caplog.records))
    started = time.monotonic()
    await driver.stop()
    assert forever.cancelled() and time.monotonic() - started < 1
    await host.close()
