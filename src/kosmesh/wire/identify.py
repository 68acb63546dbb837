"""libp2p identify (``/ipfs/id/1.0.0``) and identify push (``/ipfs/id/push/1.0.0``).

The message is a protobuf ``Identify`` sent uvarint-length-prefixed. go-libp2p may split
a large identify into several prefixed messages that the reader merges; protobuf merging
is just concatenation of the encodings, so :class:`IdentifyReader` concatenates bodies
(last value wins for single fields, repeated fields accumulate).

Remote data is treated as hostile: sizes and counts are capped, and a listen address we
cannot decode is dropped rather than failing the whole exchange, because peers advertise
transports we do not speak.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from kosmesh.codec.frames import FrameError, LengthPrefixedReader
from kosmesh.codec.protobuf import ProtobufError, decode_fields, encode_fields
from kosmesh.codec.varint import encode_uvarint
from kosmesh.identity import KeyError_, PeerId, decode_public_key
from kosmesh.wire.multiaddr import Multiaddr, MultiaddrError

PROTOCOL_ID = "/ipfs/id/1.0.0"
PUSH_PROTOCOL_ID = "/ipfs/id/push/1.0.0"
MAX_MESSAGE_SIZE = 64 * 1024
MAX_ITEMS = 256  # per repeated field (listen addrs, protocols)
MAX_READER_MESSAGES = 8  # go-libp2p sends at most two; bounds re-decoding work

_F_PUBLIC_KEY = 1
_F_LISTEN_ADDRS = 2
_F_PROTOCOLS = 3
_F_OBSERVED_ADDR = 4
_F_PROTOCOL_VERSION = 5
_F_AGENT_VERSION = 6
_F_SIGNED_PEER_RECORD = 8


class IdentifyError(ValueError):
    """A malformed, oversized or unusable identify message."""


@dataclass(frozen=True)
class IdentifyInfo:
    """What a peer says about itself. Empty/None fields were absent (push may be partial)."""

    protocol_version: str = ""
    agent_version: str = ""
    public_key: bytes = b""  # libp2p protobuf PublicKey
    listen_addrs: tuple[Multiaddr, ...] = ()
    observed_addr: Multiaddr | None = None
    protocols: tuple[str, ...] = ()
    signed_peer_record: bytes | None = None  # opaque signed envelope, passed through

    def peer_id(self) -> PeerId:
        """The peer id the public key implies; compare it with the secured connection's peer."""
        if not self.public_key:
            raise IdentifyError("identify carries no public key")
        try:
            return PeerId.from_public_key(decode_public_key(self.public_key))
        except (KeyError_, ValueError) as exc:
            raise IdentifyError(f"unusable public key: {exc}") from None


def encode_identify(info: IdentifyInfo) -> bytes:
    """The length-prefixed message; refuses anything our own decoder would reject."""
    if len(info.listen_addrs) > MAX_ITEMS or len(info.protocols) > MAX_ITEMS:
        raise IdentifyError(f"more than {MAX_ITEMS} listen addresses or protocols")
    fields: list[tuple[int, int | bytes]] = []
    if info.public_key:
        fields.append((_F_PUBLIC_KEY, info.public_key))
    fields.extend((_F_LISTEN_ADDRS, addr.to_bytes()) for addr in info.listen_addrs)
    fields.extend((_F_PROTOCOLS, protocol.encode()) for protocol in info.protocols)
    if info.observed_addr is not None:
        fields.append((_F_OBSERVED_ADDR, info.observed_addr.to_bytes()))
    if info.protocol_version:
        fields.append((_F_PROTOCOL_VERSION, info.protocol_version.encode()))
    if info.agent_version:
        fields.append((_F_AGENT_VERSION, info.agent_version.encode()))
    if info.signed_peer_record is not None:
        fields.append((_F_SIGNED_PEER_RECORD, info.signed_peer_record))
    body = encode_fields(fields)
    if len(body) > MAX_MESSAGE_SIZE:
        raise IdentifyError(f"identify message of {len(body)} bytes exceeds {MAX_MESSAGE_SIZE}")
    return encode_uvarint(len(body)) + body


