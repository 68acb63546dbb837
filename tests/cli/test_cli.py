"""The CLI against real `kosmesh node run` processes on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kosmesh.cli.process import NodeProcess
from tests.cli.commands import assert_clean_error, kosmesh
from tests.waiting import wait_until

pytestmark = pytest.mark.multiprocess


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    a = NodeProcess(tmp_path / "a")
    b = NodeProcess(tmp_path / "b")
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_init_prints_peer_id_and_did(tmp_path: Path) -> None:
    result = kosmesh(tmp_path / "n", "init")
    assert result.returncode == 0, result.stderr
    assert "Peer ID: 12D3KooW" in result.stdout
    assert "DID: did:key:z6Mk" in result.stdout
    again = kosmesh(tmp_path / "n", "init")
    assert again.stdout.split("Peer ID: ")[1] == result.stdout.split("Peer ID: ")[1]
    assert oct((tmp_path / "n" / "identity.key").stat().st_mode & 0o777) == "0o600"


def test_two_nodes_connect_peers_task_and_config(two_nodes: tuple[NodeProcess, NodeProcess]) -> None:
    a, b = two_nodes
    assert a.addrs[0].startswith("/ip4/127.0.0.1/tcp/")
    assert a.addrs[0].endswith(f"/p2p/{a.peer_id}")

    conn = kosmesh(a.home, "connect", b.addrs[0])
    assert conn.returncode == 0, conn.stderr
    assert f"Connected to peer: {b.peer_id}" in conn.stdout
    assert "Connection ID: " in conn.stdout
    assert "Trust Score: 5.0" in conn.stdout

    peers = json.loads(kosmesh(a.home, "peers", "--json").stdout)
    entry = next(p for p in peers if p["peer_id"] == b.peer_id)
    assert entry["status"] == "connected"
    assert entry["trust_score"] == 5.0
    assert {"peer_id", "status", "trust_score", "capabilities", "last_seen"} <= set(entry)

    table = kosmesh(a.home, "peers")
    assert "Federated Peer Status" in table.stdout and b.peer_id in table.stdout

    sent = kosmesh(a.home, "task", "send", f"klp://{b.peer_id}/agents/echo", "--data", '{"x": [1, 2]}', "--json")
    assert sent.returncode == 0, sent.stderr
    reply = json.loads(sent.stdout)
    assert reply["status"] == "processed"
    assert reply["result"] == {"x": [1, 2]}
    human = kosmesh(a.home, "task", "send", f"klp://{b.peer_id}/agents/echo", "--data", '"hi"')
    assert "Status: processed" in human.stdout and 'Data: "hi"' in human.stdout

    missing = kosmesh(a.home, "task", "send", f"klp://{b.peer_id}/agents/nobody", "--data", "1")
    assert missing.returncode == 2 and "no_eligible_agents" in missing.stdout

    trust = kosmesh(a.home, "trust", f"klp://{b.peer_id}/agents/echo", "--level", "9")
    assert trust.returncode == 0 and "Trust Level: 9.0" in trust.stdout
    peers = json.loads(kosmesh(a.home, "peers", "--json").stdout)
    assert next(p for p in peers if p["peer_id"] == b.peer_id)["trust_score"] == 9.0

    status = json.loads(kosmesh(a.home, "status", "--json").stdout)
    assert status["peer_id"] == a.peer_id
    assert status["did"].startswith("did:key:z6Mk")
    assert status["role"] == "peer"
    assert any(c["peer_id"] == b.peer_id for c in status["connections"])
    assert "echo" in [ag["name"] for ag in status["agents"]]

    exported = kosmesh(a.home, "config", "export")
    assert exported.returncode == 0, exported.stderr
    config = json.loads(exported.stdout)
    assert config["peer_id"] == a.peer_id and config["role"] == "peer"
    key_text = (a.home / "identity.key").read_text()
    token = (a.home / "api.token").read_text()
    assert token not in exported.stdout
    assert json.loads(key_text)["key"] not in exported.stdout


def test_restart_keeps_identity_and_peer_table(two_nodes: tuple[NodeProcess, NodeProcess]) -> None:
    a, b = two_nodes
    assert kosmesh(a.home, "connect", b.addrs[0]).returncode == 0
    first = a.peer_id
    assert a.stop() == 0  # SIGTERM: clean exit
    assert not (a.home / "api.json").exists()
    again = NodeProcess(a.home)
    try:
        again.start()
        assert again.peer_id == first
        peers = json.loads(kosmesh(a.home, "peers", "--json").stdout)
        assert b.peer_id in [p["peer_id"] for p in peers]
    finally:
        again.stop()


def test_sigint_stops_cleanly(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "n")
    node.start()
    try:
        node.signal(signal.SIGINT)
        assert node.proc is not None
        assert node.proc.wait(timeout=15) == 0
    finally:
        node.stop()


def test_errors_are_one_clear_line(tmp_path: Path, two_nodes: tuple[NodeProcess, NodeProcess]) -> None:
    a, b = two_nodes
    assert_clean_error(kosmesh(a.home, "connect", "/ip4/1.2.3/tcp/1"), "multiaddr")
    assert_clean_error(kosmesh(a.home, "connect", "not a multiaddr"), "multiaddr")
    # an unreachable peer: a port nothing listens on
    assert_clean_error(kosmesh(a.home, "connect", f"/ip4/127.0.0.1/tcp/1/p2p/{b.peer_id}"), "cannot reach")
    assert_clean_error(kosmesh(a.home, "task", "send", f"klp://{b.peer_id}/agents/echo", "--data", "{oops"), "JSON")
    assert_clean_error(kosmesh(a.home, "task", "send", "klp://", "--data", "1"))
    # valid JSON the envelope cannot carry (an integer beyond 64 bits)
    assert kosmesh(a.home, "connect", b.addrs[0]).returncode == 0
    assert_clean_error(
        kosmesh(a.home, "task", "send", f"klp://{b.peer_id}/agents/echo", "--data", str(2**90)), "cannot send"
    )
    assert_clean_error(kosmesh(tmp_path / "nobody", "status"), "no running node")
    assert_clean_error(kosmesh(tmp_path / "nobody", "peers", "--json"), "no running node")
    assert_clean_error(kosmesh(a.home, "node", "run", "--listen", "/ip4/x/tcp/1"), "multiaddr")
    assert_clean_error(kosmesh(a.home, "trust", "klp://bad address/x"))


def test_demo_runs_three_processes(tmp_path: Path) -> None:
    result = kosmesh(tmp_path / "unused", "demo", "--tasks", "3", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all tasks verified" in result.stdout
    assert "stopped 3 nodes (cleanly)" in result.stdout


def test_passphrase_protected_key(tmp_path: Path) -> None:
    home = tmp_path / "locked"
    env_home = ["--home", str(home)]
    created = subprocess.run(
        [sys.executable, "-m", "kosmesh", *env_home, "init"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, KOSMESH_PASSPHRASE="correct horse"),
    )
    assert created.returncode == 0, created.stderr
    key_file = json.loads((home / "identity.key").read_text())
    assert key_file["encrypted"] is True and "correct horse" not in (home / "identity.key").read_text()
    # without the passphrase the node refuses to start, with one clear line
    assert_clean_error(kosmesh(home, "node", "run"), "passphrase")
    wrong = subprocess.run(
        [sys.executable, "-m", "kosmesh", *env_home, "node", "run"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ, KOSMESH_PASSPHRASE="wrong"),
    )
    assert_clean_error(wrong, "passphrase")
    node = NodeProcess(home, env={"KOSMESH_PASSPHRASE": "correct horse"})
    try:
        node.start()
        assert created.stdout.split("Peer ID: ")[1].split()[0] == node.peer_id
        assert node.proc is not None
        assert b"correct horse" not in Path(f"/proc/{node.proc.pid}/cmdline").read_bytes()
    finally:
        node.stop()


def test_second_node_on_the_same_home_is_refused(two_nodes: tuple[NodeProcess, NodeProcess]) -> None:
    a, _ = two_nodes
    assert a.proc is not None
    assert_clean_error(kosmesh(a.home, "node", "run", "--listen", "/ip4/127.0.0.1/tcp/0"), "already running")
    # the running node is untouched
    assert json.loads(kosmesh(a.home, "status", "--json").stdout)["peer_id"] == a.peer_id


def test_config_export_without_a_running_node(tmp_path: Path) -> None:
    home = tmp_path / "idle"
    assert kosmesh(home, "init").returncode == 0
    exported = kosmesh(home, "config", "export")
    assert exported.returncode == 0 and exported.stderr == ""
    config = json.loads(exported.stdout)
    assert config["peer_id"].startswith("12D3KooW") and config["role"] == "peer"
    # a stale api.json (a node killed with -9) changes nothing
    (home / "api.json").write_text(json.dumps({"port": 1, "pid": 999999}))
    (home / "api.token").write_text("stale")
    again = kosmesh(home, "config", "export")
    assert again.returncode == 0 and again.stderr == ""
    assert json.loads(again.stdout) == config
    assert_clean_error(kosmesh(tmp_path / "nothing", "config", "export"), "init")


def test_status_shows_a_lost_seed_and_the_node_reconnects_on_its_own(tmp_path: Path) -> None:
    seed = NodeProcess(tmp_path / "seed")
    node: NodeProcess | None = None
    try:
        seed.start()
        node = NodeProcess(tmp_path / "n", extra_args=["--seed", seed.addrs[0]]).start()
        port = seed.addrs[0].split("/tcp/")[1].split("/")[0]
        wait_for_status(node.home, lambda s: seed.peer_id in {c["peer_id"] for c in s["connections"]})
        seed.stop()
        wait_for_status(node.home, lambda s: any(not t["connected"] and t["failures"] for t in s["redial"]))
        shown = kosmesh(node.home, "status")
        assert "Reconnecting (1)" in shown.stdout and seed.peer_id in shown.stdout, shown.stdout
        seed.listen = [f"/ip4/127.0.0.1/tcp/{port}"]
        seed.start()  # same home and port: the node finds it again without being told
        wait_for_status(node.home, lambda s: seed.peer_id in {c["peer_id"] for c in s["connections"]}, timeout=30)
        assert "Reconnecting" not in kosmesh(node.home, "status").stdout
    finally:
        seed.stop()
        if node is not None:
            node.stop()


def wait_for_status(home: Path, check: Callable[[dict[str, Any]], bool], timeout: float = 15) -> None:
    wait_until(lambda: check(json.loads(kosmesh(home, "status", "--json").stdout)), timeout, "the node's status")


def test_a_client_follows_its_node_across_a_restart(tmp_path: Path) -> None:
    from kosmesh.cli.client import ClientError, NodeClient

    node = NodeProcess(tmp_path / "n").start()
    try:
        client = NodeClient(node.home)
        first = client.call("GET", "/v1/status")["peer_id"]
        old_base = client.base
        node.kill()  # kill -9: the API's old port is gone
        with pytest.raises(ClientError, match=r"node not running \(stale api.json from pid \d+"):
            client.call("GET", "/v1/status", timeout=5)
        node.start()  # same home: a new API port and token
        assert client.call("GET", "/v1/status")["peer_id"] == first
        assert client.base != old_base
    finally:
        node.stop()
