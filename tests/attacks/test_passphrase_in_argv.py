"""The key's passphrase: from KOSMESH_PASSPHRASE or a hidden prompt, never on the command line.

A command-line argument is readable by every local user (``ps``, ``/proc/<pid>/cmdline``);
``init --passphrase P`` used to put the secret there (issue 9).
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer

from kosmesh.cli.main import app
from kosmesh.identity import PeerId, load_key
from kosmesh.identity.keystore import key_file_is_encrypted
from tests.cli.commands import assert_clean_error, kosmesh
from tests.waiting import wait_until

pytestmark = pytest.mark.multiprocess

SECRET = "tr0ub4dor & 3 horses"


def env_without_passphrase() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "KOSMESH_PASSPHRASE"}


def read_until(fd: int, needle: bytes, seen: bytearray, start: int = 0, timeout: float = 30) -> int:
    """Read ``fd`` into ``seen`` until ``needle`` shows up after ``start`` (the child is waiting
    for us then); returns the index just past it."""
    deadline = time.monotonic() + timeout
    while (found := seen.find(needle, start)) < 0:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {needle!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"end of output before {needle!r}: {bytes(seen)!r}"
            seen += chunk
    return found + len(needle)


def drain(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0)[0]:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the pty's other side is gone
            break
        if not chunk:
            break
        out += chunk
    return out


def test_no_command_takes_a_passphrase_argument() -> None:
    def options(command: Any, path: str) -> list[tuple[str, str]]:
        found = [(path, name) for p in command.params for name in [*p.opts, *p.secondary_opts]]
        for name, sub in getattr(command, "commands", {}).items():
            found += options(sub, f"{path} {name}")
        return found

    every = options(typer.main.get_command(app), "kosmesh")
    assert ("kosmesh node run", "--listen") in every
    assert ("kosmesh init", "--encrypt") in every
    assert [(path, name) for path, name in every if "pass" in name or "secret" in name] == []


@pytest.mark.parametrize("command", [["init", "--passphrase", SECRET], ["node", "run", "--passphrase", SECRET]])
def test_the_old_passphrase_option_is_gone(tmp_path: Path, command: list[str]) -> None:
    result = kosmesh(tmp_path / "n", *command)
    assert result.returncode == 2 and "No such option" in result.stderr
    assert not (tmp_path / "n" / "identity.key").exists()


def test_init_encrypt_takes_the_passphrase_from_stdin_not_argv(tmp_path: Path) -> None:
    home = tmp_path / "n"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kosmesh", "--home", str(home), "init", "--encrypt"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_without_passphrase(),
    )  # fmt: skip
    # what every local user can read (empty for a moment while exec sets up the new image);
    # the child waits for stdin meanwhile
    cmdline_file = Path(f"/proc/{proc.pid}/cmdline")
    cmdline = wait_until(lambda: cmdline_file.read_bytes().split(b"\0")[:-1], 10, "the child has its command line")
    assert b"--encrypt" in cmdline and SECRET.encode() not in b" ".join(cmdline)
    out, err = proc.communicate(f"{SECRET}\n".encode(), timeout=60)
    assert proc.returncode == 0, err
    key_path = home / "identity.key"
    assert key_file_is_encrypted(key_path) and SECRET.encode() not in key_path.read_bytes()
    kdf = json.loads(key_path.read_text())["kdf"]
    assert (kdf["opslimit"], kdf["memlimit"]) == (3, 256 * 1024 * 1024)  # libsodium's MODERATE
    peer_id = out.decode().split("Peer ID: ")[1].split()[0]
    assert str(PeerId.from_public_key(load_key(key_path, SECRET).public_key)) == peer_id


def test_init_encrypt_on_a_terminal_asks_twice_without_echo(tmp_path: Path) -> None:
    home = tmp_path / "n"
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kosmesh", "--home", str(home), "init", "--encrypt"],
        stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env_without_passphrase(),
        start_new_session=True,  # no controlling terminal: the prompt is on stdin, the pty
    )  # fmt: skip
    os.close(slave)
    assert proc.stderr is not None and proc.stdout is not None
    prompts, echoed = bytearray(), b""
    try:
        err = proc.stderr.fileno()
        at = read_until(err, b"Passphrase for the new node key:", prompts)
        os.write(master, f"{SECRET}\n".encode())
        at = read_until(err, b"Repeat the passphrase:", prompts, at)
        os.write(master, b"a typo\n")  # the two differ: asked again
        at = read_until(err, b"differ", prompts, at)
        at = read_until(err, b"Passphrase for the new node key:", prompts, at)
        os.write(master, f"{SECRET}\n".encode())
        at = read_until(err, b"Repeat the passphrase:", prompts, at)
        os.write(master, f"{SECRET}\n".encode())
        out, rest = proc.communicate(timeout=60)
    finally:
        echoed = drain(master)
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, bytes(prompts) + rest
    assert SECRET.encode() not in echoed and b"a typo" not in echoed, echoed  # typed, never shown
    assert SECRET.encode() not in bytes(prompts) + rest + out
    assert str(PeerId.from_public_key(load_key(home / "identity.key", SECRET).public_key)) in out.decode()


def test_init_encrypt_with_the_environment_variable(tmp_path: Path) -> None:
    home = tmp_path / "n"
    result = kosmesh(home, "init", "--encrypt", env=dict(os.environ, KOSMESH_PASSPHRASE=SECRET))
    assert result.returncode == 0, result.stderr
    assert key_file_is_encrypted(home / "identity.key")
    # an existing encrypted home is unlocked, not re-created; a wrong or missing passphrase is one line
    again = kosmesh(home, "init", env=dict(os.environ, KOSMESH_PASSPHRASE=SECRET))
    assert "Existing node home" in again.stdout
    assert_clean_error(kosmesh(home, "init", env=env_without_passphrase()), "KOSMESH_PASSPHRASE")
    assert_clean_error(kosmesh(home, "init", env=dict(os.environ, KOSMESH_PASSPHRASE="nope")), "wrong passphrase")


def test_init_encrypt_refuses_to_pretend(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    assert kosmesh(plain, "init", env=env_without_passphrase()).returncode == 0
    assert_clean_error(kosmesh(plain, "init", "--encrypt", env=env_without_passphrase()), "already exists unencrypted")
    # no terminal and nothing on stdin: no passphrase, and no home half-made
    assert_clean_error(kosmesh(tmp_path / "new", "init", "--encrypt", env=env_without_passphrase()), "no passphrase")
    assert not (tmp_path / "new" / "identity.key").exists()
