"""The node key file: one Ed25519 private key on disk, optionally passphrase-encrypted.

File format (version 1) — a small UTF-8 JSON object, so ``cat`` shows what the file is
and which identity it holds without revealing the key::

    {
      "format": "kosmesh-node-key",
      "version": 1,
      "type": "ed25519",
      "peer_id": "12D3KooW…",            # public; checked against the key on load
      "encrypted": false,
      "key": "<base64 of the libp2p PrivateKey protobuf (08 01 12 40 seed||pubkey)>"
    }

With a passphrase, ``key`` is replaced by the sealed protobuf::

      "encrypted": true,
      "kdf": {"name": "argon2id", "salt": "<base64, 16 bytes>",
              "opslimit": 3, "memlimit": 268435456},
      "cipher": "xsalsa20-poly1305",
      "nonce": "<base64, 24 bytes>",
      "ciphertext": "<base64 of SecretBox(protobuf): 16-byte Poly1305 tag + 68 bytes>"

The 32-byte SecretBox key is Argon2id(passphrase as NFC-normalised UTF-8, salt, opslimit,
memlimit). New files use libsodium's MODERATE preset (3 passes, 256 MiB: a key at rest, unlocked
once per node start); files written earlier at INTERACTIVE (2 passes, 64 MiB) still open, because
the KDF parameters are read back from the file, within sane bounds. The Poly1305 tag authenticates the ciphertext;
``peer_id`` and the KDF parameters are authenticated indirectly (changing the parameters
changes the derived key; the peer id must match the decrypted key).

For interoperability, :func:`load_key` also accepts a bare libp2p ``PrivateKey`` protobuf
file (what go-/rust-libp2p tools write) when no passphrase is needed.

Files are written atomically (temporary file in the same directory created with mode 0600,
fsync, rename, directory fsync) and refused on load if group or others can access them.
Exceptions and reprs never contain the key or the passphrase.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import secrets
import stat
import unicodedata
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.pwhash
import nacl.secret

from kosmesh.identity.keys import Ed25519PrivateKey, KeyError_
from kosmesh.identity.peer_id import PeerId

FORMAT_NAME = "kosmesh-node-key"
FORMAT_VERSION = 1
KEY_TYPE = "ed25519"
KDF_NAME = "argon2id"
CIPHER_NAME = "xsalsa20-poly1305"

# Argon2id cost used when writing: libsodium's "moderate" profile (3 passes, 256 MiB), about
# 0.7 s on a laptop core, paid once per unlock. "Interactive" (2 passes, 64 MiB) is for login
# prompts, not for a long-lived key at rest; files written with it (before issue 9) still open.
DEFAULT_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MODERATE
DEFAULT_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MODERATE
# Bounds accepted when reading, so a hostile file cannot make us burn unbounded CPU/RAM; they
# admit every libsodium preset up to SENSITIVE (4 passes, 1 GiB).
MIN_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_MIN
MAX_OPSLIMIT = 16
MIN_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_MIN
MAX_MEMLIMIT = 1 << 30  # 1 GiB
SALT_BYTES = nacl.pwhash.argon2id.SALTBYTES

MAX_KEY_FILE_BYTES = 16 * 1024  # a real key file is < 1 KiB
KEY_FILE_MODE = 0o600
_PERMISSION_MASK = 0o077  # any group/other bit makes the file too open (as ssh does)


class KeystoreError(ValueError):
    """A key file could not be written or read. Messages never contain secrets."""


class KeyFileNotFoundError(KeystoreError):
    """The key file does not exist."""


class KeyFilePermissionError(KeystoreError):
    """The key file is readable or writable by group or others."""


class PassphraseRequiredError(KeystoreError):
    """The key file is encrypted and no passphrase was given."""


class WrongPassphraseError(KeystoreError):
    """The passphrase does not decrypt the key file (or its ciphertext was altered)."""


class CorruptKeyFileError(KeystoreError):
    """The key file is not a well-formed kosmesh key file."""


# --------------------------------------------------------------------------- writing


def save_key(
    path: str | os.PathLike[str],
    key: Ed25519PrivateKey,
    passphrase: str | None = None,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> None:
    """Write ``key`` to ``path`` atomically with mode 0600, replacing any existing file.

    With ``passphrase`` the key is sealed with Argon2id + XSalsa20-Poly1305; ``opslimit`` and
    ``memlimit`` set the Argon2id cost (stored in the file). Missing parent directories are
    created with mode 0700.
    """
    _write_atomic(Path(path), _encode_key_file(key, passphrase, opslimit, memlimit), overwrite=True)


def load_key(path: str | os.PathLike[str], passphrase: str | None = None) -> Ed25519PrivateKey:
    """Read the key file at ``path``.

    Raises a :class:`KeystoreError` subclass: :class:`KeyFileNotFoundError`,
    :class:`KeyFilePermissionError` (group/other access: fix with ``chmod 600``),
    :class:`PassphraseRequiredError`, :class:`WrongPassphraseError` or
    :class:`CorruptKeyFileError`. A passphrase given for an unencrypted file is ignored.
    """
    path = Path(path)
    return _decode_key_file(_read_key_file(path), passphrase, path)


def load_or_create_key(
    path: str | os.PathLike[str],
    passphrase: str | None = None,
    *,
    opslimit: int = DEFAULT_OPSLIMIT,
    memlimit: int = DEFAULT_MEMLIMIT,
) -> tuple[Ed25519PrivateKey, bool]:
    """Load the key at ``path``, or generate and save a new one; returns ``(key, created)``.

    Creation never replaces a file that appeared meanwhile (another process starting the
    same node): that file is loaded instead. Every load error other than a missing file
    propagates, so a damaged or locked key is never silently replaced by a new identity.
    """
    path = Path(path)
    try:
        return load_key(path, passphrase), False
    except KeyFileNotFoundError:
        pass
    key = Ed25519PrivateKey.generate()
    created = _write_atomic(path, _encode_key_file(key, passphrase, opslimit, memlimit), overwrite=False)
    if not created:
        return load_key(path, passphrase), False
    return key, True


def key_file_is_encrypted(path: str | os.PathLike[str]) -> bool:
    """True if the key file at ``path`` needs a passphrase (same checks as :func:`load_key`)."""
    path = Path(path)
    data = _read_key_file(path)
    if _looks_like_protobuf(data):
        return False
    return bool(_parse_header(data, path)["encrypted"])


# --------------------------------------------------------------------------- encoding


def _encode_key_file(key: Ed25519PrivateKey, passphrase: str | None, opslimit: int, memlimit: int) -> bytes:
    doc: dict[str, Any] = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "type": KEY_TYPE,
        "peer_id": PeerId.from_public_key(key.public_key).to_base58(),
    }
    protobuf = key.to_protobuf()
    if passphrase is None:
        doc["encrypted"] = False
        doc["key"] = _b64(protobuf)
    else:
        if not (MIN_OPSLIMIT <= opslimit <= MAX_OPSLIMIT):
            raise KeystoreError(f"opslimit must be in [{MIN_OPSLIMIT}, {MAX_OPSLIMIT}]")
        if not (MIN_MEMLIMIT <= memlimit <= MAX_MEMLIMIT):
            raise KeystoreError(f"memlimit must be in [{MIN_MEMLIMIT}, {MAX_MEMLIMIT}] bytes")
        salt = secrets.token_bytes(SALT_BYTES)
        box = nacl.secret.SecretBox(_derive_key(passphrase, salt, opslimit, memlimit))
        nonce = secrets.token_bytes(nacl.secret.SecretBox.NONCE_SIZE)
        sealed = box.encrypt(protobuf, nonce)
        doc["encrypted"] = True
        doc["kdf"] = {"name": KDF_NAME, "salt": _b64(salt), "opslimit": opslimit, "memlimit": memlimit}
        doc["cipher"] = CIPHER_NAME
        doc["nonce"] = _b64(nonce)
        doc["ciphertext"] = _b64(sealed.ciphertext)
    return (json.dumps(doc, indent=2) + "\n").encode()


def _decode_key_file(data: bytes, passphrase: str | None, path: Path) -> Ed25519PrivateKey:
    if _looks_like_protobuf(data):
        return _key_from_protobuf(data, path)
    doc = _parse_header(data, path)
    if not doc["encrypted"]:
        protobuf = _b64_field(doc, "key", path)
    else:
        if passphrase is None:
            raise PassphraseRequiredError(f"key file {path} is encrypted: a passphrase is required")
        kdf = doc.get("kdf")
        if not isinstance(kdf, dict) or kdf.get("name") != KDF_NAME:
            raise _corrupt(path, f"unsupported or missing key derivation (expected {KDF_NAME})")
        if doc.get("cipher") != CIPHER_NAME:
            raise _corrupt(path, f"unsupported or missing cipher (expected {CIPHER_NAME})")
        salt = _b64_field(kdf, "salt", path)
        opslimit = _int_field(kdf, "opslimit", MIN_OPSLIMIT, MAX_OPSLIMIT, path)
        memlimit = _int_field(kdf, "memlimit", MIN_MEMLIMIT, MAX_MEMLIMIT, path)
        nonce = _b64_field(doc, "nonce", path)
        ciphertext = _b64_field(doc, "ciphertext", path)
        if len(salt) != SALT_BYTES or len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
            raise _corrupt(path, "salt or nonce has the wrong length")
        if len(ciphertext) < nacl.secret.SecretBox.MACBYTES:
            raise _corrupt(path, "ciphertext is truncated")
        box = nacl.secret.SecretBox(_derive_key(passphrase, salt, opslimit, memlimit))
        try:
            protobuf = box.decrypt(ciphertext, nonce)
        except nacl.exceptions.CryptoError:
            raise WrongPassphraseError(
                f"cannot decrypt key file {path}: wrong passphrase (or the encrypted key was altered)"
            ) from None
    key = _key_from_protobuf(protobuf, path)
    expected = doc.get("peer_id")
    if expected is not None and expected != PeerId.from_public_key(key.public_key).to_base58():
        raise _corrupt(path, "the stored peer_id does not match the key")
    return key


def _parse_header(data: bytes, path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"))
    # ValueError: also an integer of more than 4300 digits (sys.get_int_max_str_digits), which the
    # JSON parser refuses with a plain ValueError rather than a JSONDecodeError.
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError):
        raise _corrupt(path, "not a kosmesh key file (not JSON, nor a libp2p private key)") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise _corrupt(path, f'not a kosmesh key file (missing "format": "{FORMAT_NAME}")')
    version = doc.get("version")
    if type(version) is not int or version != FORMAT_VERSION:  # not True, not 1.0
        shown = str(version)[:16]
        raise _corrupt(path, f"unsupported key file version {shown!r} (expected {FORMAT_VERSION})")
    if doc.get("type") != KEY_TYPE:
        raise _corrupt(path, f"unsupported key type (expected {KEY_TYPE!r})")
    if not isinstance(doc.get("encrypted"), bool):
        raise _corrupt(path, 'missing or invalid "encrypted" flag')
    return doc


def _looks_like_protobuf(data: bytes) -> bool:
    # An Ed25519 libp2p PrivateKey protobuf starts with field 1 = 1 (08 01); JSON cannot.
    return data[:2] == b"\x08\x01"


def _key_from_protobuf(protobuf: bytes, path: Path) -> Ed25519PrivateKey:
    try:
        return Ed25519PrivateKey.from_protobuf(protobuf)
    except KeyError_:
        raise _corrupt(path, "the stored private key is malformed") from None


def _derive_key(passphrase: str, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    if not isinstance(passphrase, str):
        raise KeystoreError("the passphrase must be a string")
    if not passphrase:
        raise KeystoreError("empty passphrase: use None for an unencrypted key file")
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    try:
        derived: bytes = nacl.pwhash.argon2id.kdf(
            nacl.secret.SecretBox.KEY_SIZE, secret, salt, opslimit=opslimit, memlimit=memlimit
        )
    except (nacl.exceptions.CryptoError, MemoryError):
        raise KeystoreError("key derivation failed (Argon2id parameters rejected or out of memory)") from None
    return derived


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64_field(doc: dict[str, Any], name: str, path: Path) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str):
        raise _corrupt(path, f"missing or invalid {name!r}")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise _corrupt(path, f"{name!r} is not valid base64") from None


def _int_field(doc: dict[str, Any], name: str, low: int, high: int, path: Path) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not (low <= value <= high):
        raise _corrupt(path, f"{name!r} is missing or outside [{low}, {high}]")
    return value


def _corrupt(path: Path, why: str) -> CorruptKeyFileError:
    return CorruptKeyFileError(f"key file {path} is corrupted or unsupported: {why}")


# --------------------------------------------------------------------------- file I/O


def _read_key_file(path: Path) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise KeyFileNotFoundError(f"key file {path} does not exist") from None
    except PermissionError:
        raise KeystoreError(f"key file {path} cannot be opened: permission denied") from None
    except OSError as exc:
        raise KeystoreError(f"key file {path} cannot be opened: {_why(exc)}") from None
    try:
        st = os.fstat(fd)  # checks the file we actually opened, not whatever the path names now
        if not stat.S_ISREG(st.st_mode):
            raise KeystoreError(f"key file {path} is not a regular file")
        if os.name == "posix" and st.st_mode & _PERMISSION_MASK:
            raise KeyFilePermissionError(
                f"key file {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                f"it must be private to its owner: run `chmod 600 {path}`"
            )
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise _corrupt(path, f"file is too large ({st.st_size} bytes)")
        chunks = []
        remaining = MAX_KEY_FILE_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise KeystoreError(f"key file {path} cannot be read: {_why(exc)}") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise _corrupt(path, "file is too large")
    if not data:
        raise _corrupt(path, "file is empty")
    return data


def _write_atomic(path: Path, data: bytes, *, overwrite: bool) -> bool:
    """Write ``data`` to ``path`` via a private temporary file; False if ``path`` existed and
    ``overwrite`` is off (then nothing is changed)."""
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeystoreError(f"cannot create key directory {directory}: {_why(exc)}") from None
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(tmp, flags, KEY_FILE_MODE)
    except OSError as exc:
        raise KeystoreError(f"cannot create a temporary key file in {directory}: {_why(exc)}") from None
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, KEY_FILE_MODE)  # exact 0600 whatever the umask
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic, and fails if path exists: never clobbers
            except FileExistsError:
                return False
            except OSError:
                # A filesystem without hard links: fall back to a check-then-rename.
                if path.exists():
                    return False
                os.replace(tmp, path)
    except OSError as exc:
        raise KeystoreError(f"cannot write key file {path}: {_why(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_directory(directory)
    return True


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
