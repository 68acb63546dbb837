"""The one driver that runs services over a host: a node's, or a bare host's (bench, tests, interop).

It registers each service's stream protocols with the host, routes every accepted KLP message
to the service that declared its type, forwards connection events with ``now``, and keeps one
timer armed for the earliest ``next_timer`` of all services. Every call into a service is
guarded: an exception is logged with the service's name, the event and the peer, and the
other services carry on. A service whose timer failed, or is still due after being handled,
is held back a second rather than spinning the loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from kosmesh.identity import PeerId
from kosmesh.wire.connection import Connection
from kosmesh.wire.host import Host
from kosmesh.wire.service import Service, StreamHandler

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Service)
TIMER_RETRY_S = 1.0


class ServiceError(ValueError):
    """The services are inconsistent: a name, protocol or message type claimed twice."""


class _Runtime:
    """What one service gets from the driver; knows the service's name for the logs."""

    __slots__ = ("_driver", "_name")

    def __init__(self, driver: ServiceDriver, name: str) -> None:
        self._driver = driver
        self._name = name

    def now(self) -> float:
        return self._driver.now()

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        return self._driver.spawn(coro, f"{self._name}: {what}")

    def timers_changed(self) -> None:
        self._driver.timers_changed()


class ServiceDriver:
    """Runs its services (started in the order added, stopped in reverse) over ``host``."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.services: list[Service] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # set at start
        self._by_type: dict[str, Service] = {}
        self._protocols: dict[str, str] = {}  # protocol -> the service's name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started: list[Service] = []
        self._timer: asyncio.TimerHandle | None = None
        self._held: dict[str, float] = {}  # service name -> not before (after a failure)

    def add(self, service: Service) -> None:
        """Add a service before start; a name, protocol or message type claimed twice is an error."""
        if self._loop is not None:
            raise ServiceError("services are added before the driver starts")
        if not service.name or any(s.name == service.name for s in self.services):
            raise ServiceError(f"every service needs a distinct name: {service.name!r} is empty or taken")
        handlers = service.stream_handlers()
        for protocol in handlers:
            owner = self._protocols.get(protocol)
            if owner is not None or protocol in self.host.protocols:
                raise ServiceError(f"{service.name}: protocol {protocol} is already served by {owner or 'the host'}")
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
        """The service of class ``kind`` (for a facade, and for services that cooperate)."""
        for service in self.services:
            if isinstance(service, kind):
                return service
        raise LookupError(f"no {kind.__name__} among the services")

    @property
    def message_types(self) -> frozenset[str]:
        """Every KLP message type some service handles."""
        return frozenset(self._by_type)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Serve every service's protocols, start the services in order, then pass on events;
        connections made before start are announced as connecting now."""
        self._loop = asyncio.get_running_loop()
        for service in self.services:
            for protocol, handler in service.stream_handlers().items():
                self.host.set_stream_handler(protocol, handler)
        for service in self.services:
            await service.start(_Runtime(self, service.name))
            self._started.append(service)
        self.host.on_connected.append(self._connected)
        self.host.on_disconnected.append(self._disconnected)
        for conn in self.host.connections:
            self._connected(conn)
        self.timers_changed()

    async def stop(self) -> None:
        """Stop taking events and serving protocols, stop services in reverse order, then cancel
        what they left running."""
        for callbacks, callback in ((self.host.on_connected, self._connected),
                                    (self.host.on_disconnected, self._disconnected)):  # fmt: skip
            if callback in callbacks:
                callbacks.remove(callback)
        for protocol in self._protocols:
            self.host.remove_stream_handler(protocol)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
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

    def now(self) -> float:
        return self._loop.time() if self._loop is not None else asyncio.get_running_loop().time()

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` until it ends or the driver stops; its failure is logged as ``what``."""
        task = self.host.spawn(coro, what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- events ------------------------------------------------------------------------
    def _call(self, service: Service, event: str, *args: Any) -> Any:
        method: Callable[..., Any] = getattr(service, event)
        try:
            return method(*args)
        except Exception:
            peer = next((str(a.remote_peer_id) for a in args if isinstance(a, Connection)), None)
            log.exception("service %s failed in %s%s", service.name, event, f" for peer {peer}" if peer else "")
            return None

    def _connected(self, conn: Connection) -> None:
        now = self.now()
        for service in self._started:
            self._call(service, "peer_connected", conn, now)

    def _disconnected(self, conn: Connection) -> None:
        now = self.now()
        for service in self._started:
            self._call(service, "peer_disconnected", conn, now)

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
    def _next(self, service: Service) -> float | None:
        due: float | None = self._call(service, "next_timer")
        held = self._held.get(service.name)
        return due if due is None or held is None else max(due, held)

    def timers_changed(self) -> None:
        """Re-arm the one timer for the earliest due service."""
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = [when for service in self._started if (when := self._next(service)) is not None]
        if due:
            self._timer = self._loop.call_at(min(due), self._fire_timers)

    def _fire_timers(self) -> None:
        self._timer = None
        now = self.now()
        for service in self._started:
            due = self._next(service)
            if due is None or due > now:
                continue
            self._held.pop(service.name, None)
            try:
                service.handle_timer(now)
                after = service.next_timer()
            except Exception:
                log.exception("service %s failed handling its timer", service.name)
                self._held[service.name] = now + TIMER_RETRY_S
                continue
            if after is not None and after <= now:
                log.warning("service %s is still due after handling its timer", service.name)
                self._held[service.name] = now + TIMER_RETRY_S
        self.timers_changed()

    # -- views -------------------------------------------------------------------------
    def describe(self) -> dict[str, Mapping[str, Any]]:
        """Each service's status view, keyed by its name (services with nothing to say are left out)."""
        out: dict[str, Mapping[str, Any]] = {}
        for service in self.services:
            view = self._call(service, "describe")
            if view:
                out[service.name] = view
        return out


__all__ = ["TIMER_RETRY_S", "ServiceDriver", "ServiceError", "StreamHandler"]
