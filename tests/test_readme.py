"""The README's SDK example runs as written (with its homes moved into a temp dir)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_sdk_example_runs(tmp_path: Path) -> None:
    text = README.read_text()
    match = re.search(r"## The SDK in one screen\n\n```python\n(.*?)```", text, re.S)
    assert match, "README lost its SDK section"
    code = match.group(1).replace("/tmp/sdk-a", str(tmp_path / "a")).replace("/tmp/sdk-b", str(tmp_path / "b"))
    script = tmp_path / "sdk.py"
    script.write_text(code)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("processed {'")
    assert "'summary': 'a long text" in result.stdout


def test_quick_start_is_exactly_two_commands() -> None:
    text = README.read_text()
    block = re.search(r"## Quick start\n\n```\n(.*?)```", text, re.S)
    assert block is not None
    assert block.group(1).split("\n")[:-1] == ["make demo", "make test"]
