"""The rig itself, and signed tasks across it under loss and delay (issue 3)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kosmesh.node.process import NodeProcess
from tests.rig import faults
from tests.rig.netns import Host, Rig, RigUnavailable, check_available
from tests.rig.nodes import start_nodes

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


def drive(host: Host, node: NodeProcess, targets: list[NodeProcess], **options: object) -> dict[str, object]:
    argv = [sys.executable, "-m", "tests.rig.drive", "--home", str(node.home)]
    for target in targets:
        argv += ["--target", f"klp://{target.peer_id}/agents/echo"]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(host.exec_argv(argv), cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    summary: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return summary


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
    assert all(n.proc is not None and n.proc.poll() is not None for n in nodes), "a node outlived its namespace"
    assert delayer.proc is not None and delayer.proc.poll() is not None
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
