"""libp2p ping (``/ipfs/ping/1.0.0``) as a service: echo every peer's pings, time our own.

The protocol logic is the sans-I/O :mod:`kosmesh.wire.ping` core; this is its asyncio adapter.
A served stream echoes whole 32-byte payloads until the remote closes or stays silent for
``PING_READ_TIMEOUT``; answers wait for drain, so a peer that never reads holds one window.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from kosmesh.identity import PeerId
from kosmesh.wire.connection import Connection, ConnectionClosedError, Stream
from kosmesh.wire.host import Host
from kosmesh.wire.multiaddr import Multiaddr
from kosmesh.wire.ping import PING_SIZE, PROTOCOL_ID, PingInitiator, PingResponder
from kosmesh.wire.service import Service, StreamHandler

PING_PROTOCOL = PROTOCOL_ID
PING_READ_TIMEOUT = 30.0  # a served ping stream silent this long is closed


class PingService(Service):
    """Serves ``/ipfs/ping/1.0.0`` and measures round trips to peers through ``host``."""

    name: ClassVar[str] = "ping"

    def __init__(self, host: Host) -> None:
        self.host = host
        self.streams_served = 0

    def stream_handlers(self) -> Mapping[str, StreamHandler]:
        return {PING_PROTOCOL: self.serve}

    async def serve(self, stream: Stream) -> None:
        """Echo the remote's payloads until it closes its side."""
        self.streams_served += 1
        responder = PingResponder()
        while True:
            async with asyncio.timeout(PING_READ_TIMEOUT):
                chunk = await stream.read()
            if not chunk:
                return
            echo = responder.receive_data(chunk)
            if echo:
                stream.write(echo)
                await stream.drain()

    async def ping(
        self, peer: Connection | PeerId | Multiaddr | str, count: int = 1, timeout: float = 10.0
    ) -> list[float]:
        """RTTs in seconds of ``count`` pings on one stream; ``timeout`` bounds each answer.

        ``peer`` is a connection, a connected peer's id, or a multiaddr (dialed if needed).
        """
        if isinstance(peer, Connection):
            stream = await peer.open_stream(PING_PROTOCOL)
        else:
            stream = await self.host.new_stream(peer, PING_PROTOCOL)
        initiator = PingInitiator()
        rtts: list[float] = []
        try:
            for _ in range(count):
                started = time.perf_counter()
                stream.write(initiator.request(os.urandom(PING_SIZE)))
                done: list[bytes] = []
                async with asyncio.timeout(timeout):
                    while not done:
                        chunk = await stream.read()
                        if not chunk:
                            raise ConnectionClosedError("ping stream closed")
                        done = initiator.receive_data(chunk)
                rtts.append(time.perf_counter() - started)
        except BaseException:
            stream.reset()
            raise
        await stream.close()
        return rtts

    def describe(self) -> Mapping[str, Any]:
        return {"streams_served": self.streams_served}
