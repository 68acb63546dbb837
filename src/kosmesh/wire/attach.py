"""Services over a bare Host, without a node: for benchmarks, tests and interop peers.

A node runs its services with a :class:`~kosmesh.wire.driver.ServiceDriver`. A bare :class:`Host`
(a benchmark server, an attacker in a test, the host an interop test dials) wants identify and
ping too, and nothing else of a node: :func:`attach_services` runs the same driver for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from kosmesh.wire.driver import ServiceDriver
from kosmesh.wire.host import Host
from kosmesh.wire.identify_service import IdentifyService
from kosmesh.wire.ping_service import PingService
from kosmesh.wire.service import Service


async def attach_services(host: Host, services: Sequence[Service]) -> ServiceDriver:
    """Run ``services`` over ``host`` until the returned driver is stopped."""
    driver = ServiceDriver(host)
    for service in services:
        driver.add(service)
    await driver.start()
    return driver


class WireServices(NamedTuple):
    """Identify and ping attached to a bare host."""

    ping: PingService
    identify: IdentifyService
    attachment: ServiceDriver


async def attach_identify_and_ping(host: Host) -> WireServices:
    """What every libp2p host serves: ``/ipfs/ping/1.0.0`` and ``/ipfs/id/1.0.0``."""
    ping, identify = PingService(host), IdentifyService(host)
    return WireServices(ping, identify, await attach_services(host, [ping, identify]))
