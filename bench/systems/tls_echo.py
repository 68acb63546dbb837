"""Raw asyncio TLS 1.3 echo: the practical ceiling for a secure channel in CPython.

Server and client both use ``asyncio.Protocol`` (no StreamReader/Writer layer) on the
standard event loop, with mutually authenticated TLS 1.3 (Ed25519 certificates made at
server start), which is what libp2p's Noise XX gives: both peers prove an identity key.
There is no multiplexing, so the ``streams`` metric is *new connections* per second
(TCP + TLS handshake + 1-byte echo + close) and is marked as such.  The application
protocol of a connection is chosen by ALPN (``bench-echo`` / ``bench-sink``), TLS's own
zero-round-trip protocol negotiation.

READY line: ``READY <host> <port> <cert-dir>``; the client loads its certificate and the
server's trust anchor from ``<cert-dir>`` (deleted by the server on exit).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from _common import (
    LEN_BYTES,
    RTT_PAYLOAD,
    WARMUP_BULK,
    ClientArgs,
    CpuMeter,
    Result,
    announce_ready,
    decode_len,
    describe,
    emit,
    encode_len,
    install_stop_handlers,
    median,
    now,
    parse_cli,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"
SERVER_NAME = "localhost"
ALPN_ECHO = "bench-echo"
ALPN_SINK = "bench-sink"


# --------------------------------------------------------------------------- certificates


def _make_cert(directory: Path, name: str) -> None:
    """Write ``<name>.pem`` / ``<name>.key``: a self-signed Ed25519 certificate."""
    key = ed25519.Ed25519PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench-{name}")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, algorithm=None)
    )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _server_context(certs: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(certs / "server.pem", certs / "server.key")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(certs / "client.pem")
    ctx.set_alpn_protocols([ALPN_ECHO, ALPN_SINK])
    return ctx


def _client_context(certs: Path, alpn: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(certs / "client.pem", certs / "client.key")
    ctx.load_verify_locations(certs / "server.pem")
    ctx.check_hostname = True
    ctx.set_alpn_protocols([alpn])
    return ctx


# --------------------------------------------------------------------------- server


class _ServerProtocol(asyncio.Protocol):
    """Echo or sink, chosen by the ALPN protocol the handshake settled on."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.sink = False
        self.header = bytearray()
        self.expected = -1
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        self.sink = ssl_object is not None and ssl_object.selected_alpn_protocol() == ALPN_SINK

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if not self.sink:
            transport.write(data)
            return
        if self.expected < 0:
            need = LEN_BYTES - len(self.header)
            self.header += data[:need]
            data = data[need:]
            if len(self.header) < LEN_BYTES:
                return
            self.expected = decode_len(bytes(self.header))
        self.received += len(data)
        if self.received >= self.expected:
            transport.write(encode_len(self.received))
            self.header.clear()
            self.expected = -1
            self.received = 0

    def eof_received(self) -> bool | None:
        return None  # close our side too


async def _serve() -> None:
    certs = Path(tempfile.mkdtemp(prefix="bench-tls-"))
    try:
        _make_cert(certs, "server")
        _make_cert(certs, "client")
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def _stop() -> None:
            loop.call_soon_threadsafe(stop.set)

        install_stop_handlers(_stop)
        server = await loop.create_server(_ServerProtocol, HOST, 0, ssl=_server_context(certs), backlog=1024)
        port = server.sockets[0].getsockname()[1]
        announce_ready(HOST, port, str(certs))
        async with server:
            await stop.wait()
    finally:
        shutil.rmtree(certs, ignore_errors=True)


# --------------------------------------------------------------------------- client


