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
    def __init__(self, home: Path) -> None:
        self.home = home
        try:
            info = json.loads((home / API_FILE).read_text())
            self.base = f"http://127.0.0.1:{int(info['port'])}"
            self.token = (home / TOKEN_FILE).read_text().strip()
        except FileNotFoundError:
            raise ClientError(
                f"no running node for home {home}; start one with `kosmesh --home {home} node run`"
            ) from None
        except (ValueError, KeyError, OSError) as exc:
            raise ClientError(f"cannot read the node's API info in {home}: {exc}") from None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0) -> Any:
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
            reason = getattr(exc, "reason", exc)
            raise ClientError(
                f"node at {self.base} is not answering ({reason}); is `kosmesh node run` still running?"
            ) from None
