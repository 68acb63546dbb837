"""Talks to a running node's control API (address and token come from the node's home).

The token is a secret, so the client is careful where it sends it: never through a proxy (the
API is on loopback; ``http_proxy`` and friends are ignored), never when empty, and never to a
port whose node is gone (``api.json`` left behind by a node that crashed or was killed).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from kosmesh.api.auth import PEER_ID_HEADER, TokenError, read_token
from kosmesh.node.config import API_FILE, TOKEN_FILE

_MAX_API_FILE_BYTES = 4096
_RELOCATIONS = 3  # a node that restarts moves to a new port; follow it a few times, not forever


class ClientError(Exception):
    """The node is not running, not reachable, or refused the request."""


class NodeNotRunningError(ClientError):
    """The home has no running node: no ``api.json``, or one its node left behind."""


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """What ``api.json`` says: where the API listens, and which process and node serve it."""

    base: str
    token: str
    pid: int | None
    peer_id: str | None


class NodeClient:
    """One node's control API. If the node restarts (a new port and token in its home), the next
    call that cannot reach the old address finds the new one and is sent there."""

    def __init__(self, home: Path) -> None:
        self.home = home
        # No proxies from the environment, no redirects: the token goes to the node's port or nowhere.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())
        self._endpoint = self._locate()

    @property
    def base(self) -> str:
        return self._endpoint.base

    @property
    def token(self) -> str:
        return self._endpoint.token

    def _locate(self) -> _Endpoint:
        path = self.home / API_FILE
        try:
            with open(path, "rb") as fh:
                info = json.loads(fh.read(_MAX_API_FILE_BYTES))
            port, pid, peer_id = info["port"], info.get("pid"), info.get("peer_id")
            if type(port) is not int or not 0 < port < 65536:
                raise ValueError(f"bad port {port!r}")
            if pid is not None and (type(pid) is not int or pid <= 0):
                raise ValueError(f"bad pid {pid!r}")
            if peer_id is not None and not isinstance(peer_id, str):
                raise ValueError("bad peer_id")
        except FileNotFoundError:
            raise NodeNotRunningError(
                f"no running node for home {self.home}; start one with `kosmesh --home {self.home} node run`"
            ) from None
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise ClientError(f"cannot read the node's API info in {self.home}: {exc}") from None
        if pid is not None and not _process_alive(pid):
            raise self._stale(pid, "its process is gone")
        try:
            token = read_token(self.home / TOKEN_FILE)
        except TokenError as exc:
            raise ClientError(
                f"no usable API token ({exc}); nothing was sent. Restart the node to write a fresh one"
            ) from None
        return _Endpoint(f"http://127.0.0.1:{port}", token, pid, peer_id)

    def _stale(self, pid: int | None, why: str) -> NodeNotRunningError:
        left_by = f"pid {pid}" if pid is not None else "a node that is gone"
        return NodeNotRunningError(
            f"node not running (stale api.json from {left_by}: {why}); "
            f"start it with `kosmesh --home {self.home} node run`"
        )

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
        for _ in range(_RELOCATIONS):
            endpoint = self._endpoint
            if endpoint.pid is not None and not _process_alive(endpoint.pid):
                self._relocate_or_raise(endpoint, self._stale(endpoint.pid, "its process is gone"))
                continue
            try:
                return self._send(endpoint, method, path, body, timeout)
            except _Unreachable as exc:
                if exc.stale:
                    failure: ClientError = self._stale(endpoint.pid, str(exc))
                else:
                    failure = ClientError(
                        f"node at {endpoint.base} is not answering ({exc}); is `kosmesh node run` still running?"
                    )
                self._relocate_or_raise(endpoint, failure)
        raise ClientError(f"the node in {self.home} keeps moving to a new API port; try again")

    def _relocate_or_raise(self, old: _Endpoint, failure: ClientError) -> None:
        """Re-read the home's API file; raise ``failure`` unless the node moved (it restarted)."""
        try:
            found = self._locate()
        except NodeNotRunningError:
            raise failure from None
        if (found.base, found.token, found.pid) == (old.base, old.token, old.pid):
            raise failure
        self._endpoint = found

    def _send(self, endpoint: _Endpoint, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            endpoint.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {endpoint.token}", "Content-Type": "application/json"},
        )
        try:
            with self._opener.open(request, timeout=timeout) as response:
                _check_node(endpoint, response.headers)
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            _check_node(endpoint, exc.headers)
            try:
                message = json.loads(exc.read()).get("error", str(exc))
            except (ValueError, AttributeError):
                message = str(exc)
            raise ClientError(message) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            refused = isinstance(reason, ConnectionRefusedError)
            raise _Unreachable(f"port {endpoint.base.rsplit(':', 1)[1]} refuses connections" if refused
                               else str(reason), stale=refused) from None  # fmt: skip


def _check_node(endpoint: _Endpoint, headers: Message) -> None:
    """An answer from another node (or another program) on our node's port: our node is gone."""
    if endpoint.peer_id is None:
        return
    answered_by = headers.get(PEER_ID_HEADER)
    if answered_by != endpoint.peer_id:
        who = f"node {answered_by[:64]}" if answered_by else "a program that is not a kosmesh node"
        raise _Unreachable(f"port {endpoint.base.rsplit(':', 1)[1]} is answered by {who}", stale=True)


def _process_alive(pid: int) -> bool:
    """True unless ``pid`` is certainly gone (no such process, or a zombie waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: the signal check is all we have
    return state not in (b"Z", b"X")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """The control API never redirects; following one would resend the token elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


class _Unreachable(Exception):
    """The API address did not answer (refused, reset, timed out), or someone else answered."""

    def __init__(self, why: str, *, stale: bool) -> None:
        super().__init__(why)
        self.stale = stale
