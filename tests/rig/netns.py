"""Hosts in Linux network namespaces on one private bridge: the multi-host test rig.

Layout for a run with suffix ``S`` and N hosts::

    krig-S-br   bridge namespace: br0 and one veth end per host (v1 … vN)
    krig-S-h1   host 1: eth0 = 10.77.0.1/24 (its veth's other end)
    …
    krig-S-hN   host N: eth0 = 10.77.0.N/24

Every link is created from inside the bridge namespace (``ip -n``) with its peer placed
straight into the host's namespace, so the host's own namespace never holds a rig
interface, route or rule, and the rig's traffic never reaches it. Deleting the namespaces
deletes every veth, bridge and nft table in them. The suffix carries the creating process's
pid, so ``sweep()`` can remove what a killed run left behind without touching a live one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

PREFIX = "krig"
SUBNET = "10.77.0"
MAX_HOSTS = 200
COMMAND_TIMEOUT_S = 20.0


class RigUnavailable(RuntimeError):
    """This machine cannot build the rig (not root, no iproute2, netns not permitted)."""


class RigError(RuntimeError):
    """A rig command failed."""


def _run(argv: Sequence[str], *, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, input=input_text, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except FileNotFoundError as exc:
        raise RigUnavailable(f"{argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise RigError(f"{' '.join(argv)} timed out") from exc
    if check and done.returncode != 0:
        raise RigError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done


def check_available() -> None:
    """Raise RigUnavailable with a reason a test can print when skipping."""
    if os.geteuid() != 0:
        raise RigUnavailable("the rig needs root to create network namespaces")
    if shutil.which("ip") is None:
        raise RigUnavailable("iproute2 (`ip`) is not installed")
    probe = f"{PREFIX}-probe-{os.getpid()}"
    done = _run(["ip", "netns", "add", probe], check=False)
    if done.returncode != 0:
        raise RigUnavailable(f"`ip netns add` is not permitted here: {done.stderr.strip()}")
    _run(["ip", "netns", "delete", probe], check=False)


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    done = _run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in done.stdout.splitlines() if line.strip()]
    return sorted(name for name in names if name.startswith(prefix + "-"))


def namespace_pids(namespace: str) -> list[int]:
    done = _run(["ip", "netns", "pids", namespace], check=False)
    return [int(word) for word in done.stdout.split() if word.isdigit()]


def _owner_pid(namespace: str) -> int | None:
    parts = namespace.split("-")
    return int(parts[1]) if len(parts) >= 3 and parts[1].isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def delete_namespace(namespace: str) -> None:
    """Kill every process inside, then delete the namespace (and with it its links and rules)."""
    for pid in namespace_pids(namespace):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while namespace_pids(namespace) and time.monotonic() < deadline:
        time.sleep(0.02)  # SIGKILL is delivered asynchronously; the kernel reaps quickly
    _run(["ip", "netns", "delete", namespace], check=False)


def sweep(prefix: str = PREFIX) -> list[str]:
    """Delete namespaces left by runs whose creating process is gone; returns their names."""
    removed = []
    for namespace in list_namespaces(prefix):
        owner = _owner_pid(namespace)
        if owner is None or not _alive(owner):
            delete_namespace(namespace)
            removed.append(namespace)
    return removed


@dataclass
class Host:
    index: int  # 1-based
    namespace: str
    address: str  # IPv4 on the rig subnet

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *argv]


@dataclass
class Rig:
    """N hosts on one bridge, each in its own namespace; ``with Rig(5) as rig:`` builds and removes it."""

    size: int
    suffix: str = field(default_factory=lambda: f"{os.getpid()}-{secrets.token_hex(3)}")
    hosts: list[Host] = field(default_factory=list)
    setup_s: float | None = None
    teardown_s: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.size <= MAX_HOSTS:
            raise ValueError(f"a rig has 1 to {MAX_HOSTS} hosts")

    @property
    def bridge_namespace(self) -> str:
        return f"{PREFIX}-{self.suffix}-br"

    def up(self) -> Rig:
        check_available()
        started = time.monotonic()
        sweep()  # what killed runs left behind (their creating process is gone)
        br = self.bridge_namespace
        try:
            _run(["ip", "netns", "add", br])
            _run(["ip", "-n", br, "link", "set", "lo", "up"])
            _run(["ip", "-n", br, "link", "add", "br0", "type", "bridge"])
            _run(["ip", "-n", br, "link", "set", "br0", "up"])
            for index in range(1, self.size + 1):
                host = Host(index, f"{PREFIX}-{self.suffix}-h{index}", f"{SUBNET}.{index}")
                _run(["ip", "netns", "add", host.namespace])
                self.hosts.append(host)
                _run(["ip", "-n", br, "link", "add", f"v{index}", "type", "veth", "peer", "name", "eth0",
                      "netns", host.namespace])  # fmt: skip
                _run(["ip", "-n", br, "link", "set", f"v{index}", "master", "br0", "up"])
                _run(["ip", "-n", host.namespace, "link", "set", "lo", "up"])
                _run(["ip", "-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0"])
                _run(["ip", "-n", host.namespace, "link", "set", "eth0", "up"])
        except BaseException:
            self.down()
            raise
        self.setup_s = time.monotonic() - started
        return self

    def down(self) -> None:
        """Remove everything this rig made; safe to call twice and after a partial ``up``."""
        started = time.monotonic()
        for namespace in self.leftovers():  # by suffix: also finds one a failed ``up`` never recorded
            delete_namespace(namespace)
        self.teardown_s = time.monotonic() - started

    def leftovers(self) -> list[str]:
        """Namespaces of this run that still exist (empty after ``down``)."""
        return list_namespaces(f"{PREFIX}-{self.suffix}")

    def run(self, host: Host, argv: Sequence[str], *, check: bool = True, input_text: str | None = None) -> str:
        """Run a short command inside ``host``'s namespace; returns its stdout."""
        return _run(host.exec_argv(argv), check=check, input_text=input_text).stdout

    def __enter__(self) -> Rig:
        return self.up()

    def __exit__(self, *exc_info: object) -> None:
        self.down()
