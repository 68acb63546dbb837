"""Talks to a running node's control API (address and token come from the node's home)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kosmesh.node.config import API_FILE, TOKEN_FILE


class ClientError(Exception):
    """The node is not running, not reachable, or refused the request."""


class NodeClient:
    """One node's control API. If the node restarts (a new port and token in its home), the next
    call that cannot reach the old address finds the new one and is sent there."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.base, self.token = self._locate()

    def _locate(self) -> tuple[str, str]:
        try:
            info = json.loads((self.home / API_FILE).read_text())
            return f"http://127.0.0.1:{int(info['port'])}", (self.home / TOKEN_FILE).read_text().strip()
        except FileNotFoundError:
            raise ClientError(
                f"no running node for home {self.home}; start one with `kosmesh --home {self.home} node run`"
            ) from None
        except (ValueError, KeyError, OSError) as exc:
            raise ClientError(f"cannot read the node's API info in {self.home}: {exc}") from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
        try:
            return self._send(method, path, body, timeout)
        except _Unreachable as exc:
            if not self._relocate():
                raise ClientError(
                    f"node at {self.base} is not answering ({exc}); is `kosmesh node run` still running?"
                ) from None
        return self.call(method, path, body, timeout)  # the node restarted: same home, new port

    def _relocate(self) -> bool:
        """Re-read the home's API file; True if it names another address or token than ours."""
        try:
            found = self._locate()
        except ClientError:
            return False
        moved = found != (self.base, self.token)
        self.base, self.token = found
        return moved

    def _send(self, method: str, path: str, body: dict[str, Any] | None, timeout: float) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            try:
                message = json.loads(exc.read()).get("error", str(exc))
            except ValueError:
                message = str(exc)
            raise ClientError(message) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise _Unreachable(str(getattr(exc, "reason", exc))) from None


class _Unreachable(Exception):
    """The API address did not answer (refused, reset, timed out)."""
