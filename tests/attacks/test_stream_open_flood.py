"""Attack "stream open flood": a remote opens streams as fast as it can write SYNs.

A thousand streams in one write, each opened with a protocol proposal and closed at once (so
yamux's limit on open streams never bites): the node used to negotiate every one and start a
handler task for each. Now a token bucket per connection (``stream_open_rate`` and
``stream_open_burst`` in ConnectionLimits) lets a burst through and resets the rest before any
negotiation or task: the extra streams get an RST and nothing else.
"""

from __future__ import annotations

import time

from kosmesh import Node
from kosmesh.wire import yamux
from kosmesh.wire.connection import ConnectionLimits
from kosmesh.wire.ping_service import PING_PROTOCOL
from tests.attacks.raw_peer import RawPeer, data_frame, proposal

STREAMS = 1000


async def test_streams_opened_too_fast_are_reset_before_any_work(target: Node, honest: Node) -> None:
    limits = ConnectionLimits()
    peer = await RawPeer.connect(target.host.listen_addrs[0])
    try:
        flood = [2 * i + 1 for i in range(STREAMS)]
        wire = bytearray()
        for sid in flood:
            wire += yamux.encode_header(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, sid, 0)
            wire += data_frame(sid, proposal(PING_PROTOCOL), yamux.FLAG_FIN)
        started = time.monotonic()
        peer.send_raw(bytes(wire))

        def outcome() -> tuple[set[int], set[int]]:
            """Streams the node spent work on (it sent data: its multistream answer) and streams
            it refused (an RST and nothing else)."""
            served = {sid for kind, _, sid, _ in peer.frames if kind == yamux.TYPE_DATA and sid in wanted}
            reset = {sid for _, flags, sid, _ in peer.frames if flags & yamux.FLAG_RST and sid in wanted}
            return served, reset - served

        wanted = set(flood)
        while sum(map(len, outcome())) < STREAMS:
            await peer.pump()
        elapsed = time.monotonic() - started
        served, refused = outcome()
        assert refused, "every stream of the flood was negotiated"
        # at most the burst, plus what the rate refilled while the flood was processed
        assert len(served) <= limits.stream_open_burst + limits.stream_open_rate * elapsed + 1
        [conn] = [c for c in target.host.connections if c.remote_peer_id != honest.peer_id]
        assert conn.streams_refused == len(refused)
        assert not conn.closed  # refusing streams is not a reason to drop the connection
        assert (await honest.ping.ping(target.peer_id))[0] > 0
    finally:
        peer.close()
