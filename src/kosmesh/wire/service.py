"""The service contract: what every protocol a node hosts implements.

A node is a composition root: a host (the wire) plus a list of services. Each service says
which stream protocols it serves and which KLP message types it handles, hears about peers
connecting and leaving, asks for a timer, and starts and stops with the node. One driver
(``kosmesh.wire.driver``) runs them all, so adding a protocol is a new service module and one
entry in the node's list of services (``kosmesh.node.services``), never an edit of ``Node``.

Services are the thin adapters around sans-I/O cores. ``now`` is the event loop's monotonic
clock (``loop.time()``) everywhere in this contract; wall-clock time belongs to KLP timestamps.
The driver calls every method from the event loop and logs, with the service's name and the
event, any exception a method raises: one failing service never stops the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, ClassVar, Protocol

from kosmesh.identity import PeerId
from kosmesh.wire.connection import Connection, Stream

StreamHandler = Callable[[Stream], Awaitable[None]]


class ServiceRuntime(Protocol):
    """What the driver lends a running service."""

    def now(self) -> float:
        """The monotonic clock the driver passes to every callback."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background; it is cancelled at stop and its failure is logged as ``what``."""
        ...

    def timers_changed(self) -> None:
        """Tell the driver that :meth:`Service.next_timer` moved earlier (it re-reads every timer)."""
        ...


class Service:
    """One protocol hosted by a node. Override what the protocol uses; the defaults do nothing.

    ``name`` identifies the service in logs and status views. ``message_types`` lists the KLP
    message types (``MessageType`` values) that :meth:`handle_message` answers; the driver routes
    each accepted message to the one service that declared its type.
    """

    name: ClassVar[str] = ""
    message_types: ClassVar[frozenset[str]] = frozenset()
    runtime: ServiceRuntime

    def stream_handlers(self) -> Mapping[str, StreamHandler]:
        """Stream protocols this service serves: protocol id -> handler of an inbound stream."""
        return {}

    def handle_message(self, message: Any, remote: PeerId) -> Any:
        """Handle one KLP message that passed the pipeline, sent by the authenticated ``remote``.

        Returns a ``ProcessingResult`` now, or an awaitable of one (the KLP layer types it).
        """
        raise NotImplementedError(f"service {self.name!r} declares message types but handles none")

    def commit(
        self, message: Any, result: Any, received_at: float, then: Callable[[BaseException | None], None]
    ) -> None:
        """Make durable what handling ``message`` did, then call ``then(None)`` (``then(error)`` if it
        could not be kept). The answer to ``message`` leaves only after: it is the acknowledgement.
        The default keeps nothing."""
        then(None)

    def peer_connected(self, conn: Connection, now: float) -> None:
        """A connection to ``conn.remote_peer_id`` is secured, multiplexed and ready for streams."""

    def peer_disconnected(self, conn: Connection, now: float) -> None:
        """A connection closed (``conn.close_reason`` says why); others to the same peer may remain."""

    def next_timer(self) -> float | None:
        """When :meth:`handle_timer` is next due (monotonic seconds), or None for never."""
        return None

    def handle_timer(self, now: float) -> None:
        """Do what fell due at or before ``now``; the driver then asks :meth:`next_timer` again."""

    async def start(self, runtime: ServiceRuntime) -> None:
        """Called once, after storage is open and before the node listens."""
        self.runtime = runtime

    async def stop(self) -> None:
        """Called once at shutdown, in reverse order of start; background tasks are cancelled after."""

    def describe(self) -> Mapping[str, Any]:
        """This service's part of ``kosmesh status --json`` (JSON-ready), keyed under its name."""
        return {}
