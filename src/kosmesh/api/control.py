"""The node's local control API: HTTP + JSON on 127.0.0.1, used by the CLI.

Only loopback is ever bound, and every request must carry the bearer token stored in
the home (``api.token``, mode 0600), so other local users cannot drive the node. An empty
token is never accepted; every answer names the node (see :mod:`kosmesh.api.auth`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kosmesh.api.auth import PEER_ID_HEADER, is_usable_token, load_or_create_token
from kosmesh.klp import Priority
from kosmesh.node.config import API_FILE
from kosmesh.node.node import Node, NodeError

MAX_BODY = 1024 * 1024


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside the node's own loop: the node, not uvicorn, owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(node: Node, token: str, on_shutdown: Callable[[], None] | None = None) -> Starlette:
    if not is_usable_token(token):
        raise ValueError("the API token must be 16-512 characters without spaces (never empty)")
    expected = f"Bearer {token}".encode()

    def guarded(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapper(request: Request) -> Response:
            given = request.headers.get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, expected):
                return _error(401, "missing or wrong API token")
            try:
                return await fn(request)
            except NodeError as exc:
                return _error(400, str(exc))

        return wrapper

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise NodeError("request body too large")
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise NodeError("request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise NodeError("request body must be a JSON object")
        return data

    async def status(request: Request) -> Response:
        return JSONResponse(node.status())

    async def peers(request: Request) -> Response:
        return JSONResponse(await node.peers())

    async def connect(request: Request) -> Response:
        data = await body(request)
        addr = data.get("multiaddr")
        if not isinstance(addr, str):
            raise NodeError("multiaddr is required")
        conn = await node.connect(addr)
        pinned = next((a for a, p in node.peer_book.pins.items() if p == str(conn.remote_peer_id)), None)
        return JSONResponse(
            {
                "peer_id": str(conn.remote_peer_id),
                "connection_id": conn.connection_id,
                "trust_score": node.trust_score(conn.remote_peer_id),
                "pinned_address": pinned if "/p2p/" not in addr else None,
            }
        )

    async def trust(request: Request) -> Response:
        data = await body(request)
        address, level = data.get("address"), data.get("level", 8.0)
        if not isinstance(address, str) or not isinstance(level, (int, float)):
            raise NodeError("address (string) and level (number) are required")
        stored = await node.add_trusted_agent(address, float(level))
        return JSONResponse({"address": address, "trust_level": stored})

    async def task(request: Request) -> Response:
        data = await body(request)
        address = data.get("address")
        timeout = data.get("timeout", 30.0)
        priority = data.get("priority", "NORMAL")
        if not isinstance(address, str) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise NodeError("address (string) and a positive timeout are required")
        try:
            prio = Priority[str(priority).upper()]
        except KeyError:
            raise NodeError(f"priority must be one of {', '.join(p.name for p in Priority)}") from None
        reply = await node.send_task(address, data.get("data"), timeout=float(timeout), priority=prio)
        return JSONResponse(
            {
                "status": reply.status,
                "reason": reply.reason,
                "retry_after": reply.retry_after,
                "result": reply.result,
                "responder": reply.responder,
                "rtt_ms": round(reply.rtt_ms, 3),
                "message_id": reply.message_id,
            }
        )

    async def config(request: Request) -> Response:
        return JSONResponse(node.export_config())

    async def shutdown(request: Request) -> Response:
        if on_shutdown is not None:
            on_shutdown()
        return JSONResponse({"stopping": True})

    routes = [
        Route("/v1/status", guarded(status)),
        Route("/v1/peers", guarded(peers)),
        Route("/v1/connect", guarded(connect), methods=["POST"]),
        Route("/v1/trust", guarded(trust), methods=["POST"]),
        Route("/v1/task", guarded(task), methods=["POST"]),
        Route("/v1/config", guarded(config)),
        Route("/v1/shutdown", guarded(shutdown), methods=["POST"]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_NamesTheNode, peer_id=str(node.peer_id))])


class _NamesTheNode:
    """Adds ``X-Kosmesh-Peer-Id`` to every answer, errors and unknown paths included."""

    def __init__(self, app: ASGIApp, peer_id: str) -> None:
        self.app = app
        self.header = (PEER_ID_HEADER.lower().encode(), peer_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, named)


class ControlAPI:
    """Runs the API server for a node and advertises its port in ``api.json``."""

    def __init__(self, node: Node, on_shutdown: Callable[[], None] | None = None) -> None:
        self.node = node
        self.token = load_or_create_token(node.home)
        self._app = build_app(node, self.token, on_shutdown)
        self._server: _EmbeddedServer | None = None
        self._serving: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> int:
        host = "127.0.0.1"  # never anything else, whatever the config says
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, self.node.config.api_port))
        sock.listen(128)  # clients queue in the backlog until uvicorn accepts: no start-up race
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app, log_level="warning", access_log=False, lifespan="off")
        self._server = _EmbeddedServer(config)
        self._serving = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        info = {"host": host, "port": self.port, "pid": os.getpid(), "peer_id": str(self.node.peer_id)}
        path = self.node.home / API_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, path)
        return self.port

    async def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.node.home / API_FILE).unlink()
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving
