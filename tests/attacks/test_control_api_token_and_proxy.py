"""The control API's token: never empty, never through a proxy, never to a node that is gone.

Attacks (issue 9): the API served with an empty ``api.token`` (so ``Bearer `` with nothing after
it was accepted); the client sent the token to whatever ``http_proxy`` named, even for
127.0.0.1; an ``api.json`` left by a node killed with -9 sent the CLI to a dead port or, worse,
to whatever program holds that port now. Real ``kosmesh node run`` processes on loopback, the
CLI as a child process, and a loopback listener that records whatever reaches it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kosmesh.api.auth import is_usable_token, load_or_create_token
from kosmesh.api.control import build_app
from kosmesh.cli.client import ClientError, NodeClient, NodeNotRunningError
from kosmesh.cli.process import NodeProcess
from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.node.config import API_FILE, TOKEN_FILE
from kosmesh.node.node import Node
from tests.cli.commands import assert_clean_error, kosmesh

pytestmark = pytest.mark.multiprocess


class RecordingListener:
    """A loopback TCP listener that keeps every byte sent to it and answers 502 (as a proxy might)."""

    def __init__(self, answer: bytes = b"HTTP/1.1 502 Bad Gateway\r\n") -> None:
        self.answer = answer + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(5)
                try:
                    self.received.append(conn.recv(65536))
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def listener() -> Iterator[RecordingListener]:
    recorder = RecordingListener()
    try:
        yield recorder
    finally:
        recorder.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = NodeProcess(tmp_path / "node")
    try:
        yield proc.start()
    finally:
        proc.stop()


def http_status(api_url: str, headers: dict[str, str]) -> int:
    """GET /v1/status with exactly these headers (http.client: no proxy, no added auth)."""
    host, port = api_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/v1/status", headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return int(sock.getsockname()[1])


# -- the token never goes through a proxy ---------------------------------------------------------


def test_the_token_never_goes_through_a_proxy(node: NodeProcess, listener: RecordingListener) -> None:
    proxy = f"http://127.0.0.1:{listener.port}"
    env = {k: v for k, v in os.environ.items() if k.lower() != "no_proxy"}
    env.update(http_proxy=proxy, HTTP_PROXY=proxy, all_proxy=proxy, ALL_PROXY=proxy)
    result = kosmesh(node.home, "status", "--json", env=env, timeout=30)
    assert listener.received == [], "the control API request (and its token) went to the proxy"
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["peer_id"] == node.peer_id


# -- an empty or unusable token is never served, never sent ---------------------------------------


def test_an_empty_token_file_is_replaced_and_an_empty_bearer_refused(tmp_path: Path) -> None:
    home = tmp_path / "node"
    assert kosmesh(home, "init").returncode == 0
    (home / TOKEN_FILE).write_text("")
    node = NodeProcess(home).start()
    try:
        token = (home / TOKEN_FILE).read_text()
        assert is_usable_token(token) and len(token) >= 32
        assert stat.S_IMODE((home / TOKEN_FILE).stat().st_mode) == 0o600
        for headers in ({"Authorization": "Bearer "}, {"Authorization": "Bearer"}, {"Authorization": ""}, {}):
            assert http_status(node.api_url, headers) == 401, headers
        assert http_status(node.api_url, {"Authorization": f"Bearer {token}"}) == 200
        assert kosmesh(home, "status", "--json").returncode == 0
    finally:
        node.stop()


@pytest.mark.parametrize(
    "content", [b"", b"\n  \n", b"short", b"has spaces in the middle of it", b"\xff\xfe" * 20, b"x" * 2000]
)
def test_an_unusable_token_file_is_replaced(tmp_path: Path, content: bytes) -> None:
    (tmp_path / TOKEN_FILE).write_bytes(content)
    token = load_or_create_token(tmp_path)
    assert is_usable_token(token)
    assert (tmp_path / TOKEN_FILE).read_text() == token
    assert stat.S_IMODE((tmp_path / TOKEN_FILE).stat().st_mode) == 0o600
    assert load_or_create_token(tmp_path) == token  # a usable file is kept


def test_a_token_file_others_can_read_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / TOKEN_FILE
    path.write_text("a-token-that-others-may-have-read")
    path.chmod(0o644)
    token = load_or_create_token(tmp_path)
    assert token != "a-token-that-others-may-have-read"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_server_cannot_be_built_with_an_empty_token(tmp_path: Path) -> None:
    node = Node(tmp_path / "n")
    for token in ("", " ", "short"):
        with pytest.raises(ValueError, match="never empty"):
            build_app(node, token)


def test_the_client_refuses_to_send_an_empty_token(tmp_path: Path, listener: RecordingListener) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / API_FILE).write_text(json.dumps({"host": "127.0.0.1", "port": listener.port, "pid": os.getpid()}))
    (home / TOKEN_FILE).write_text("")
    assert_clean_error(kosmesh(home, "status", timeout=30), "token", "nothing was sent")
    with pytest.raises(ClientError, match="is empty"):
        NodeClient(home)
    (home / TOKEN_FILE).unlink()
    assert_clean_error(kosmesh(home, "status", timeout=30), "token", "does not exist")
    assert listener.received == []


def test_the_client_follows_no_redirect_with_the_token(tmp_path: Path, listener: RecordingListener) -> None:
    redirector = RecordingListener(
        f"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:{listener.port}/x\r\n".encode()
    )
    try:
        home = tmp_path / "home"
        home.mkdir()
        (home / API_FILE).write_text(json.dumps({"port": redirector.port, "pid": os.getpid()}))
        (home / TOKEN_FILE).write_text("t" * 43)
        assert_clean_error(kosmesh(home, "status", timeout=30), "307")
        assert len(redirector.received) == 1 and listener.received == []
    finally:
        redirector.close()


# -- a stale api.json --------------------------------------------------------------------------------


def test_a_killed_nodes_api_json_is_reported_stale_then_replaced(node: NodeProcess) -> None:
    assert node.proc is not None
    dead_pid = node.proc.pid
    node.kill()  # kill -9: api.json stays behind
    assert json.loads((node.home / API_FILE).read_text())["pid"] == dead_pid
    for command in (["status"], ["peers", "--json"], ["task", "send", f"klp://{node.peer_id}/agents/echo"]):
        assert_clean_error(
            kosmesh(node.home, *command, timeout=30), f"node not running (stale api.json from pid {dead_pid}"
        )
    node.start()  # the next `node run` replaces it
    assert json.loads((node.home / API_FILE).read_text())["pid"] == node.proc.pid != dead_pid
    assert json.loads(kosmesh(node.home, "status", "--json").stdout)["peer_id"] == node.peer_id


def test_an_api_json_whose_port_refuses_is_stale(tmp_path: Path) -> None:
    home = tmp_path / "gone"
    home.mkdir()
    alive = os.getpid()  # a pid that exists: as if the dead node's pid had been reused
    (home / API_FILE).write_text(json.dumps({"port": free_port(), "pid": alive, "peer_id": "12D3KooWgone"}))
    (home / TOKEN_FILE).write_text("t" * 43)
    assert_clean_error(kosmesh(home, "status", timeout=30), f"stale api.json from pid {alive}", "refuses")


def test_an_api_json_whose_port_another_node_answers_is_stale(tmp_path: Path, node: NodeProcess) -> None:
    assert node.proc is not None
    home = tmp_path / "gone"
    home.mkdir()
    gone = str(PeerId.from_public_key(Ed25519PrivateKey.generate().public_key))
    port = int(node.api_url.rsplit(":", 1)[1])  # the port is now another node's API
    (home / API_FILE).write_text(json.dumps({"port": port, "pid": node.proc.pid, "peer_id": gone}))
    (home / TOKEN_FILE).write_text("t" * 43)
    result = kosmesh(home, "status", timeout=30)
    assert_clean_error(result, f"stale api.json from pid {node.proc.pid}", f"answered by node {node.peer_id}")
    with pytest.raises(NodeNotRunningError):
        NodeClient(home).call("GET", "/v1/status", timeout=10)
