"""Where the key's passphrase comes from: ``KOSMESH_PASSPHRASE`` or a hidden prompt, never argv.

A command-line argument is visible to every local user (``ps``, ``/proc/<pid>/cmdline``) and
lands in shell history, so no command takes the passphrase as an option. The environment
variable is readable only by the same user (``/proc/<pid>/environ`` is mode 0400).
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from kosmesh.identity.keystore import KeyFileNotFoundError, key_file_is_encrypted

ENV_VAR = "KOSMESH_PASSPHRASE"
_ATTEMPTS = 3
_MAX_LINE = 4096


class PassphraseError(Exception):
    """No passphrase could be had (none given, mismatched twice, or the key file is unsuitable)."""


def from_env() -> str | None:
    """``KOSMESH_PASSPHRASE``, if set and not empty."""
    return os.environ.get(ENV_VAR) or None


def for_new_key() -> str:
    """The passphrase for a key about to be created: the environment, else asked for.

    On a terminal it is typed twice, hidden; when stdin is not a terminal (a script piping it
    in), its first line is the passphrase.
    """
    env = from_env()
    if env is not None:
        return env
    if sys.stdin is not None and sys.stdin.isatty():
        return _ask("the new node key", confirm=True)
    line = sys.stdin.readline(_MAX_LINE) if sys.stdin is not None else ""
    passphrase = line.removesuffix("\n").removesuffix("\r")
    if not passphrase:
        raise PassphraseError(f"no passphrase: set {ENV_VAR}, or type it at the prompt (or as stdin's first line)")
    return passphrase


def for_existing_key(path: Path) -> str | None:
    """The passphrase to unlock the key at ``path``: None if there is none or it is not encrypted,
    the environment, else a hidden prompt when stdin is a terminal (never a read of a pipe that
    may never end). Without any, loading the key fails later with its own clear message."""
    try:
        if not key_file_is_encrypted(path):
            return None
    except KeyFileNotFoundError:
        return None
    env = from_env()
    if env is not None:
        return env
    if sys.stdin is not None and sys.stdin.isatty():
        return _ask(f"the node key {path}", confirm=False)
    return None


def _ask(what: str, *, confirm: bool) -> str:
    for _ in range(_ATTEMPTS):
        try:
            first = getpass.getpass(f"Passphrase for {what}: ")
            if not first:
                print("The passphrase cannot be empty.", file=sys.stderr)
                continue
            if confirm and getpass.getpass("Repeat the passphrase: ") != first:
                print("The two passphrases differ.", file=sys.stderr)
                continue
        except (EOFError, KeyboardInterrupt):
            raise PassphraseError("no passphrase given") from None
        return first
    raise PassphraseError(f"no passphrase after {_ATTEMPTS} attempts")
