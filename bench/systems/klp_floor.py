"""The floor under signed tasks: the least work any asyncio stack must do per signed task.

Not a candidate system. It does only the work the (d) target mandates, with none of the
structure a real node needs, so that no Python stack on this loop and machine can beat it:

* an encrypted channel: one ChaCha20-Poly1305 seal/open per message with a counter nonce,
  as Noise's transport phase does (the key is fixed: handshakes are not in the per-task path);
* each request a CBOR envelope carrying the seed's fields, Ed25519-signed by the client with
  PyNaCl (the signer ARCHITECTURE.md mandates) and verified by the server;
* the server commits a task record to SQLite (WAL, ``synchronous=NORMAL``, one group commit
  per loop iteration, as kosmesh does) before it answers;
* the answer a signed CBOR envelope, verified by the client and matched by correlation id;
* 16 requests in flight, driven by callbacks (no coroutine or future per request).

Left out, and present in kosmesh: multistream and yamux (streams, flow control), the KLP
pipeline's structure, timestamp, TTL, replay and trust checks, priority queues, agents,
a request/response API with timeouts, content-addressed message ids.

Metric: ``inflight`` only (``extra.tasks_per_s_16_inflight`` and its p50/p99 and CPU per
task, the same keys as kosmesh-klp). READY line: ``READY <host> <port>``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cbor2
from _common import (
    RTT_PAYLOAD,
    ClientArgs,
    CpuMeter,
    Result,
    announce_ready,
    describe,
    emit,
    install_stop_handlers,
    now,
    parse_cli,
    record_in_flight,
)
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl.signing import SigningKey, VerifyKey

HOST = "127.0.0.1"
IN_FLIGHT = 16
CHANNEL_KEY = bytes(range(32))  # stands in for the keys a Noise handshake would agree
LENGTH = struct.Struct(">H")  # Noise transport messages carry a 2-byte length
NONCE_PAD = bytes(4)


class Channel(asyncio.Protocol):
    """Length-prefixed AEAD frames; the first frame each way is the sender's public key."""

    def __init__(self, hello: bytes, on_message: Callable[[Channel, bytes], None]) -> None:
        self.hello = hello
        self.on_message = on_message
        self.peer_key: VerifyKey | None = None
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._seal = ChaCha20Poly1305(CHANNEL_KEY)
        self._open = ChaCha20Poly1305(CHANNEL_KEY)
        self._sent = 0
        self._received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.send(self.hello)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        while len(buffer) - offset >= 2:
            (size,) = LENGTH.unpack_from(buffer, offset)
            end = offset + 2 + size
            if end > len(buffer):
                break
            nonce = NONCE_PAD + self._received.to_bytes(8, "little")
            self._received += 1
            plain = self._open.decrypt(nonce, bytes(buffer[offset + 2 : end]), None)
            offset = end
            if self.peer_key is None:
                self.peer_key = VerifyKey(plain)
            else:
                self.on_message(self, plain)
        del buffer[:offset]

    def seal(self, plain: bytes) -> bytes:
        nonce = NONCE_PAD + self._sent.to_bytes(8, "little")
        self._sent += 1
        sealed = self._seal.encrypt(nonce, plain, None)
        return LENGTH.pack(len(sealed)) + sealed

    def send(self, plain: bytes) -> None:
        assert self.transport is not None
        self.transport.write(self.seal(plain))


def sign_envelope(
    key: SigningKey, source: str, target: str, kind: str, data: object, message_id: bytes, correlation_id: bytes | None
) -> bytes:
    """signature (64 bytes) || CBOR of the envelope's fields."""
    body = cbor2.dumps(
        {
            "version": "1.0",
            "type": kind,
            "source": source,
            "target": target,
            "payload": {"content_type": "application/json", "data": data, "encryption": None, "compression": None},
            "metadata": {
                "message_id": message_id,
                "correlation_id": correlation_id,
                "priority": 2,
                "ttl": 30,
                "routing_hints": [],
                "trust_requirements": None,
            },
            "timestamp": int(time.time() * 1000),
        }
    )
    return key.sign(body).signature + body


def open_envelope(peer_key: VerifyKey | None, raw: bytes) -> dict[str, object]:
    """Verify the signature and decode; raises on a forged or malformed message."""
    if peer_key is None or len(raw) < 64:
        raise ValueError("no key or short message")
    body = raw[64:]
    peer_key.verify(body, raw[:64])
    decoded = cbor2.loads(body)
    if not isinstance(decoded, dict):
        raise ValueError("envelope is not a map")
    return decoded


def field(envelope: dict[str, object], section: str, name: str) -> object:
    part = envelope.get(section)
    return part.get(name) if isinstance(part, dict) else None


async def serve() -> None:
    home = Path(tempfile.mkdtemp(prefix="bench-klp-floor-"))
    db = sqlite3.connect(home / "node.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE tasks(seq INTEGER PRIMARY KEY, message_id BLOB, source TEXT, target TEXT, "
        "request TEXT, status TEXT, result TEXT, received_at REAL, completed_at REAL)"
    )
    key = SigningKey.generate()
    me = "klp://" + bytes(key.verify_key).hex()
    loop = asyncio.get_running_loop()
    rows: list[tuple[object, ...]] = []
    answers: dict[Channel, list[bytes]] = {}

    def commit_then_answer() -> None:
        db.execute("BEGIN")
        db.executemany("INSERT INTO tasks VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("COMMIT")
        rows.clear()
        for channel, frames in answers.items():
            if channel.transport is not None and not channel.transport.is_closing():
                channel.transport.write(b"".join(frames))
        answers.clear()

    def on_request(channel: Channel, raw: bytes) -> None:
        try:
            request = open_envelope(channel.peer_key, raw)
        except Exception:
            return  # a forged or malformed request is dropped
        message_id = field(request, "metadata", "message_id")
        if not isinstance(message_id, bytes):
            return
        data = field(request, "payload", "data")
        received = time.time()
        answer = sign_envelope(
            key,
            me,
            str(request.get("source")),
            "task_response",
            {"status": "processed", "data": data},
            os.urandom(16),
            message_id,
        )
        if not rows:
            loop.call_soon(commit_then_answer)
        rows.append(
            (message_id, request.get("source"), request.get("target"), data, "processed", data, received, received)
        )
        answers.setdefault(channel, []).append(channel.seal(answer))

    stop = asyncio.Event()
    install_stop_handlers(lambda: loop.call_soon_threadsafe(stop.set))
    server = await loop.create_server(lambda: Channel(bytes(key.verify_key), on_request), HOST, 0)
    announce_ready(HOST, server.sockets[0].getsockname()[1])
    try:
        async with server:
            await stop.wait()
    finally:
        db.close()
        shutil.rmtree(home, ignore_errors=True)


async def measure_in_flight(args: ClientArgs, result: Result) -> None:
    loop = asyncio.get_running_loop()
    key = SigningKey.generate()
    me = "klp://" + bytes(key.verify_key).hex()
    target = "klp://server/agents/echo"
    payload = "r" * RTT_PAYLOAD
    started: dict[bytes, float] = {}
    latencies: list[float] = []
    failures = 0
    deadline = 0.0
    done: asyncio.Future[None] = loop.create_future()

    def send_one(channel: Channel) -> None:
        message_id = os.urandom(16)
        started[message_id] = now()
        channel.send(sign_envelope(key, me, target, "task_request", payload, message_id, None))

    def on_answer(channel: Channel, raw: bytes) -> None:
        nonlocal failures
        answer = open_envelope(channel.peer_key, raw)
        began = started.pop(field(answer, "metadata", "correlation_id"))  # type: ignore[arg-type]
        reply = field(answer, "payload", "data")
        if isinstance(reply, dict) and reply.get("status") == "processed" and reply.get("data") == payload:
            latencies.append(now() - began)
        else:
            failures += 1
        if now() < deadline:
            send_one(channel)
        elif not started and not done.done():
            done.set_result(None)

    async def run_for(channel: Channel, seconds: float) -> None:
        """Keep IN_FLIGHT requests outstanding for ``seconds``, then let the last ones land."""
        nonlocal deadline, done
        deadline, done = now() + seconds, loop.create_future()
        for _ in range(IN_FLIGHT):
            send_one(channel)
        await done

    _, channel = await loop.create_connection(lambda: Channel(bytes(key.verify_key), on_answer), args.host, args.port)
    await run_for(channel, args.warmup)
    latencies.clear()
    cpu = CpuMeter()
    start = now()
    await run_for(channel, args.duration)
    elapsed = now() - start
    assert channel.transport is not None
    channel.transport.close()
    record_in_flight(result, latencies, elapsed, failures, cpu)


async def client(args: ClientArgs) -> Result:
    result = Result(system="klp-floor")
    result.notes.append(
        "the least work per signed task (AEAD, CBOR, Ed25519 both ways, SQLite commit): a floor, not a candidate"
    )
    if "inflight" in args.metrics or "rtt" in args.metrics:
        try:
            await asyncio.wait_for(measure_in_flight(args, result), timeout=max(30.0, args.duration * 10))
        except Exception as exc:
            result.errors["inflight"] = describe(exc)
    return result


def main() -> None:
    mode, args = parse_cli()
    if mode == "server":
        asyncio.run(serve())
        return
    assert args is not None
    emit(asyncio.run(client(args)))


if __name__ == "__main__":
    main()
