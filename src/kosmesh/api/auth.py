"""How the control API and its clients know each other: the bearer token, and the node's name.

Kept apart from the server so the CLI's client can use it without importing the web stack.
A token is never empty: a node that finds an empty, unreadable, malformed or too-open
``api.token`` writes a fresh one rather than serve with it, and a client refuses to send one.
Every answer names its node in ``X-Kosmesh-Peer-Id``, so a client whose ``api.json`` is stale
can tell that another program now holds the port.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import stat
from pathlib import Path

from kosmesh.node.config import TOKEN_FILE

log = logging.getLogger(__name__)

PEER_ID_HEADER = "X-Kosmesh-Peer-Id"

# What a token may hold: only characters a header value can carry (no spaces or line breaks, so
# it can never inject a header), never nothing. A node serves only with one long enough not to
# guess (ours are 43 urlsafe-base64 characters); a client sends whatever its node's file holds.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]{1,512}")
MIN_SERVED_TOKEN_CHARS = 16
_MAX_TOKEN_FILE_BYTES = 1024
_TOKEN_FILE_MODE = 0o600


class TokenError(ValueError):
    """The token file is missing, unreadable, or does not hold a usable token."""


def is_usable_token(token: str) -> bool:
    """True for a token a node may serve with: header-safe and at least 16 characters."""
    return len(token) >= MIN_SERVED_TOKEN_CHARS and _TOKEN_CHARS.fullmatch(token) is not None


def read_token(path: Path) -> str:
    """The token in ``path``, if a client may send it (not empty, header-safe); raises
    :class:`TokenError` saying why not."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(_MAX_TOKEN_FILE_BYTES + 1)
    except FileNotFoundError:
        raise TokenError(f"{path} does not exist") from None
    except OSError as exc:
        raise TokenError(f"{path} cannot be read: {exc.strerror or type(exc).__name__}") from None
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise TokenError(f"{path} does not hold an API token (not ASCII)") from None
    if not token:
        raise TokenError(f"{path} is empty")
    if len(raw) > _MAX_TOKEN_FILE_BYTES or _TOKEN_CHARS.fullmatch(token) is None:
        raise TokenError(f"{path} does not hold an API token (up to 512 characters, no spaces)")
    return token


def load_or_create_token(home: Path) -> str:
    """The home's token, or a fresh one written (mode 0600) in place of a file that cannot be used.

    Replaced: a missing, empty, unreadable or malformed file, and one that group or others can
    access (its token may have leaked).
    """
    path = home / TOKEN_FILE
    try:
        token = read_token(path)
        mode = path.stat().st_mode
        if not is_usable_token(token):
            why = f"{path} holds a token shorter than {MIN_SERVED_TOKEN_CHARS} characters"
        elif mode & 0o077:
            why = f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):04o})"
        else:
            return token
    except (TokenError, OSError) as exc:
        why = str(exc)
    if path.exists() or path.is_symlink():
        log.warning("API token not usable (%s): writing a fresh one", why)
    return _write_fresh_token(path)


def _write_fresh_token(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, _TOKEN_FILE_MODE)
    try:
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), _TOKEN_FILE_MODE)  # exactly 0600, whatever the umask
            fh.write(token)
        os.replace(tmp, path)  # replaces a symlink or a bad file, never writes through it
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return token
