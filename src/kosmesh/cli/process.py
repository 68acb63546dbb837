"""Start and stop real ``kosmesh node run`` processes (for the demo, tests and benchmarks)."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from kosmesh.cli.client import NodeClient


class NodeProcessError(RuntimeError):
    """The node process did not start or stop as expected."""


class NodeProcess:
    """One ``kosmesh node run`` child process; ``stop()`` always reaps it."""

    def __init__(
        self,
        home: Path,
        *,
        listen: list[str] | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        self.home = home
        self.prefix = prefix or []  # e.g. ["ip", "netns", "exec", NAME] to run inside a namespace
        self.env = env or {}
        self.listen = listen or ["/ip4/127.0.0.1/tcp/0"]
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[str] | None = None
        self.addrs: list[str] = []
        self.api_url = ""
        self.stderr_lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()

    def start(self, timeout: float = 30.0) -> NodeProcess:
        """Start (or restart, from the same home) and wait until it prints its API address."""
        self.addrs, self.api_url, self.stderr_lines = [], "", []
        self._lines = queue.Queue()
        cmd = [*self.prefix, sys.executable, "-m", "kosmesh", "--home", str(self.home), "node", "run"]
        for addr in self.listen:
            cmd += ["--listen", addr]
        cmd += self.extra_args
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env
        )
        threading.Thread(target=self._pump, args=(self.proc.stdout, self._lines), daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(remaining, 0.01))
            except queue.Empty:
                line = ""
            if line is None or remaining <= 0:
                self.stop()
                detail = " ".join(self.stderr_lines[-5:])
                raise NodeProcessError(f"node in {self.home} did not start: {detail or 'timed out'}")
            if line.startswith("listening "):
                self.addrs.append(line.split(" ", 1)[1].strip())
            elif line.startswith("api "):
                self.api_url = line.split(" ", 1)[1].strip()
                return self

    @staticmethod
    def _pump(stream: object, lines: queue.Queue[str | None]) -> None:
        assert stream is not None
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)
        lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line.rstrip())

    @property
    def peer_id(self) -> str:
        return self.addrs[0].rsplit("/p2p/", 1)[1]

    def client(self) -> NodeClient:
        return NodeClient(self.home)

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(Exception):
                pipe.close()  # type: ignore[union-attr]
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