class _ClientProtocol(asyncio.Protocol):
    """A byte buffer with ``read_exactly`` and write flow control (``drain``)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.need = 0
        self.waiter: asyncio.Future[None] | None = None
        self.resume: asyncio.Future[None] | None = None
        self.lost: BaseException | None = None
        self.closed: asyncio.Future[None] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        waiter = self.waiter
        if waiter is not None and len(self.buffer) >= self.need and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionResetError("connection closed")
        for fut in (self.waiter, self.resume):
            if fut is not None and not fut.done():
                fut.set_exception(self.lost)
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        if self.resume is None or self.resume.done():
            self.resume = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.resume is not None and not self.resume.done():
            self.resume.set_result(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        if self.resume is not None and not self.resume.done():
            await self.resume

    async def read_exactly(self, n: int) -> bytes:
        if len(self.buffer) < n:
            if self.lost is not None:
                raise self.lost
            self.need = n
            self.waiter = self.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _connect(args: ClientArgs, ctx: ssl.SSLContext | None) -> _ClientProtocol:
    """A connected client protocol: TLS with ``ctx``, plaintext TCP without (``tcp_echo.py``)."""
    loop = asyncio.get_running_loop()
    hostname = SERVER_NAME if ctx is not None else None
    _, proto = await loop.create_connection(_ClientProtocol, args.host, args.port, ssl=ctx, server_hostname=hostname)
    return proto


async def _measure_rtt(args: ClientArgs, ctx: ssl.SSLContext | None, result: Result) -> None:
    proto = await _connect(args, ctx)
    payload = b"r" * RTT_PAYLOAD
    try:
        end_warmup = now() + args.warmup
        while now() < end_warmup:
            proto.write(payload)
            await proto.read_exactly(RTT_PAYLOAD)
        samples: list[float] = []
        cpu = CpuMeter()
        start = now()
        deadline = start + args.duration
        t = start
        while t < deadline:
            proto.write(payload)
            echoed = await proto.read_exactly(RTT_PAYLOAD)
            t2 = now()
            samples.append(t2 - t)
            t = t2
            if len(echoed) != RTT_PAYLOAD:
                raise RuntimeError("short echo")
        elapsed = t - start
        cpu.record(result, "rtt", len(samples))
        result.rtt_per_s = len(samples) / elapsed
        p50 = median(samples)
        result.rtt_p50_us = None if p50 is None else p50 * 1e6
        ssl_object = proto.transport.get_extra_info("ssl_object") if proto.transport else None
        if ssl_object is not None:
            cipher = ssl_object.cipher()
            result.notes.append(f"negotiated {ssl_object.version()} {cipher[0] if cipher else '?'}")
    finally:
        proto.close()


async def _transfer(proto: _ClientProtocol, total: int, chunk: bytes) -> None:
    """One sink message: length, ``total`` bytes in ``chunk``-sized writes, wait for the ack."""
    proto.write(encode_len(total))
    sent = 0
    while sent < total:
        piece = chunk if total - sent >= len(chunk) else chunk[: total - sent]
        proto.write(piece)
        sent += len(piece)
        await proto.drain()
    acked = decode_len(await proto.read_exactly(LEN_BYTES))
    if acked != total:
        raise RuntimeError(f"server acknowledged {acked} of {total} bytes")


async def _measure_bulk(args: ClientArgs, ctx: ssl.SSLContext, result: Result) -> None:
    proto = await _connect(args, ctx)
    chunk = b"b" * args.bulk_chunk
    try:
        await _transfer(proto, min(args.bulk_total, WARMUP_BULK), chunk)
        transfers = 0
        cpu = CpuMeter()
        start = now()
        while True:
            await _transfer(proto, args.bulk_total, chunk)
            transfers += 1
            elapsed = now() - start
            if elapsed >= args.duration:
                break
        result.bulk_bytes = transfers * args.bulk_total
        cpu.record(result, "bulk", result.bulk_bytes / 1e6)
        result.bulk_mb_s = result.bulk_bytes / elapsed / 1e6
        result.extra["bulk_transfers"] = transfers
    finally:
        proto.close()


async def _new_connection_echo(args: ClientArgs, ctx: ssl.SSLContext) -> None:
    proto = await _connect(args, ctx)
    try:
        proto.write(b"s")
        await proto.read_exactly(1)
    finally:
        proto.close()


async def _measure_streams(args: ClientArgs, ctx: ssl.SSLContext, result: Result) -> None:
    result.streams_kind = "connections"
    end_warmup = now() + min(args.warmup, 0.5)
    while now() < end_warmup:
        await _new_connection_echo(args, ctx)
    count = 0
    cpu = CpuMeter()
    start = now()
    deadline = start + args.duration
    while now() < deadline:
        await _new_connection_echo(args, ctx)
        count += 1
    result.streams_per_s = count / (now() - start)
    cpu.record(result, "streams", count)


async def _measure_dial(args: ClientArgs, ctx: ssl.SSLContext, result: Result) -> None:
    await _new_connection_echo(args, ctx)  # warm the code paths
    times: list[float] = []
    for _ in range(args.dials):
        t0 = now()
        proto = await _connect(args, ctx)  # returns once the TLS handshake is done
        times.append((now() - t0) * 1000)
        proto.close()
        await proto.closed
    result.dial_ms_all = [round(t, 3) for t in times]
    result.dial_ms = median(times)


async def _client(args: ClientArgs) -> Result:
    result = Result(system="tls")
    result.notes.append("TLS 1.3, mutual auth, Ed25519 certs, asyncio.Protocol, no session resumption")
    if not args.extra:
        raise SystemExit("client needs the cert dir from the READY line")
    certs = Path(args.extra[0])
    echo_ctx = _client_context(certs, ALPN_ECHO)
    sink_ctx = _client_context(certs, ALPN_SINK)
    steps: dict[str, Callable[[], Awaitable[None]]] = {
        "dial": lambda: _measure_dial(args, echo_ctx, result),
        "rtt": lambda: _measure_rtt(args, echo_ctx, result),
        "bulk": lambda: _measure_bulk(args, sink_ctx, result),
        "streams": lambda: _measure_streams(args, echo_ctx, result),
    }
    for name, step in steps.items():
        if name not in args.metrics:
            continue
        try:
            await asyncio.wait_for(step(), timeout=max(30.0, args.duration * 10))
        except Exception as exc:
            result.errors[name] = describe(exc)
    return result


def main() -> None:
    mode, args = parse_cli()
    if mode == "server":
        asyncio.run(_serve())
        return
    assert args is not None
    emit(asyncio.run(_client(args)))


if __name__ == "__main__":
    main()
