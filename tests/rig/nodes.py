"""Real ``kosmesh node run`` processes on rig hosts, one per host, and what they say about themselves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from kosmesh.cli.process import NodeProcess
from kosmesh.node.config import NodeConfig, RedialConfig, WireConfig, write_config
from tests.rig.netns import Host, Rig

PORT = 4001

# Short timers so a cut link is noticed in seconds: ping every 0.5 s, drop after 2 s of silence.
FAST_TIMERS = NodeConfig(
    wire=WireConfig(keepalive_interval_s=0.5, idle_timeout_s=2.0, dial_timeout_s=2.0),
    redial=RedialConfig(min_s=0.2, max_s=1.0, give_up_s=120.0),
)


def start_nodes(
    rig: Rig, homes: Path, started: list[Any], config: NodeConfig | None = None, *, hosts: list[Host] | None = None
) -> list[NodeProcess]:
    """One node per host (of ``hosts``, default all), on the host's rig address; the first is every other's seed.

    Each node is appended to ``started`` before it starts, so the caller can stop it even if
    a later start fails. ``config`` (timeouts, redial schedule) is written to every home first.
    """
    nodes: list[NodeProcess] = []
    for host in rig.hosts if hosts is None else hosts:
        seeds = ["--seed", nodes[0].addrs[0]] if nodes else []
        home = homes / f"home{host.index}"
        if config is not None:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_config(home, config)
        node = NodeProcess(
            home,
            listen=[f"/ip4/{host.address}/tcp/{PORT}"],
            extra_args=seeds,
            prefix=host.exec_argv([]),
        )
        started.append(node)
        nodes.append(node.start())
    return nodes


def status(host: Host, node: NodeProcess) -> dict[str, Any]:
    """``kosmesh status --json`` run inside the host's namespace, where the node's API listens."""
    argv = [sys.executable, "-m", "kosmesh", "--home", str(node.home), "status", "--json"]
    done = subprocess.run(host.exec_argv(argv), capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"status of h{host.index} failed: {done.stderr.strip()[-300:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def connected_peers(host: Host, node: NodeProcess) -> set[str]:
    return {c["peer_id"] for c in status(host, node)["connections"]}
