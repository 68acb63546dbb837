"""Services over a bare host: handlers registered, events passed on, timers run, failures logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import ClassVar

import pytest

from kosmesh.identity import Ed25519PrivateKey
from kosmesh.wire.attach import attach_services
from kosmesh.wire.connection import Connection, Stream
from kosmesh.wire.host import Host
from kosmesh.wire.service import Service, ServiceRuntime, StreamHandler
from tests.waiting import wait_for

PROTOCOL = "/test/recorder/1.0.0"


class Recorder(Service):
    """Writes down every call the attachment makes."""

    name: ClassVar[str] = "recorder"

    def __init__(self, log: list[str], *, protocol: str = PROTOCOL) -> None:
        self.log = log
        self.protocol = protocol
        self.due: float | None = None

    def stream_handlers(self) -> Mapping[str, StreamHandler]:
        return {self.protocol: self.serve}

    async def serve(self, stream: Stream) -> None:
        await stream.write_all(b"served")

    async def start(self, runtime: ServiceRuntime) -> None:
        await super().start(runtime)
        self.log.append(f"start {self.name}")

    async def stop(self) -> None:
        self.log.append(f"stop {self.name}")

    def peer_connected(self, conn: Connection, now: float) -> None:
        self.log.append(f"{self.name} connected")

    def peer_disconnected(self, conn: Connection, now: float) -> None:
        self.log.append(f"{self.name} disconnected")

    def next_timer(self) -> float | None:
        return self.due

    def handle_timer(self, now: float) -> None:
        assert self.due is not None and now >= self.due
        self.due = None
        self.log.append(f"{self.name} timer")


class Broken(Recorder):
    name: ClassVar[str] = "broken"

    def peer_connected(self, conn: Connection, now: float) -> None:
        raise RuntimeError("service bug")


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Host, Host]]:
    a, b = Host(Ed25519PrivateKey.generate()), Host(Ed25519PrivateKey.generate())
    await b.listen("/ip4/127.0.0.1/tcp/0")
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_handlers_events_and_stop(pair: tuple[Host, Host]) -> None:
    a, b = pair
    log: list[str] = []
    attachment = await attach_services(b, [Recorder(log)])
    assert b.protocols == [PROTOCOL]
    conn = await a.dial(b.listen_addrs[0])
    stream = await conn.open_stream(PROTOCOL)
    assert await stream.read_all(limit=10) == b"served"
    await wait_for(lambda: "recorder connected" in log)
    await conn.close()
    await wait_for(lambda: "recorder disconnected" in log)
    await attachment.stop()
    assert log == ["start recorder", "recorder connected", "recorder disconnected", "stop recorder"]
    assert b.protocols == [] and b.on_connected == [] and b.on_disconnected == []


async def test_a_failing_service_is_logged_and_the_others_still_hear(
    pair: tuple[Host, Host], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = pair
    log: list[str] = []
    await attach_services(b, [Broken(log, protocol="/test/broken/1.0.0"), Recorder(log)])
    with caplog.at_level(logging.ERROR, logger="kosmesh.wire.driver"):
        await a.dial(b.listen_addrs[0])
        await wait_for(lambda: "recorder connected" in log)
    [record] = caplog.records
    assert record.getMessage() == f"service broken failed in peer_connected for peer {a.peer_id}"
    assert record.exc_info is not None


async def test_timers_run_when_due(pair: tuple[Host, Host]) -> None:
    _, b = pair
    log: list[str] = []
    recorder = Recorder(log)
    attachment = await attach_services(b, [recorder])
    recorder.due = attachment.now() + 0.01
    attachment.timers_changed()
    await wait_for(lambda: "recorder timer" in log)
    assert recorder.next_timer() is None


async def test_a_protocol_served_twice_is_refused(pair: tuple[Host, Host]) -> None:
    _, b = pair
    with pytest.raises(ValueError, match="already served"):
        await attach_services(b, [Recorder([]), Broken([], protocol=PROTOCOL)])
    assert b.protocols == []  # nothing half-registered


async def test_connections_made_before_attaching_are_announced(pair: tuple[Host, Host]) -> None:
    a, b = pair
    await a.dial(b.listen_addrs[0])
    await wait_for(lambda: b.connections)
    log: list[str] = []
    await attach_services(b, [Recorder(log)])
    assert log == ["start recorder", "recorder connected"]


async def test_stop_cancels_what_services_spawned(pair: tuple[Host, Host]) -> None:
    _, b = pair
    recorder = Recorder([])
    attachment = await attach_services(b, [recorder])
    task = recorder.runtime.spawn(asyncio.Event().wait(), "waits forever")
    await attachment.stop()
    assert task.cancelled()
