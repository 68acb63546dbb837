"""Faults on rig hosts, all as netfilter rules inside the host's own namespace.

This kernel has no ``netem``, so: loss is a ``numgen random`` drop on the host's outgoing
rig traffic; delay sends that traffic (iptables' NFQUEUE target: the kernel lacks nft's
``queue`` expression) to a queue where ``tests.rig.delayer`` holds each
packet before accepting it; a partition drops traffic between two groups of hosts in both
directions, and healing flushes those rules. Only ``eth0`` (the rig link) is touched: a
node's control API on the namespace's own loopback keeps working under any fault.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from tests.rig.netns import Host, Rig, RigError, RigUnavailable

TABLE = "krig_faults"
ROOT = Path(__file__).resolve().parents[2]
DELAYER_QUEUE = 7

_BASE = f"""
table inet {TABLE} {{
    chain partition_out {{ }}
    chain partition_in {{ }}
    chain output {{
        type filter hook output priority 0; policy accept;
        oifname "eth0" jump partition_out
    }}
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname "eth0" jump partition_in
    }}
    chain loss {{
        type filter hook output priority 10; policy accept;
    }}
}}
"""


def check_available() -> None:
    for tool, package in (("nft", "nftables"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            raise RigUnavailable(f"{package} (`{tool}`) is not installed; `make rig-deps` installs it")
    if importlib.util.find_spec("netfilterqueue") is None:
        raise RigUnavailable("netfilterqueue is not installed; `make rig-deps` installs it")


def _nft(rig: Rig, host: Host, script: str) -> None:
    rig.run(host, ["nft", "-f", "-"], input_text=script)


def prepare(rig: Rig, hosts: Iterable[Host] | None = None) -> None:
    """Create the (empty) fault table in each host; faults then only add and flush rules."""
    check_available()
    for host in hosts or rig.hosts:
        _nft(rig, host, _BASE)


def set_loss(rig: Rig, host: Host, percent: int) -> None:
    """Drop ``percent``% of the host's outgoing rig packets at random (0 removes the loss)."""
    if not 0 <= percent <= 100:
        raise ValueError("loss is a percentage")
    script = f"flush chain inet {TABLE} loss\n"
    if percent:
        script += f'add rule inet {TABLE} loss oifname "eth0" numgen random mod 100 < {percent} drop\n'
    _nft(rig, host, script)


def partition(rig: Rig, group_a: Sequence[Host], group_b: Sequence[Host]) -> None:
    """Cut every path between the two groups, both directions, on both sides."""
    for mine, theirs in ((group_a, group_b), (group_b, group_a)):
        addresses = ", ".join(h.address for h in theirs)
        for host in mine:
            _nft(
                rig,
                host,
                f"add rule inet {TABLE} partition_out ip daddr {{ {addresses} }} drop\n"
                f"add rule inet {TABLE} partition_in ip saddr {{ {addresses} }} drop\n",
            )


def heal(rig: Rig, hosts: Iterable[Host] | None = None) -> None:
    for host in hosts or rig.hosts:
        _nft(rig, host, f"flush chain inet {TABLE} partition_out\nflush chain inet {TABLE} partition_in\n")


class Delayer:
    """Holds every outgoing rig packet of one host for ``delay_ms`` (an NFQUEUE and its reader)."""

    def __init__(self, rig: Rig, host: Host, delay_ms: float) -> None:
        self.rig = rig
        self.host = host
        self.delay_ms = delay_ms
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 15.0) -> Delayer:
        argv = [sys.executable, "-m", "tests.rig.delayer", "--queue", str(DELAYER_QUEUE), "--delay-ms",
                str(self.delay_ms)]  # fmt: skip
        self.proc = subprocess.Popen(
            self.host.exec_argv(argv), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "ready" once bound to the queue
        if line.strip() != "ready":
            self.stop()
            detail = self.proc.stderr.read() if self.proc.stderr else ""
            if "No module named 'netfilterqueue'" in detail:
                raise RigUnavailable("netfilterqueue is not installed; `make rig-deps` installs it")
            raise RigError(f"delayer did not start: {detail.strip()[-300:]}")
        # This kernel has no nft `queue` expression (CONFIG_NFT_QUEUE), but has iptables' NFQUEUE
        # target. Bypass: if the delayer dies, packets flow undelayed instead of being dropped.
        self.rig.run(self.host, ["iptables", "-w", "-A", "OUTPUT", *self._rule])
        return self

    @property
    def _rule(self) -> list[str]:
        return ["-o", "eth0", "-j", "NFQUEUE", "--queue-num", str(DELAYER_QUEUE), "--queue-bypass"]

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(RigError):
            self.rig.run(self.host, ["iptables", "-w", "-D", "OUTPUT", *self._rule])
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
