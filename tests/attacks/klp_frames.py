"""Raw signed KLP traffic for the attack tests: what an attacker writes on a ``/kos/klp/1.0.0`` stream
with the project's own SDK, and the answers it reads back."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import time
from typing import Any

import cbor2

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.klp import (
    PROTOCOL_ID,
    FrameReader,
    KLPAddress,
    MessageType,
    ProcessingResult,
    build_message,
    decode_message,
    encode_frame,
    encode_message,
    parse_response,
)
from kosmesh.wire.connection import Connection, Stream


def signed_frame(
    identity: Ed25519PrivateKey,
    target: KLPAddress,
    data: Any = "hi",
    *,
    type: MessageType = MessageType.TASK_REQUEST,
    offset_s: float = 0.0,
    **kw: Any,
) -> bytes:
    """A message of ``type`` that ``identity`` signed for ``target``, stamped ``offset_s`` from now, as a
    frame; its source is ``identity``'s own peer id (which need not be the connection's)."""
    message = build_message(
        identity,
        type=type,
        source=KLPAddress.for_node(PeerId.from_public_key(identity.public_key)),
        target=target,
        data=data,
        timestamp_ms=int((time.time() + offset_s) * 1000),
        **kw,
    )
    return encode_frame(encode_message(message))


def signed_task(
    identity: Ed25519PrivateKey, target: KLPAddress, data: Any = "hi", *, offset_s: float = 0.0, **kw: Any
) -> bytes:
    """A TASK_REQUEST ``identity`` signed for ``target``, stamped ``offset_s`` from now, as a frame."""
    return signed_frame(identity, target, data, offset_s=offset_s, **kw)


def signed_payload_bomb(identity: Ed25519PrivateKey, target: KLPAddress, cbor_payload: bytes) -> bytes:
    """A correctly signed TASK_REQUEST whose gzip'd payload is ``cbor_payload``, bytes no honest encoder
    would produce (the SDK refuses to build them), sealed as the spec says, as a frame."""
    (honest_shape,) = FrameReader().receive_data(signed_task(identity, target, b"", compression="gzip"))
    envelope = cbor2.loads(honest_shape)
    envelope["payload"]["data"] = gzip.compress(cbor_payload, mtime=0)
    del envelope["signature"], envelope["metadata"]["message_id"]
    id_input = cbor2.dumps(envelope, canonical=True)
    envelope["metadata"]["message_id"] = hashlib.sha256(id_input).digest()[:16].hex()
    envelope["signature"] = identity.sign(cbor2.dumps(envelope, canonical=True))
    return encode_frame(cbor2.dumps(envelope, canonical=True))


async def open_klp(conn: Connection) -> Stream:
    return await conn.open_stream(PROTOCOL_ID)


class Answers:
    """Reads the signed answers a node writes back on one KLP stream, in order."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self._reader = FrameReader()
        self._ready: list[ProcessingResult] = []

    async def next(self, count: int, timeout: float = 10.0, *, partial: bool = False) -> list[ProcessingResult]:
        """The next ``count`` answers (fewer if the stream ends first, or, with ``partial``, if
        ``timeout`` passes first: a message that gets no answer at all)."""
        try:
            async with asyncio.timeout(timeout):
                while len(self._ready) < count:
                    try:
                        chunk = await self.stream.read()
                    except ConnectionError:  # reset: the answers before it still count
                        break
                    if not chunk:
                        break
                    frames = self._reader.receive_data(chunk)
                    self._ready += [parse_response(decode_message(frame)) for frame in frames]
        except TimeoutError:
            if not partial:
                raise
        got, self._ready = self._ready[:count], self._ready[count:]
        return got
