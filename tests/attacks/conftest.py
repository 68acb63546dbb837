"""Fixtures for the attack tests: a real node on loopback, an attacker, an honest peer.

Each test in this folder is named after the attack it reproduces. It drives a real node
over real sockets (in this process, or as a ``kosmesh node run`` child where the figures
must come from /proc), shows what the attack used to cost, and asserts the bound that
now holds.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kosmesh import Node
from kosmesh.identity import Ed25519PrivateKey
from kosmesh.node.config import NodeConfig
from kosmesh.wire.attach import attach_identify_and_ping
from kosmesh.wire.host import Host

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


def rss_mb(pid: int | None = None) -> float:
    """Resident memory of ``pid`` (default: this process) in MiB, from /proc."""
    with open(f"/proc/{pid or os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def open_fds(pid: int | None = None) -> int:
    """Open file descriptors of ``pid`` (default: this process), from /proc."""
    return len(os.listdir(f"/proc/{pid or os.getpid()}/fd"))


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of ``pid`` (default: this process), from /proc."""
    with open(f"/proc/{pid or os.getpid()}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def target_config() -> NodeConfig:
    """The target's configuration; a test may change it before asking for ``target``."""
    return NodeConfig()


@pytest.fixture
async def target(tmp_path: Path, target_config: NodeConfig) -> AsyncIterator[Node]:
    async with Node(tmp_path / "target", listen=LOOPBACK, config=target_config) as node:
        yield node


@pytest.fixture
async def honest(tmp_path: Path, target: Node) -> AsyncIterator[Node]:
    """An honest node already connected to the target."""
    async with Node(tmp_path / "honest", listen=LOOPBACK) as node:
        await node.connect(str(target.host.listen_addrs[0]))
        yield node


@pytest.fixture
async def attacker() -> AsyncIterator[Host]:
    """A bare wire host with a fresh identity: it speaks the protocols, and breaks their rules.

    It answers identify and ping like any libp2p host, so the target treats it as a peer."""
    host = Host(Ed25519PrivateKey.generate())
    await attach_identify_and_ping(host)
    try:
        yield host
    finally:
        await host.close()
