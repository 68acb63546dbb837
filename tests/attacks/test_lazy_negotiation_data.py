"""Attack "lazy negotiation data": data in the same yamux frame as the multistream proposal.

A pipelining dialer (js-libp2p's lazy negotiation may) sends the multistream header, its
proposal and the protocol's first bytes in one frame. The node used to credit that frame to
the yamux window twice (the whole frame when negotiating, the data again when it was read),
which broke the window accounting and reset the stream. Now the data is the protocol's,
credited once: the stream works across many windows and nothing is left over.
"""

from __future__ import annotations

import asyncio
import os

from kosmesh import Node
from kosmesh.wire import yamux
from kosmesh.wire.ping_service import PING_PROTOCOL
from tests.attacks.raw_peer import RawPeer, answer_of, proposal

CHUNK = 32 * 1024  # a thousand 32-byte pings per frame
STREAMS = 3
ROUNDS = 48  # 1.5 MiB per stream: across the 1 MiB receive window and back


async def test_data_riding_with_the_proposal_is_credited_once(target: Node, honest: Node) -> None:
    peer = await RawPeer.connect(target.host.listen_addrs[0])
    try:
        for _ in range(STREAMS):
            sid = peer.session.open_stream()
            first = os.urandom(CHUNK)
            peer.session.send_data(sid, proposal(PING_PROTOCOL) + first)
            wire = peer.session.data_to_send()
            frames = []  # the SYN, then header + proposal + data as one data frame
            pos = 0
            while pos < len(wire):
                _, kind, _, _, length = yamux.decode_header(wire, pos)
                frames.append(kind)
                pos += yamux.HEADER_SIZE + (length if kind == yamux.TYPE_DATA else 0)
            assert frames == [yamux.TYPE_WINDOW_UPDATE, yamux.TYPE_DATA]
            peer.send_raw(wire)
            sent = first
            for _ in range(ROUNDS):
                chunk = os.urandom(CHUNK)
                peer.session.send_data(sid, chunk)
                peer.flush()
                sent += chunk
                while len(peer.data[sid]) < len(answer_of(PING_PROTOCOL)) + len(sent):
                    await peer.pump()
                    assert yamux.StreamReset(sid) not in peer.events, "the node reset the stream"
            assert bytes(peer.data[sid]) == answer_of(PING_PROTOCOL) + sent  # every ping echoed, in order
            peer.session.close_stream(sid)
            peer.flush()
        [conn] = [c for c in target.host.connections if c.remote_peer_id != honest.peer_id]
        assert conn.buffered_in == 0  # every byte was credited back exactly once
        assert not conn.closed
        assert (await honest.ping.ping(target.peer_id))[0] > 0
    finally:
        peer.close()
        await asyncio.sleep(0)
