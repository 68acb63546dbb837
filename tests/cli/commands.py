"""Running the ``kosmesh`` command as a user would: a child process, its output and exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def kosmesh(
    home: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``kosmesh --home HOME ARGS…`` with no stdin; ``env`` replaces the environment if given."""
    return subprocess.run(
        [sys.executable, "-m", "kosmesh", "--home", str(home), *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        env=dict(env if env is not None else os.environ, COLUMNS="200"),
    )  # fmt: skip


def assert_clean_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A failure the way the CLI promises: non-zero exit, one line on stderr, no traceback."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr
