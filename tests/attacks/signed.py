"""Signed KLP frames an attacker writes straight onto a ``/kos/klp/1.0.0`` stream."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.klp import (
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
from kosmesh.wire.connection import Stream


def signed_frame(
    identity: Ed25519PrivateKey,
    target: KLPAddress,
    data: Any = "hi",
    *,
    type: MessageType = MessageType.TASK_REQUEST,
    **fields: Any,
) -> bytes:
    """One framed message signed by ``identity`` (its own peer id as the source), stamped now."""
    message = build_message(
        identity,
        type=type,
        source=KLPAddress.for_node(PeerId.from_public_key(identity.public_key)),
        target=target,
        data=data,
        timestamp_ms=fields.pop("timestamp_ms", int(time.time() * 1000)),
        **fields,
    )
    return encode_frame(encode_message(message))


async def read_answers(stream: Stream, count: int, timeout: float = 10.0) -> list[ProcessingResult]:
    """The next ``count`` answers on ``stream`` (fewer if it ends or is reset first)."""
    reader = FrameReader()
    out: list[ProcessingResult] = []
    async with asyncio.timeout(timeout):
        while len(out) < count:
            try:
                chunk = await stream.read()
            except ConnectionError:  # reset: what came before it still counts
                break
            if not chunk:
                break
            out += [parse_response(decode_message(frame)) for frame in reader.receive_data(chunk)]
    return out
