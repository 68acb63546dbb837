"""The outbound side of KLP: one long-lived stream per peer carries many requests at once.

Responses are matched to waiting callers by ``correlation_id`` and verified like any inbound
message (through ``check_response``: never remembered in the replay cache). A request larger
than what its stream may hold waits for the stream to drain.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from kosmesh.identity import PeerId
from kosmesh.klp import (
    Accepted,
    FrameReader,
    FramingError,
    KLPMessage,
    KLPProcessor,
    encode_frame,
    encode_message,
)
from kosmesh.wire.connection import Stream

log = logging.getLogger(__name__)

MAX_IN_FLIGHT_PER_STREAM = 256
# A stream holding more unsent bytes than this gets no more written to it until it drains.
HIGH_WATER = 512 * 1024


class TaskError(Exception):
    """A task could not be delivered or answered (timeout, no connection, bad response)."""


class TaskTimeout(TaskError):
    """No answer in time: the peer may be slow, or the connection may be silently stalled."""


@dataclass(frozen=True, slots=True)
class TaskReply:
    """The verified answer to a request."""

    status: str
    reason: str | None
    retry_after: float | None
    result: Any
    responder: str
    rtt_ms: float
    message_id: str


def _expire(fut: asyncio.Future[KLPMessage], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(TaskTimeout(f"no response within {timeout:g}s"))


async def _until_drained(stream: Stream, deadline: asyncio.Future[KLPMessage]) -> None:
    """Wait for ``stream`` to drain, or for ``deadline`` (the request's future) to fail first."""
    draining = asyncio.ensure_future(stream.drain())
    try:
        await asyncio.wait((draining, deadline), return_when=asyncio.FIRST_COMPLETED)
    finally:
        draining.cancel()
    if deadline.done():
        deadline.result()  # raises the timeout
    draining.result()


class Channel:
    """One outbound KLP stream with requests in flight, matched by correlation id.

    Responses are verified and matched from the stream's receive callback; ``task`` is a
    future that completes (or is cancelled, to shut the channel down) when the stream ends.
    """

    def __init__(self, stream: Stream, processor: KLPProcessor, remote: PeerId) -> None:
        self.stream = stream
        self._processor = processor
        self._remote = remote
        self._waiting: dict[str, asyncio.Future[KLPMessage]] = {}
        self._closed = False
        self._reader = FrameReader(max_frame=processor.max_message_bytes)
        self.task: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task.add_done_callback(self._on_done)
        stream.set_receiver(self._on_data, self._on_eof)

    @property
    def usable(self) -> bool:
        return not self._closed and not self.stream.is_reset

    async def call(self, message: KLPMessage, timeout: float) -> KLPMessage:
        if len(self._waiting) >= MAX_IN_FLIGHT_PER_STREAM:
            raise TaskError("too many requests in flight to this peer")
        if self._closed:
            raise TaskError("the KLP stream to this peer is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[KLPMessage] = loop.create_future()
        message_id = message.metadata.message_id
        self._waiting[message_id] = fut
        # A bare timer, not asyncio.timeout(): on this per-request path it costs a third as much.
        timer = loop.call_later(timeout, _expire, fut, timeout)
        try:
            frame = encode_frame(encode_message(message))
            stream = self.stream
            if stream.buffered_out and stream.buffered_out + len(frame) > HIGH_WATER:
                await _until_drained(stream, fut)  # large requests wait their turn, not past the cap
            stream.write(frame)
            return await fut
        except ConnectionError as exc:
            raise TaskError(f"connection lost: {exc}") from None
        finally:
            timer.cancel()
            self._waiting.pop(message_id, None)

    def _on_data(self, chunk: bytes) -> None:
        try:
            frames = self._reader.receive_data(chunk)
        except FramingError as exc:
            self._finish(TaskError(f"KLP stream failed: {exc}"))
            self.stream.reset()
            return
        for raw in frames:
            self._deliver(raw)

    def _on_eof(self) -> None:
        if self.stream.is_reset:
            self._finish(TaskError("KLP stream failed: the stream was reset"))
        elif self.stream.connection.closed:
            self._finish(TaskError(f"KLP stream failed: {self.stream.connection.close_reason or 'connection closed'}"))
        else:
            self._finish(TaskError("peer closed the KLP stream"))

    def _finish(self, error: Exception) -> None:
        if not self.task.done():
            self._fail_waiting(error)
            self.task.set_result(None)

    def _on_done(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():  # shut down locally
            self._fail_waiting(TaskError("peer closed the KLP stream"))
            self.stream.set_receiver(None)

    def _fail_waiting(self, error: Exception) -> None:
        self._closed = True
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(error)

    def _deliver(self, raw: bytes) -> None:
        verdict = self._processor.check_response(raw, time.time(), self._remote)
        if not isinstance(verdict, Accepted):
            log.info("discarding response from %s: %s", self._remote, verdict.reason)
            return
        message = verdict.message
        if message.metadata.correlation_id is None:
            return
        fut = self._waiting.get(message.metadata.correlation_id)
        if fut is not None and not fut.done():
            fut.set_result(message)
