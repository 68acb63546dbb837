"""libp2p-compatible wire: TCP, multistream-select, Noise XX, yamux, identify, ping.

Protocol logic lives in sans-I/O cores (bytes and ``now`` in; bytes, events and timers
out); the asyncio adapter in :mod:`kosmesh.wire.connection` does the I/O.
"""
