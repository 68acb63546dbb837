"""A raw libp2p dialer for attacks below the stream API: our own sans-I/O cores over a socket.

It does the upgrade honestly (multistream, Noise XX, yamux) and then writes yamux frames as
the test composes them, so a test can put a protocol proposal and data in one frame, open
thousands of streams in one write, or never grant window credit.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from kosmesh.identity import Ed25519PrivateKey
from kosmesh.wire import multistream, noise, yamux
from kosmesh.wire.multiaddr import Multiaddr


class RawPeer:
    """One connection driven frame by frame. ``events`` collects what the target's yamux sent."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.transport: noise.NoiseTransport | None = None
        self.session = yamux.YamuxSession(is_client=True, max_streams=100_000)
        self.events: list[yamux.Event] = []
        self.data: defaultdict[int, bytearray] = defaultdict(bytearray)
        self.auto_consume = True
        # every frame header the target sent, (type, flags, stream id, length), streams the
        # session does not know about included
        self.frames: list[tuple[int, int, int, int]] = []
        self._scan = bytearray()

    @classmethod
    async def connect(cls, addr: Multiaddr) -> RawPeer:
        reader, writer = await asyncio.open_connection(*addr.tcp_endpoint())
        peer = cls(reader, writer)
        await peer._upgrade()
        return peer

    async def _read(self) -> bytes:
        async with asyncio.timeout(5):
            data = await self.reader.read(65536)
        if not data:
            raise ConnectionError("the target hung up")
        return data

    async def _upgrade(self) -> None:
        ms = multistream.MultistreamDialer([noise.PROTOCOL_ID])
        self.writer.write(ms.initiate())
        while ms.selected is None:
            self.writer.write(ms.receive_data(await self._read()))
        handshake = noise.NoiseHandshake(initiator=True, identity=Ed25519PrivateKey.generate())
        self.writer.write(handshake.initiate())
        pending = ms.unconsumed()
        while not handshake.complete:
            self.writer.write(handshake.receive_data(pending or await self._read()))
            pending = b""
        transport = self.transport = handshake.take_transport()
        muxer = multistream.MultistreamDialer([yamux.PROTOCOL_ID])
        self.writer.write(transport.encrypt(muxer.initiate()))
        rest = handshake.unconsumed()
        while muxer.selected is None:
            plain = transport.receive_data(rest or await self._read())
            rest = b""
            if plain:
                self.writer.write(transport.encrypt(muxer.receive_data(plain)))
        if muxer.unconsumed():
            self._feed_plain(muxer.unconsumed())

    def send_raw(self, plain: bytes) -> None:
        """Write yamux bytes the test composed (plus anything the session queued before)."""
        assert self.transport is not None
        self.writer.write(self.transport.encrypt(self.session.data_to_send() + plain))

    def flush(self) -> None:
        out = self.session.data_to_send()
        if out:
            assert self.transport is not None
            self.writer.write(self.transport.encrypt(out))

    async def pump(self) -> None:
        """Read once from the target and apply it."""
        assert self.transport is not None
        self._feed_plain(self.transport.receive_data(await self._read()))
        self.flush()

    def _feed_plain(self, plain: bytes) -> None:
        self._scan += plain
        while len(self._scan) >= yamux.HEADER_SIZE:
            _, kind, flags, sid, length = yamux.decode_header(self._scan)
            size = yamux.HEADER_SIZE + (length if kind == yamux.TYPE_DATA else 0)
            if len(self._scan) < size:
                break
            self.frames.append((kind, flags, sid, length))
            del self._scan[:size]
        events = self.session.receive_data(plain)
        self.events += events
        for event in events:
            if isinstance(event, yamux.DataReceived):
                self.data[event.stream_id] += event.data
                if self.auto_consume:
                    self.session.consume(event.stream_id, len(event.data))

    def close(self) -> None:
        self.writer.close()


def proposal(protocol: str) -> bytes:
    """What a pipelining dialer sends first on a stream: the multistream header and its proposal."""
    return multistream.HEADER + multistream.encode_message(protocol)


def data_frame(stream_id: int, payload: bytes, flags: int = 0) -> bytes:
    return yamux.encode_header(yamux.TYPE_DATA, flags, stream_id, len(payload)) + payload


def answer_of(protocol: str) -> bytes:
    """What a listener sends back when it agrees: its header and the protocol echoed."""
    return proposal(protocol)
