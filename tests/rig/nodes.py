"""Real ``kosmesh node run`` processes on rig hosts, one per host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kosmesh.node.process import NodeProcess
from tests.rig.netns import Rig

PORT = 4001


def start_nodes(rig: Rig, homes: Path, started: list[Any]) -> list[NodeProcess]:
    """One node per host, listening on the host's rig address; the first is every other node's seed.

    Each node is appended to ``started`` before it starts, so the caller can stop it even if
    a later start fails.
    """
    nodes: list[NodeProcess] = []
    for host in rig.hosts:
        seeds = ["--seed", nodes[0].addrs[0]] if nodes else []
        node = NodeProcess(
            homes / f"home{host.index}",
            listen=[f"/ip4/{host.address}/tcp/{PORT}"],
            extra_args=seeds,
            prefix=host.exec_argv([]),
        )
        started.append(node)
        nodes.append(node.start())
    return nodes