def decode_identify(data: bytes) -> IdentifyInfo:
    """Decode exactly one length-prefixed identify message."""
    reader = LengthPrefixedReader(MAX_MESSAGE_SIZE)
    try:
        reader.feed(bytes(data))
        body = reader.next_frame()
    except FrameError as exc:
        raise IdentifyError(f"identify message: {exc}") from None
    if body is None:
        raise IdentifyError("truncated identify message")
    if not reader.at_frame_boundary:
        raise IdentifyError("trailing bytes after identify message")
    return _decode_body(body)


def _decode_body(body: bytes) -> IdentifyInfo:
    try:
        fields = decode_fields(body, max_fields=2 * MAX_ITEMS + 64)
    except ProtobufError as exc:
        raise IdentifyError(f"malformed identify message: {exc}") from None
    protocol_version = agent_version = ""
    public_key = b""
    observed: Multiaddr | None = None
    signed: bytes | None = None
    addrs: list[Multiaddr] = []
    protocols: list[str] = []
    n_addrs = n_protocols = 0
    for number, value in fields:
        if not isinstance(value, bytes):
            continue  # wrong wire type for every field we know: ignore like an unknown field
        if number == _F_LISTEN_ADDRS:
            n_addrs += 1
            if n_addrs > MAX_ITEMS:
                raise IdentifyError(f"more than {MAX_ITEMS} listen addresses")
            addr = _maybe_addr(value)
            if addr is not None:
                addrs.append(addr)
        elif number == _F_PROTOCOLS:
            n_protocols += 1
            if n_protocols > MAX_ITEMS:
                raise IdentifyError(f"more than {MAX_ITEMS} protocols")
            with contextlib.suppress(UnicodeDecodeError):  # no local protocol id could match it
                protocols.append(value.decode())
        elif number == _F_PUBLIC_KEY:
            public_key = value
        elif number == _F_OBSERVED_ADDR:
            observed = _maybe_addr(value)
        elif number == _F_PROTOCOL_VERSION:
            protocol_version = value.decode(errors="replace")
        elif number == _F_AGENT_VERSION:
            agent_version = value.decode(errors="replace")
        elif number == _F_SIGNED_PEER_RECORD:
            signed = value
    return IdentifyInfo(
        protocol_version=protocol_version,
        agent_version=agent_version,
        public_key=public_key,
        listen_addrs=tuple(addrs),
        observed_addr=observed,
        protocols=tuple(protocols),
        signed_peer_record=signed,
    )


def _maybe_addr(raw: bytes) -> Multiaddr | None:
    if not raw:
        return None
    try:
        return Multiaddr.from_bytes(raw)
    except MultiaddrError:
        return None


class IdentifyReader:
    """Reads identify from a stream, chunk by chunk, never holding more than the size cap.

    ``receive_data`` returns the info merged from every complete message so far whenever
    a chunk completes one, else None. Call :meth:`eof` when the stream ends to get the
    final merged info (it rejects a stream that ended mid-message or carried nothing).
    """

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE) -> None:
        self._max_size = min(max_size, MAX_MESSAGE_SIZE)
        # Each message may use what the ones before it left of the total budget.
        self._reader = LengthPrefixedReader(self._max_size)
        self._bodies = bytearray()
        self._messages = 0
        self._info: IdentifyInfo | None = None
        self._failed: str | None = None

    def receive_data(self, data: bytes) -> IdentifyInfo | None:
        if self._failed is not None:
            raise IdentifyError(self._failed)
        try:
            return self._receive(data)
        except IdentifyError as exc:
            self._failed = str(exc)
            raise

    def _receive(self, data: bytes) -> IdentifyInfo | None:
        reader = self._reader
        completed = False
        try:
            reader.feed(data)
            while (body := reader.next_frame()) is not None:
                self._messages += 1
                if self._messages > MAX_READER_MESSAGES:
                    raise IdentifyError(f"more than {MAX_READER_MESSAGES} identify messages")
                self._bodies += body
                reader.max_frame = self._max_size - len(self._bodies)
                completed = True
        except FrameError as exc:
            raise IdentifyError(f"identify larger than {self._max_size} bytes or malformed: {exc}") from None
        if not completed:
            return None
        self._info = _decode_body(bytes(self._bodies))
        return self._info

    def eof(self) -> IdentifyInfo:
        """The merged info once the remote closed its side."""
        if self._failed is not None:
            raise IdentifyError(self._failed)
        if not self._reader.at_frame_boundary:
            raise IdentifyError("stream ended inside an identify message")
        if self._info is None:
            raise IdentifyError("stream ended without an identify message")
        return self._info
