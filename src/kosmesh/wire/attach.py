"""Services over a bare Host, without a node: for benchmarks, tests and interop peers.

A node runs its services with its driver (``kosmesh.node.driver``). A bare :class:`Host` (a
benchmark server, an attacker in a test, the host an interop test dials) wants identify and
ping too, and nothing else of a node. :func:`attach_services` does the driver's job for it:
registers each service's stream handlers, passes the host's connect and disconnect events on
with the loop's clock, runs the services' timers, and logs any exception a service raises with
the service's name and the event, so one failing service never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NamedTuple

from kosmesh.wire.connection import Connection
from kosmesh.wire.host import Host
from kosmesh.wire.identify_service import IdentifyService
from kosmesh.wire.ping_service import PingService
from kosmesh.wire.service import Service, StreamHandler

log = logging.getLogger(__name__)


class ServiceAttachment:
    """Services attached to one host; also the runtime (:class:`ServiceRuntime`) they are lent."""

    def __init__(self, host: Host, services: Sequence[Service]) -> None:
        self.host = host
        self.services = list(services)
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._protocols: list[str] = []
        self._started: list[Service] = []

    # -- ServiceRuntime --------------------------------------------------------------------
    def now(self) -> float:
        return self._loop.time()

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        task = self.host.spawn(coro, what)  # the host cancels it at close; stop() cancels it too
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def timers_changed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = [when for service in self._started if (when := self._call(service, "next_timer")) is not None]
        if due:
            self._timer = self._loop.call_at(min(due), self._fire_timers)

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Register every service's protocols (a protocol served twice is an error), then start them."""
        handlers: dict[str, StreamHandler] = {}
        for service in self.services:
            for protocol, handler in service.stream_handlers().items():
                if protocol in handlers or protocol in self.host.protocols:
                    raise ValueError(f"{service.name}: protocol {protocol} is already served")
                handlers[protocol] = handler
        for protocol, handler in handlers.items():
            self.host.set_stream_handler(protocol, handler)
            self._protocols.append(protocol)
        for service in self.services:
            await service.start(self)
            self._started.append(service)
        self.host.on_connected.append(self._connected)
        self.host.on_disconnected.append(self._disconnected)
        for conn in self.host.connections:  # connected before we were attached
            self._connected(conn)
        self.timers_changed()

    async def stop(self) -> None:
        """Unregister, stop the services in reverse order, cancel what they left running."""
        for callbacks, callback in ((self.host.on_connected, self._connected),
                                    (self.host.on_disconnected, self._disconnected)):  # fmt: skip
            if callback in callbacks:
                callbacks.remove(callback)
        for protocol in self._protocols:
            self.host.remove_stream_handler(protocol)
        self._protocols.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._started:
            service = self._started.pop()
            try:
                await service.stop()
            except Exception:
                log.exception("service %s failed to stop", service.name)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- events ----------------------------------------------------------------------------
    def _connected(self, conn: Connection) -> None:
        now = self.now()
        for service in self._started:
            self._call(service, "peer_connected", conn, now)

    def _disconnected(self, conn: Connection) -> None:
        now = self.now()
        for service in self._started:
            self._call(service, "peer_disconnected", conn, now)

    def _fire_timers(self) -> None:
        self._timer = None
        now = self.now()
        for service in self._started:
            when = self._call(service, "next_timer")
            if when is not None and when <= now:
                self._call(service, "handle_timer", now)
        self.timers_changed()

    @staticmethod
    def _call(service: Service, event: str, *args: Any) -> Any:
        method: Callable[..., Any] = getattr(service, event)
        try:
            return method(*args)
        except Exception:
            peer = next((str(a.remote_peer_id) for a in args if isinstance(a, Connection)), None)
            log.exception("service %s failed in %s%s", service.name, event, f" for peer {peer}" if peer else "")
            return None


async def attach_services(host: Host, services: Sequence[Service]) -> ServiceAttachment:
    """Run ``services`` over ``host`` until :meth:`ServiceAttachment.stop` (or the host closes)."""
    attachment = ServiceAttachment(host, services)
    await attachment.start()
    return attachment


class WireServices(NamedTuple):
    """Identify and ping attached to a bare host."""

    ping: PingService
    identify: IdentifyService
    attachment: ServiceAttachment


async def attach_identify_and_ping(host: Host) -> WireServices:
    """What every libp2p host serves: ``/ipfs/ping/1.0.0`` and ``/ipfs/id/1.0.0``."""
    ping, identify = PingService(host), IdentifyService(host)
    return WireServices(ping, identify, await attach_services(host, [ping, identify]))
