"""The KLP endpoint: the service that carries KLP over libp2p streams (``/kos/klp/1.0.0``).

Inbound: frames from a stream are charged to the sender's rate limits, then go through
:class:`~kosmesh.klp.KLPProcessor` (the sans-I/O validation pipeline of seed III.B) with the
Noise-authenticated peer as the only acceptable sender; accepted requests wait in a bounded
priority queue (CRITICAL before LOW under load) for a worker, which hands them to the service
that handles their type, lets that service commit what it did, and answers with a signed
response on the same stream. A sender over its rate is answered ``deferred(retry_after)``.

Outbound: one long-lived stream per peer carries many requests at once; responses are
matched to waiting callers by ``correlation_id`` and verified like any inbound message.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.klp import (
    PROTOCOL_ID,
    Accepted,
    EnvelopeError,
    FrameReader,
    FramingError,
    KLPAddress,
    KLPMessage,
    KLPProcessor,
    MessageType,
    Priority,
    PriorityQueue,
    ProcessingResult,
    TrustRequirements,
    build_message,
    decode_envelope,
    encode_frame,
    encode_message,
    make_response,
    parse_response,
)
from kosmesh.klp.budgets import PeerBudget, RateLimits
from kosmesh.klp.channel import HIGH_WATER, Channel, TaskError, TaskReply, TaskTimeout
from kosmesh.wire.connection import Connection, Stream
from kosmesh.wire.ratelimit import BucketTable
from kosmesh.wire.service import Service, StreamHandler

__all__ = ["HIGH_WATER", "KLPEndpoint", "RateLimits", "TaskError", "TaskReply", "TaskTimeout"]

log = logging.getLogger(__name__)
_monotonic = time.monotonic  # the event loop's clock
_perf_counter = time.perf_counter

STREAM_IDLE_TIMEOUT = 300.0
# A stream holding more unsent bytes than HIGH_WATER gets no more answers written to it until it
# drains: they wait in the endpoint instead, where the bounds below apply.
# Answers waiting for one connection to read: past this its peer is not reading, and the stream is
# reset; and for all connections together, past which the stream that adds more is reset.
MAX_WAITING_ANSWERS = 8 * 1024 * 1024
MAX_WAITING_ANSWERS_TOTAL = 64 * 1024 * 1024

# What dispatching a request gives: a result at once (inline agents, refusals) or one to await;
# None when no service handles the message's type.
Outcome = ProcessingResult | Awaitable[ProcessingResult]
Dispatcher = Callable[[KLPMessage, PeerId], Outcome | None]
# Keeps a request's outcome (message, result, received at) and calls back once it is durable:
# with None, or with the error that kept it from being stored.
Recorder = Callable[[KLPMessage, ProcessingResult, float, Callable[[BaseException | None], None]], None]
# Told of every inbound message the endpoint refused or handled: the authenticated peer it came from,
# the message (None if it could not be authenticated), status and reason.
MessageObserver = Callable[[PeerId, KLPMessage | None, str, str | None], None]


class _WaitingAnswers:
    """Answers held for one stream until it drains."""

    __slots__ = ("frames", "size")

    def __init__(self) -> None:
        self.frames: deque[bytes] = deque()
        self.size = 0


class _Job:
    __slots__ = ("message", "received_at", "remote", "stream")

    def __init__(self, message: KLPMessage, stream: Stream, received_at: float) -> None:
        self.message = message
        self.stream = stream
        self.remote = stream.remote_peer_id
        self.received_at = received_at


def _close_unstarted(coro: types.CoroutineType[Any, Any, Any]) -> None:
    if inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
        coro.close()


class KLPEndpoint(Service):
    """Serves and sends KLP messages for one node."""

    name = "klp"
    # Answers to this node's own requests: matched to their callers on the channel they came back on.
    message_types: ClassVar[frozenset[str]] = frozenset({MessageType.TASK_RESPONSE.value})

    def __init__(
        self,
        *,
        identity: Ed25519PrivateKey,
        processor: KLPProcessor,
        dispatch: Dispatcher,
        record: Recorder | None = None,
        workers: int,
        queue_capacity: int,
        default_ttl: int,
        limits: RateLimits | None = None,
        on_message: MessageObserver | None = None,
    ) -> None:
        self.identity = identity
        self.peer_id = PeerId.from_public_key(identity.public_key)
        self.address = KLPAddress.for_node(self.peer_id)
        self.processor = processor
        self._dispatch = dispatch
        self._record = record
        limits = limits or RateLimits()
        self.limits = limits
        self._budget = PeerBudget(limits, 1.0)
        self._trusted_budget = PeerBudget(limits, limits.trusted_multiplier)
        self._deferral_rate: BucketTable[PeerId] = BucketTable(limits.deferrals_per_s, limits.deferral_burst)
        self._queue: PriorityQueue[_Job] = PriorityQueue(queue_capacity)
        self._max_workers = workers
        self._busy = 0  # workers running; each drains the queue before it exits
        self._workers: set[asyncio.Task[None]] = set()
        self._default_ttl = default_ttl
        self._on_message = on_message
        self._channels: dict[str, Channel] = {}
        self._outbox: dict[Stream, list[bytes]] = {}
        self._waiting_answers: dict[Stream, _WaitingAnswers] = {}
        self._waiting_by_connection: dict[str, int] = {}  # connection id -> bytes of answers held
        self._waiting_total = 0
        self.stats = {
            "received": 0, "rejected": 0, "deferred": 0, "processed": 0, "sent": 0, "rate_limited": 0,
            "not_reading": 0,
        }  # fmt: skip

    # -- the service contract -----------------------------------------------------------
    def stream_handlers(self) -> dict[str, StreamHandler]:
        return {PROTOCOL_ID: self.handle_stream}

    def handle_message(self, message: KLPMessage, remote: PeerId) -> ProcessingResult:
        """A response that arrives as a request (not on a channel of ours) answers nothing."""
        return ProcessingResult("rejected", reason="unexpected_response")

    def peer_disconnected(self, conn: Connection, now: float) -> None:
        channel = self._channels.pop(conn.connection_id, None)
        if channel is not None:
            channel.task.cancel()

    async def stop(self) -> None:
        await self.close()

    def describe(self) -> dict[str, Any]:
        return {**self.stats, "queued": len(self._queue), "busy_workers": self._busy}

    # -- inbound ----------------------------------------------------------------------
    async def handle_stream(self, stream: Stream) -> None:
        """Serve one inbound KLP stream until the remote closes it or stays idle too long.

        Frames are checked as they arrive, from the connection's receive callback: no task
        wake-up per chunk. Accepted requests go to the priority queue (or straight to an idle
        worker); answers are written on the same stream.
        """
        loop = asyncio.get_running_loop()
        reader = FrameReader(max_frame=self.processor.max_message_bytes)
        done: asyncio.Future[None] = loop.create_future()
        last_data = loop.time()
        idle_timer: asyncio.TimerHandle | None = None
        receive = self._receive

        def on_data(chunk: bytes) -> None:
            nonlocal last_data
            last_data = loop.time()
            try:
                frames = reader.receive_data(chunk)
            except FramingError as exc:
                log.info("bad KLP framing from %s: %s", stream.remote_peer_id, exc)
                stream.reset()
                return
            for raw in frames:
                receive(raw, stream)

        def on_eof() -> None:
            if not done.done():
                done.set_result(None)

        def check_idle() -> None:
            nonlocal idle_timer
            if done.done():
                return
            deadline = last_data + STREAM_IDLE_TIMEOUT
            if loop.time() >= deadline:
                done.set_exception(TimeoutError(f"KLP stream idle for {STREAM_IDLE_TIMEOUT:g}s"))
            else:
                idle_timer = loop.call_at(deadline, check_idle)

        idle_timer = loop.call_at(last_data + STREAM_IDLE_TIMEOUT, check_idle)
        stream.set_receiver(on_data, on_eof)
        try:
            await done
        finally:
            if idle_timer is not None:
                idle_timer.cancel()
            stream.set_receiver(None)

    def _receive(self, raw: bytes, stream: Stream) -> None:
        """Admit one frame against its sender's budgets, process it, and charge the CPU it cost."""
        self.stats["received"] += 1
        remote = stream.remote_peer_id
        clock = _monotonic()
        trusted = self.processor.trust_score(remote) >= self.limits.trusted_from
        budget = self._trusted_budget if trusted else self._budget
        started = _perf_counter()
        try:
            wait = budget.admit(remote, clock, len(raw))
            if wait:
                self._over_rate(raw, stream, wait, clock)
            else:
                self._process(raw, stream, remote)
        finally:
            budget.cpu.bucket(remote, clock).charge(clock, _perf_counter() - started)

    def _process(self, raw: bytes, stream: Stream, remote: PeerId) -> None:
        now = time.time()
        verdict = self.processor.check(raw, now, remote)
        if not isinstance(verdict, Accepted):
            self.stats["rejected"] += 1
            self._note(remote, verdict.message, "rejected", verdict.reason)
            if verdict.message is not None and verdict.message.type != MessageType.TASK_RESPONSE:
                self._respond(stream, verdict.message, ProcessingResult("rejected", reason=verdict.reason))
            return
        message = verdict.message
        if message.type == MessageType.TASK_RESPONSE:
            self._note(remote, message, "rejected", "unexpected_response")
            return
        job = _Job(message, stream, now)
        if self._busy < self._max_workers and not self._queue:
            outcome = self._start(job)  # idle capacity: no queueing, no hand-off
            if outcome is not None:
                self._start_worker(job, outcome)
            return
        # every worker is busy: the queue orders the backlog (CRITICAL first) and bounds it
        pushed = self._queue.push(job, int(verdict.priority))  # declared priority, capped by trust
        if not pushed.accepted:
            self.stats["deferred"] += 1
            self._respond(stream, message, ProcessingResult("deferred", retry_after=pushed.retry_after))
            return
        if pushed.evicted is not None:
            evicted = pushed.evicted
            self.stats["deferred"] += 1
            self._respond(
                evicted.stream, evicted.message, ProcessingResult("deferred", retry_after=pushed.retry_after)
            )

    def _over_rate(self, raw: bytes, stream: Stream, wait: float, clock: float) -> None:
        """A sender over its rate is told when to come back; one that keeps going loses the stream."""
        self.stats["rate_limited"] += 1
        remote = stream.remote_peer_id
        if self._deferral_rate.take(remote, clock):
            log.info("resetting a KLP stream from %s: still sending after being deferred", remote)
            stream.reset()
            return
        try:  # the envelope only, unverified: enough to correlate the answer, and cheap
            request = decode_envelope(raw, self.processor.max_message_bytes).to_message(decode_payload=False)
        except EnvelopeError:
            return  # nothing to answer to; the garbage still counted against the sender's rate
        if request.source.authority_peer_id() != remote or request.type == MessageType.TASK_RESPONSE:
            return
        self.stats["deferred"] += 1
        self._respond(stream, request, ProcessingResult("deferred", reason="rate_limited", retry_after=wait))

    def _start(self, job: _Job) -> Awaitable[ProcessingResult] | None:
        """Dispatch ``job``: finish it now if its result is ready, else return what to await."""
        try:
            outcome = self._dispatch(job.message, job.remote)
            if outcome is None:
                outcome = ProcessingResult("rejected", reason="unsupported_message_type")
        except Exception:
            log.exception("dispatch of %s failed", job.message.metadata.message_id)
            outcome = ProcessingResult("rejected", reason="internal_error")
        if isinstance(outcome, ProcessingResult):
            self._finish(job, outcome)
            return None
        return outcome

    def _start_worker(self, job: _Job, outcome: Awaitable[ProcessingResult]) -> None:
        self._busy += 1
        worker = asyncio.get_running_loop().create_task(self._worker(job, outcome))
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)
        if isinstance(outcome, types.CoroutineType):
            # a worker cancelled before its first step (shutdown) never awaits its coroutine
            worker.add_done_callback(lambda _w: _close_unstarted(outcome))

    async def _worker(self, job: _Job, outcome: Awaitable[ProcessingResult]) -> None:
        """Await ``job``'s outcome, then run queued jobs by priority until the queue is empty."""
        try:
            while True:
                try:
                    result = await outcome
                except Exception:
                    log.exception("dispatch of %s failed", job.message.metadata.message_id)
                    result = ProcessingResult("rejected", reason="internal_error")
                self._finish(job, result)
                while True:  # queued jobs with a ready result finish here without a new await
                    next_job = self._queue.pop()
                    if next_job is None:
                        return
                    next_outcome = self._start(next_job)
                    if next_outcome is not None:
                        job, outcome = next_job, next_outcome
                        break
        finally:
            self._busy -= 1  # at once, not in a done callback: a job queued now needs a new worker

    def _finish(self, job: _Job, result: ProcessingResult) -> None:
        """Count and log ``result``, keep it, and answer once it is kept."""
        self.stats["processed" if result.status == "processed" else result.status] += 1
        message, stream = job.message, job.stream
        self._note(job.remote, message, result.status, result.reason)
        if self._record is None:
            self._respond(stream, message, result)
            return

        def kept(error: BaseException | None) -> None:
            if error is not None:
                log.error("could not record %s: %s", message.metadata.message_id, error)
                self._answer_later(stream, message, ProcessingResult("rejected", reason="internal_error"))
            else:
                self._answer_later(stream, message, result)

        self._record(message, result, job.received_at, kept)

    def _answer_later(self, stream: Stream, request: KLPMessage, result: ProcessingResult) -> None:
        """Queue an answer; :meth:`flush_answers` writes each stream's queue as one write.

        Answers recorded by one commit go out together: one frame, one encryption and one
        system call per stream instead of one each (the node calls flush_answers after every
        commit; a scheduled call catches answers kept any other way).
        """
        if stream.is_reset or stream.connection.closed:
            return
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self.flush_answers)
        frames = self._outbox.get(stream)
        if frames is None:
            self._outbox[stream] = frames = []
        frames.append(self._answer_frame(request, result))

    def flush_answers(self) -> None:
        outbox, self._outbox = self._outbox, {}
        for stream, frames in outbox.items():
            if not stream.is_reset and not stream.connection.closed:
                self._send_answers(stream, frames)

    def _respond(self, stream: Stream, request: KLPMessage, result: ProcessingResult) -> None:
        if stream.is_reset or stream.connection.closed:
            return
        self._send_answers(stream, [self._answer_frame(request, result)])

    def _send_answers(self, stream: Stream, frames: list[bytes]) -> None:
        """Write answers while the stream holds less than HIGH_WATER unsent (one write, the usual
        case), and hold the rest until it drains: a peer that reads slowly slows its own answers;
        one that does not read at all loses the stream."""
        waiting = self._waiting_answers.get(stream)
        if waiting is None:
            room = HIGH_WATER - stream.buffered_out
            fit = 0
            while fit < len(frames) and (room >= len(frames[fit]) or (fit == 0 and room == HIGH_WATER)):
                room -= len(frames[fit])
                fit += 1
            if fit:
                with contextlib.suppress(ConnectionError):  # a reset or closed stream: nobody to answer
                    stream.write(frames[0] if fit == 1 else b"".join(frames[:fit]))
            if fit == len(frames):
                return
            frames = frames[fit:]
            waiting = self._waiting_answers[stream] = _WaitingAnswers()
            task = asyncio.get_running_loop().create_task(self._drain_answers(stream, waiting))
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        waiting.frames.extend(frames)
        self._hold(stream, waiting, sum(len(f) for f in frames))
        connection_id = stream.connection.connection_id
        held = self._waiting_by_connection[connection_id]
        if held > MAX_WAITING_ANSWERS or self._waiting_total > MAX_WAITING_ANSWERS_TOTAL:
            log.info("resetting a KLP stream from %s: %d bytes of answers held for a peer that does not read",
                     stream.remote_peer_id, held)  # fmt: skip
            self.stats["not_reading"] += 1
            self._hold(stream, waiting, -waiting.size)
            waiting.frames.clear()
            stream.reset()

    def _hold(self, stream: Stream, waiting: _WaitingAnswers, change: int) -> None:
        """Count ``change`` bytes more (or fewer) of answers held for ``stream``."""
        connection_id = stream.connection.connection_id
        waiting.size += change
        self._waiting_total += change
        held = self._waiting_by_connection.get(connection_id, 0) + change
        if held:
            self._waiting_by_connection[connection_id] = held
        else:
            self._waiting_by_connection.pop(connection_id, None)

    async def _drain_answers(self, stream: Stream, waiting: _WaitingAnswers) -> None:
        try:
            while waiting.frames:
                await stream.drain()
                while waiting.frames and (stream.buffered_out + len(waiting.frames[0]) <= HIGH_WATER
                                          or not stream.buffered_out):  # fmt: skip
                    data = waiting.frames.popleft()
                    self._hold(stream, waiting, -len(data))
                    stream.write(data)
        except ConnectionError:
            pass  # reset or closed: nobody left to answer
        finally:
            self._hold(stream, waiting, -waiting.size)
            waiting.frames.clear()
            self._waiting_answers.pop(stream, None)

    def _answer_frame(self, request: KLPMessage, result: ProcessingResult) -> bytes:
        """The signed answer; one too large to carry becomes a rejection that says so, not a silence."""
        now_ms = int(time.time() * 1000)
        try:
            response = make_response(self.identity, request, result, source=self.address, timestamp_ms=now_ms)
            return encode_frame(encode_message(response))
        except (EnvelopeError, FramingError) as exc:
            detail = str(exc)[:200]
        refusal = ProcessingResult("rejected", reason=f"response_too_large: {detail}")
        response = make_response(self.identity, request, refusal, source=self.address, timestamp_ms=now_ms)
        return encode_frame(encode_message(response))

    def _note(self, remote: PeerId, message: KLPMessage | None, status: str, reason: str | None) -> None:
        if self._on_message is not None:
            self._on_message(remote, message, status, reason)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    # -- outbound ---------------------------------------------------------------------
    async def request(
        self,
        conn: Connection,
        *,
        type: MessageType,
        target: KLPAddress,
        data: Any,
        timeout: float,
        priority: Priority = Priority.NORMAL,
        ttl: int | None = None,
        source: KLPAddress | None = None,
        trust_requirements: TrustRequirements | None = None,
    ) -> TaskReply:
        """Send one signed request over ``conn`` and wait for its verified response.

        ``timeout`` covers it all, opening the KLP stream included: on a stalled connection the
        stream's negotiation is what hangs first.
        """
        started = time.perf_counter()
        channel = self._channels.get(conn.connection_id)
        if channel is None or not channel.usable:  # the per-request path skips the timeout context
            try:
                async with asyncio.timeout(timeout):
                    channel = await self._open_channel(conn)
            except TimeoutError:
                raise TaskTimeout(f"no response within {timeout:g}s (opening the KLP stream)") from None
        message = build_message(
            self.identity,
            type=type,
            source=source or self.address,
            target=target,
            data=data,
            priority=priority,
            ttl=ttl or self._default_ttl,
            trust_requirements=trust_requirements or TrustRequirements(),
            timestamp_ms=int(time.time() * 1000),
        )
        self.stats["sent"] += 1
        sent_at = time.perf_counter()
        try:
            response = await channel.call(message, max(timeout - (sent_at - started), 0.001))
        except TaskTimeout:
            raise TaskTimeout(f"no response within {timeout:g}s") from None
        rtt = (time.perf_counter() - sent_at) * 1000
        result = parse_response(response)
        return TaskReply(
            status=result.status,
            reason=result.reason,
            retry_after=result.retry_after,
            result=result.data,
            responder=str(response.source),
            rtt_ms=rtt,
            message_id=message.metadata.message_id,
        )

    async def _open_channel(self, conn: Connection) -> Channel:
        stream = await conn.open_stream(PROTOCOL_ID)
        channel = Channel(stream, self.processor, conn.remote_peer_id)
        self._channels[conn.connection_id] = channel
        channel.task.add_done_callback(lambda _t: self._forget_channel(conn.connection_id, channel))
        return channel

    def _forget_channel(self, connection_id: str, channel: Channel) -> None:
        if self._channels.get(connection_id) is channel:
            del self._channels[connection_id]

    async def close(self) -> None:
        workers = list(self._workers)
        for worker in workers:
            worker.cancel()
        channels = list(self._channels.values())
        for channel in channels:
            channel.task.cancel()
        await asyncio.gather(*workers, *(c.task for c in channels), return_exceptions=True)


