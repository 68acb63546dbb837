"""The one driver that runs a node's services over its host.

It registers each service's stream protocols with the host, routes every accepted KLP message
to the service that declared its type, forwards connection events with ``now``, and keeps one
timer task that calls each service's ``handle_timer`` when its ``next_timer`` falls due. Every
call into a service is guarded: an exception is logged with the service's name and the event,
and the other services carry on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from kosmesh.identity import PeerId
from kosmesh.wire.connection import Connection
from kosmesh.wire.host import Host
from kosmesh.wire.service import Service

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Service)
TIMER_RETRY_S = 1.0


class ServiceError(Exception):
    """The list of services is inconsistent (a protocol or message type claimed twice)."""


class _Runtime:
    """What one service gets from the driver; knows the service's name for the logs."""

    __slots__ = ("_driver", "_name")

    def __init__(self, driver: ServiceDriver, name: str) -> None:
        self._driver = driver
        self._name = name

    def now(self) -> float:
        return self._driver._now()

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        return self._driver.spawn(coro, f"{self._name}: {what}")

    def timers_changed(self) -> None:
        self._driver.timers_changed()


class ServiceDriver:
    """Runs ``services`` (in list order at start, reverse order at stop) over ``host``."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.services: list[Service] = []
        self.loop: asyncio.AbstractEventLoop | None = None  # set at start
        self._by_type: dict[str, Service] = {}
        self._protocols: dict[str, str] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._timer_task: asyncio.Task[None] | None = None
        self._started: list[Service] = []

    def add(self, service: Service) -> None:
        """Add a service before start; a name, protocol or message type claimed twice is an error."""
        if self.loop is not None:
            raise ServiceError("services are added before the node starts")
        if not service.name or any(s.name == service.name for s in self.services):
            raise ServiceError(f"every service needs a distinct name, got {service.name!r} twice or empty")
        handlers = service.stream_handlers()
        for protocol in handlers:
            if protocol in self._protocols:
                raise ServiceError(f"{protocol} is served by both {self._protocols[protocol]} and {service.name}")
        for message_type in service.message_types:
            if message_type in self._by_type:
                raise ServiceError(
                    f"{message_type} is handled by both {self._by_type[message_type].name} and {service.name}"
                )
        self.services.append(service)
        self._protocols.update(dict.fromkeys(handlers, service.name))
        self._by_type.update(dict.fromkeys(service.message_types, service))

    # -- lookup --------------------------------------------------------------------------
    def get(self, kind: type[S]) -> S:
        """The service of class ``kind`` (for the node's facade and for services that cooperate)."""
        for service in self.services:
            if isinstance(service, kind):
                return service
        raise LookupError(f"no {kind.__name__} among the node's services")

    @property
    def message_types(self) -> frozenset[str]:
        """Every KLP message type some service handles."""
        return frozenset(self._by_type)

    def service_for(self, message_type: str) -> Service | None:
        return self._by_type.get(message_type)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Start every service in order, then serve their protocols and events."""
        self.loop = asyncio.get_running_loop()
        for service in self.services:
            await service.start(_Runtime(self, service.name))
            self._started.append(service)
        for service in self.services:
            for protocol, handler in service.stream_handlers().items():
                self.host.set_stream_handler(protocol, handler)
        self.host.on_connected.append(self._connected)
        self.host.on_disconnected.append(self._disconnected)
        self._timer_task = asyncio.get_running_loop().create_task(self._run_timers())

    async def stop(self) -> None:
        """Stop taking events, stop services in reverse order, then cancel what they left running."""
        for callbacks, callback in ((self.host.on_connected, self._connected),
                                    (self.host.on_disconnected, self._disconnected)):  # fmt: skip
            if callback in callbacks:
                callbacks.remove(callback)
        if self._timer_task is not None:
            self._timer_task.cancel()
            await asyncio.gather(self._timer_task, return_exceptions=True)
            self._timer_task = None
        while self._started:
            service = self._started.pop()
            try:
                await service.stop()
            except Exception:
                log.exception("service %s failed to stop cleanly", service.name)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` until it ends or the node stops; its failure is logged as ``what``."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._reap(t, what))
        return task

    def _reap(self, task: asyncio.Task[Any], what: str) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", what, exc_info=task.exception())

    # -- events ------------------------------------------------------------------------
    def _now(self) -> float:
        return self.loop.time() if self.loop is not None else 0.0

    def _connected(self, conn: Connection) -> None:
        now = self._now()
        for service in self.services:
            try:
                service.peer_connected(conn, now)
            except Exception:
                log.exception("service %s failed on peer %s connecting", service.name, conn.remote_peer_id)

    def _disconnected(self, conn: Connection) -> None:
        now = self._now()
        for service in self.services:
            try:
                service.peer_disconnected(conn, now)
            except Exception:
                log.exception("service %s failed on peer %s leaving", service.name, conn.remote_peer_id)

    def dispatch_message(self, message: Any, remote: PeerId) -> Any:
        """Hand an accepted KLP message to the service that handles its type (None if none does)."""
        service = self._by_type.get(message.type)
        if service is None:
            return None
        return service.handle_message(message, remote)

    def commit_message(
        self, message: Any, result: Any, received_at: float, then: Callable[[BaseException | None], None]
    ) -> None:
        """Let the service that handled ``message`` keep what it did, then call ``then``."""
        service = self._by_type.get(message.type)
        if service is None:
            then(None)
            return
        service.commit(message, result, received_at, then)

    # -- timers ------------------------------------------------------------------------
    def timers_changed(self) -> None:
        self._wake.set()

    async def _run_timers(self) -> None:
        loop = asyncio.get_running_loop()
        # A service whose timer failed, or stayed due after handling, is retried a second later
        # rather than spinning the loop.
        held_until: dict[str, float] = {}
        while True:
            self._wake.clear()
            now = loop.time()
            earliest: float | None = None
            for service in self.services:
                due: float | None
                try:
                    due = service.next_timer()
                    if due is not None and due <= now and held_until.get(service.name, 0.0) <= now:
                        service.handle_timer(now)
                        due = service.next_timer()
                        if due is not None and due <= now:
                            log.warning("service %s is still due after handling its timer", service.name)
                            held_until[service.name] = due = now + TIMER_RETRY_S
                except Exception:
                    log.exception("service %s failed handling its timer", service.name)
                    held_until[service.name] = due = now + TIMER_RETRY_S
                if due is not None:
                    due = max(due, held_until.get(service.name, due))
                    if earliest is None or due < earliest:
                        earliest = due
            timeout = None if earliest is None else max(0.0, earliest - loop.time())
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    # -- views -------------------------------------------------------------------------
    def describe(self) -> dict[str, Mapping[str, Any]]:
        """Each service's status view, keyed by its name (services with nothing to say are left out)."""
        out: dict[str, Mapping[str, Any]] = {}
        for service in self.services:
            try:
                view = service.describe()
            except Exception:
                log.exception("service %s failed to describe itself", service.name)
                continue
            if view:
                out[service.name] = view
        return out
