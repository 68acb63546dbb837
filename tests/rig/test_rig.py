"""The rig itself, and signed tasks across it under loss, delay, partitions and kill -9 (issue 3)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kosmesh.cli.process import NodeProcess
from kosmesh.node.config import DB_FILE
from tests.rig import faults
from tests.rig.netns import Host, Rig, RigUnavailable, check_available, list_namespaces, namespace_pids
from tests.rig.nodes import FAST_TIMERS, connected_peers, start_nodes, status
from tests.waiting import wait_until

pytestmark = [pytest.mark.rig, pytest.mark.multiprocess]
ROOT = Path(__file__).resolve().parents[2]


def _require_rig() -> None:
    try:
        check_available()
        faults.check_available()
    except RigUnavailable as exc:
        pytest.skip(f"rig unavailable: {exc}")


@pytest.fixture
def rig5() -> Iterator[Rig]:
    _require_rig()
    rig = Rig(5).up()
    print(f"rig setup {rig.setup_s:.3f} s")
    try:
        yield rig
    finally:
        rig.down()
        print(f"rig teardown {rig.teardown_s:.3f} s")
        assert rig.leftovers() == []


def start_drive(host: Host, node: NodeProcess, targets: list[NodeProcess], **options: object) -> subprocess.Popen[str]:
    """``tests.rig.drive`` sending tasks from ``node`` (inside its namespace) to the echo agents of ``targets``."""
    argv = [sys.executable, "-m", "tests.rig.drive", "--home", str(node.home)]
    for target in targets:
        argv += ["--target", f"klp://{target.peer_id}/agents/echo"]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return subprocess.Popen(host.exec_argv(argv), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_drive(proc: subprocess.Popen[str], timeout: float = 300) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return summary


def drive(host: Host, node: NodeProcess, targets: list[NodeProcess], **options: object) -> dict[str, Any]:
    return finish_drive(start_drive(host, node, targets, **options))


def test_rig_builds_five_hosts_and_leaves_nothing_behind(tmp_path: Path, node_processes: list[object]) -> None:
    _require_rig()
    rig = Rig(5).up()
    try:
        assert len(rig.leftovers()) == 6  # the bridge and five hosts
        nodes = start_nodes(rig, tmp_path, node_processes)
        faults.prepare(rig)
        faults.set_loss(rig, rig.hosts[1], 5)
        delayer = faults.Delayer(rig, rig.hosts[2], 10).start()
        assert all(n.proc is not None and n.proc.poll() is None for n in nodes)
    finally:
        rig.down()  # with the nodes and the delayer still running inside
    print(f"rig setup {rig.setup_s:.3f} s, teardown {rig.teardown_s:.3f} s")
    assert rig.leftovers() == []
    # killed with the namespace; a process's exit (freeing its memory) may take a moment under load
    wait_until(lambda: all(n.proc is not None and n.proc.poll() is not None for n in nodes), 10,
               "no node outlives its namespace")  # fmt: skip
    assert delayer.proc is not None
    wait_until(lambda: delayer.proc is not None and delayer.proc.poll() is not None, 10, "the delayer is gone")
    delayer.stop()
    host_rules = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False).stdout
    assert faults.TABLE not in host_rules, "a fault table leaked into the host namespace"
    host_iptables = subprocess.run(["iptables", "-S"], capture_output=True, text=True, check=False).stdout
    assert "NFQUEUE" not in host_iptables


def test_signed_tasks_complete_under_loss_and_delay(rig5: Rig, tmp_path: Path, node_processes: list[object]) -> None:
    nodes = start_nodes(rig5, tmp_path, node_processes)
    sender, others = rig5.hosts[0], nodes[1:]
    clean = drive(sender, nodes[0], others, count=4, timeout=5, retries=0)
    assert clean["completed"] == clean["sent"] == 4, clean

    faults.prepare(rig5)
    delayers = []
    try:
        for host in rig5.hosts:
            faults.set_loss(rig5, host, 10)
            delayers.append(faults.Delayer(rig5, host, 50).start())
        faulty = drive(sender, nodes[0], others, count=8, concurrency=2, timeout=5, retries=3)
    finally:
        for delayer in delayers:
            delayer.stop()
    print(f"clean: {clean}\nfaulty: {faulty}")
    assert faulty["completed"] == faulty["sent"] == 16, faulty
    # 50 ms held on the way out of each host: no round trip can take less than 100 ms.
    assert isinstance(faulty["rtt_ms_min"], float) and faulty["rtt_ms_min"] >= 100, faulty
    assert isinstance(clean["rtt_ms_p50"], float) and clean["rtt_ms_p50"] < 50, clean


def test_partitioned_nodes_reconnect_on_their_own_after_healing(
    rig5: Rig, tmp_path: Path, node_processes: list[object]
) -> None:
    nodes = start_nodes(rig5, tmp_path, node_processes, FAST_TIMERS)
    hosts = rig5.hosts
    seed = nodes[0].peer_id
    for host, node in zip(hosts[1:], nodes[1:], strict=True):
        wait_until(lambda h=host, n=node: seed in connected_peers(h, n), 20, f"h{host.index} is connected to h1")
    left, right = hosts[:2], hosts[2:]  # h1 (the seed) and h2 | h3, h4, h5

    faults.prepare(rig5)
    cut_at = time.monotonic()
    faults.partition(rig5, left, right)
    for host, node in zip(right, nodes[2:], strict=True):
        wait_until(lambda h=host, n=node: seed not in connected_peers(h, n), 20, f"h{host.index} notices the cut")
    wait_until(lambda: connected_peers(hosts[0], nodes[0]) == {nodes[1].peer_id}, 20, "h1 keeps only h2")
    noticed_s = time.monotonic() - cut_at
    across = drive(hosts[2], nodes[2], [nodes[0]], count=1, timeout=1, retries=0)
    assert across["completed"] == 0, across  # nothing crosses the cut
    inside = drive(hosts[1], nodes[1], [nodes[0]], count=3, timeout=5, retries=0)
    assert inside["completed"] == 3, inside  # the left side still works

    healed_at = time.monotonic()
    faults.heal(rig5)
    for host, node in zip(right, nodes[2:], strict=True):
        wait_until(lambda h=host, n=node: seed in connected_peers(h, n), 30, f"h{host.index} reconnects to h1")
    reconnected_s = time.monotonic() - healed_at
    print(f"partition noticed in {noticed_s:.1f} s; all reconnected {reconnected_s:.1f} s after healing")
    for host, node in zip(right, nodes[2:], strict=True):
        back = drive(host, node, [nodes[0]], count=2, timeout=5, retries=0)
        assert back["completed"] == back["sent"] == 2, back  # no retries: the link is up again


def test_a_node_killed_under_load_loses_nothing_and_the_rest_keep_serving(
    rig5: Rig, tmp_path: Path, node_processes: list[object]
) -> None:
    nodes = start_nodes(rig5, tmp_path, node_processes, FAST_TIMERS)
    hosts = rig5.hosts
    for i in range(1, 5):  # a full mesh: h1 is everyone's seed; the others connect to each other
        for j in range(i + 1, 5):
            argv = [sys.executable, "-m", "kosmesh", "--home", str(nodes[i].home), "connect", nodes[j].addrs[0]]
            rig5.run(hosts[i], argv)
    victim_host, victim = hosts[2], nodes[2]
    survivors = [(h, n) for h, n in zip(hosts, nodes, strict=True) if n is not victim]
    load = [
        start_drive(h, n, [m for _, m in survivors if m is not n], count=60, concurrency=2, timeout=3, retries=3)
        for h, n in survivors
    ]
    to_victim = start_drive(hosts[1], nodes[1], [victim], count=400, concurrency=2, timeout=1, retries=0, ids=True)
    from_victim = start_drive(victim_host, victim, [nodes[0]], count=400, concurrency=2, timeout=1, retries=0)
    wait_until(lambda: status(victim_host, victim)["klp"]["processed"] >= 20, 30, "the victim is busy serving")

    assert victim.proc is not None
    victim_pid = victim.proc.pid
    victim.kill()  # SIGKILL, mid-load
    assert victim.proc.returncode == -9
    results = [finish_drive(p) for p in load]
    answered_before = finish_drive(to_victim)
    finish_drive(from_victim)  # its node died under it; it must still end and report

    for (host, _), result in zip(survivors, results, strict=True):
        assert result["completed"] == result["sent"] == 120, (f"h{host.index}", result)
    for host, node in survivors:
        assert node.proc is not None and node.proc.poll() is None, f"h{host.index} died with the victim"
        wait_until(lambda h=host, n=node: victim.peer_id not in connected_peers(h, n), 10,
                   f"h{host.index} drops the dead node")  # fmt: skip
    assert not any(victim_pid in namespace_pids(h.namespace) for h in hosts), "the killed node lingers"

    # Restarted from its home: same identity, and every task it answered before dying is on disk.
    peer_before = victim.peer_id
    victim.start()
    assert victim.peer_id == peer_before
    ids = answered_before["ids"][f"klp://{victim.peer_id}/agents/echo"]
    assert ids, answered_before
    with sqlite3.connect(f"file:{victim.home / DB_FILE}?mode=ro", uri=True) as db:
        stored = {row[0] for row in db.execute("SELECT task_id FROM tasks WHERE status='processed'")}
    assert set(ids) <= stored, f"{len(set(ids) - stored)} answered tasks were lost in the crash"
    wait_until(lambda: nodes[0].peer_id in connected_peers(victim_host, victim), 20, "the restarted node rejoins")
    again = drive(hosts[1], nodes[1], [victim], count=3, timeout=5, retries=3)
    assert again["completed"] == 3, again
    print(f"victim answered {len(ids)} tasks before kill -9, all on disk; survivors: {[r['sent'] for r in results]}")


def test_ctrl_c_on_the_rig_cli_tears_everything_down() -> None:
    _require_rig()
    argv = [sys.executable, "-m", "tests.rig", "up", "--hosts", "2", "--loss", "5", "--delay-ms", "10"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("running"):
                break
        suffix = lines[0].split()[1].rstrip(":")  # "rig <suffix>: 2 hosts in … s"
        assert any(suffix in name for name in list_namespaces()), lines
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "left behind: nothing" in out, out
    assert not [name for name in list_namespaces() if suffix in name]
