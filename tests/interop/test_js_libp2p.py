"""Interop with js-libp2p 2.x (installed from npm by `make interop-deps`), both directions.

js dials kosmesh and kosmesh dials js: Noise and yamux are negotiated, ping and identify
succeed both ways, and a custom protocol stream carries data both ways.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.wire.attach import WireServices, attach_identify_and_ping
from kosmesh.wire.connection import Stream
from kosmesh.wire.host import Host

pytestmark = pytest.mark.interop

JS_DIR = Path(__file__).resolve().parents[2] / "interop" / "js"
PEER = JS_DIR / "peer.mjs"
ECHO = "/kos/interop-echo/1.0.0"


def _require_js() -> None:
    if shutil.which("node") is None or not (JS_DIR / "node_modules").is_dir():
        message = "js-libp2p peer not installed: run `make interop-deps`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


async def echo_handler(stream: Stream) -> None:
    while chunk := await stream.read():
        await stream.write_all(chunk)


@pytest.fixture
async def kosmesh_services() -> AsyncIterator[WireServices]:
    """A bare host serving identify, ping and our echo protocol, as js-libp2p sees a kosmesh node."""
    host = Host(Ed25519PrivateKey.generate())
    services = await attach_identify_and_ping(host)
    host.set_stream_handler(ECHO, echo_handler)
    await host.listen("/ip4/127.0.0.1/tcp/0")
    try:
        yield services
    finally:
        await host.close()


@pytest.fixture
def kosmesh_host(kosmesh_services: WireServices) -> Host:
    return kosmesh_services.identify.host


class JsPeer:
    """A running `peer.mjs` process with its JSON-lines stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    async def next_event(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"js peer exited before {name!r}; saw {self.events}")
                event = json.loads(line)
                self.events.append(event)
                if event.get("event") == name:
                    return event

    async def command(self, text: str, reply: str, timeout: float = 20.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.next_event(reply, timeout)

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def start_js(*args: str) -> JsPeer:
    proc = await asyncio.create_subprocess_exec(
        "node", str(PEER), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    return JsPeer(proc)


async def test_js_libp2p_dials_kosmesh(kosmesh_host: Host, kosmesh_services: WireServices) -> None:
    _require_js()
    addr = kosmesh_host.listen_addrs[0]
    identified = asyncio.Event()
    kosmesh_services.identify.on_identified.append(lambda peer, info: identified.set())
    js = await start_js("dial", str(addr))
    try:
        dialed = await js.next_event("dialed")
        assert dialed["ok"] is True
        assert dialed["peer_id"] == str(kosmesh_host.peer_id)
        assert dialed["encryption"] == "/noise"
        assert dialed["multiplexer"] == "/yamux/1.0.0"
        pings = [await js.next_event("ping") for _ in range(3)]
        assert all(p["ok"] for p in pings), pings
        ident = await js.next_event("identified")
        assert ident["agent_version"].startswith("kosmesh/")
        assert ECHO in ident["protocols"]
        assert "/ipfs/ping/1.0.0" in ident["protocols"]
        assert "/ipfs/id/1.0.0" in ident["protocols"]
        big = await js.next_event("echo_result")
        small = await js.next_event("echo_result")
        assert big["ok"] and big["bytes"] == 65536, big
        assert small["ok"] and small["bytes"] == 37, small
        done = await js.next_event("done")
        assert done["ok"] is True, js.events
        # and we identified the js peer over the connection it opened
        async with asyncio.timeout(10):
            await identified.wait()
        infos = list(kosmesh_services.identify.peer_info.values())
        assert any(i.agent_version.startswith("kosmesh-interop-js") for i in infos), infos
    finally:
        await js.stop()
    assert js.proc.returncode == 0


async def test_kosmesh_dials_js_libp2p(kosmesh_host: Host, kosmesh_services: WireServices) -> None:
    _require_js()
    js = await start_js("listen", "--port", "0")
    try:
        listening = await js.next_event("listening")
        js_addr = listening["addrs"][0]
        js_id = PeerId.from_string(listening["peer_id"])

        conn = await kosmesh_host.dial(js_addr)
        assert conn.remote_peer_id == js_id
        assert conn.direction == "outbound"

        rtts = await kosmesh_services.ping.ping(js_id, count=3)
        assert len(rtts) == 3 and all(r > 0 for r in rtts)

        info = await kosmesh_services.identify.request(conn)
        assert info.agent_version.startswith("kosmesh-interop-js")
        assert ECHO in info.protocols and "/ipfs/ping/1.0.0" in info.protocols

        payload = bytes(i % 251 for i in range(200_000))  # crosses the js yamux window
        stream = await conn.open_stream(ECHO)
        stream.write(payload)
        await stream.close()
        assert await stream.read_all(limit=len(payload) + 1) == payload

        # js → kosmesh over the same connection: ping and our echo protocol
        our_addr = str(kosmesh_host.listen_addrs[0])
        ping = await js.command(f"ping {our_addr}", "ping")
        assert ping["ok"] is True, ping
        echo = await js.command(f"echo {our_addr} {b'kosmesh echoes js'.hex()}", "echo_result")
        assert echo["ok"] is True and bytes.fromhex(echo["data_hex"]) == b"kosmesh echoes js", echo
        assert (await js.command("quit", "stopped"))["event"] == "stopped"
    finally:
        await js.stop()


async def test_js_rejects_wrong_peer_id_and_kosmesh_survives(kosmesh_host: Host) -> None:
    _require_js()
    impostor = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
    wrong = kosmesh_host.listen_addrs[0].with_peer_id(impostor)
    js = await start_js("dial", str(wrong), "--timeout", "8000")
    try:
        done = await js.next_event("done")
        assert done["ok"] is False
    finally:
        await js.stop()
    # kosmesh is unaffected: a fresh js peer still gets through
    js2 = await start_js("dial", str(kosmesh_host.listen_addrs[0]))
    try:
        assert (await js2.next_event("done"))["ok"] is True, js2.events
    finally:
        await js2.stop()
