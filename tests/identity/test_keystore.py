"""The node key file: permissions, atomic writes, encryption, clear failures."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import stat
import tempfile
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kosmesh.identity import (
    CorruptKeyFileError,
    Ed25519PrivateKey,
    KeyFileNotFoundError,
    KeyFilePermissionError,
    KeystoreError,
    PassphraseRequiredError,
    PeerId,
    WrongPassphraseError,
    key_file_is_encrypted,
    keystore,
    load_key,
    load_or_create_key,
    save_key,
)

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")

# Cheap Argon2id settings for most tests; one test uses the (slower) defaults.
FAST = {"opslimit": 1, "memlimit": 64 * 1024}
PASSPHRASE = "correct horse battery staple"
SPEC_ED25519_PRIVATE = bytes.fromhex(
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
    "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_protobuf(SPEC_ED25519_PRIVATE)


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "node.key"


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _doc(path: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads(path.read_text())
    return loaded


def _rewrite(path: Path, doc: dict[str, object]) -> None:
    path.write_text(json.dumps(doc))
    os.chmod(path, 0o600)


# --------------------------------------------------------------------------- plain files


@posix_only
def test_save_plain_round_trip_mode_0600(key: Ed25519PrivateKey, key_path: Path, open_umask: None) -> None:
    save_key(key_path, key)
    assert _mode(key_path) == 0o600  # even with umask 0
    assert load_key(key_path).seed == key.seed
    doc = _doc(key_path)
    assert doc["format"] == "kosmesh-node-key"
    assert doc["version"] == 1
    assert doc["type"] == "ed25519"
    assert doc["encrypted"] is False
    assert doc["peer_id"] == "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
    assert base64.b64decode(str(doc["key"])) == SPEC_ED25519_PRIVATE
    assert not key_file_is_encrypted(key_path)


def test_save_replaces_existing_key(key_path: Path) -> None:
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    save_key(key_path, first)
    save_key(key_path, second)
    assert load_key(key_path).seed == second.seed
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["node.key"]


@posix_only
def test_parent_directories_created_private(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "a" / "b" / "node.key"
    save_key(path, key)
    assert load_key(path).seed == key.seed
    assert _mode(path.parent) & 0o077 == 0


def test_missing_file(key_path: Path) -> None:
    with pytest.raises(KeyFileNotFoundError, match="does not exist"):
        load_key(key_path)


def test_bare_libp2p_protobuf_file_is_accepted(key_path: Path, key: Ed25519PrivateKey) -> None:
    key_path.write_bytes(SPEC_ED25519_PRIVATE)
    os.chmod(key_path, 0o600)
    assert load_key(key_path).seed == key.seed
    assert not key_file_is_encrypted(key_path)


# --------------------------------------------------------------------------- encryption


def test_encrypted_round_trip_with_default_kdf(key: Ed25519PrivateKey, key_path: Path) -> None:
    save_key(key_path, key, PASSPHRASE)
    raw = key_path.read_bytes()
    for secret in (key.seed, key.to_protobuf()):
        assert secret.hex().encode() not in raw
        assert base64.b64encode(secret) not in raw
    assert PASSPHRASE.encode() not in raw
    doc = _doc(key_path)
    assert doc["encrypted"] is True
    assert "key" not in doc
    assert doc["kdf"] == {
        "name": "argon2id",
        "salt": doc["kdf"]["salt"],  # type: ignore[index]
        "opslimit": keystore.DEFAULT_OPSLIMIT,
        "memlimit": keystore.DEFAULT_MEMLIMIT,
    }
    assert doc["cipher"] == "xsalsa20-poly1305"
    assert key_file_is_encrypted(key_path)
    assert load_key(key_path, PASSPHRASE).seed == key.seed


def test_new_files_use_the_moderate_preset() -> None:
    """A key at rest gets libsodium's MODERATE cost (issue 9), and reading admits every preset."""
    argon2id = keystore.nacl.pwhash.argon2id
    assert (keystore.DEFAULT_OPSLIMIT, keystore.DEFAULT_MEMLIMIT) == (
        argon2id.OPSLIMIT_MODERATE,
        argon2id.MEMLIMIT_MODERATE,
    )
    for ops, mem in (
        (argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),
        (argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),
        (argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),
    ):
        assert keystore.MIN_OPSLIMIT <= ops <= keystore.MAX_OPSLIMIT
        assert keystore.MIN_MEMLIMIT <= mem <= keystore.MAX_MEMLIMIT


def test_a_file_written_at_the_interactive_preset_still_opens(key: Ed25519PrivateKey, key_path: Path) -> None:
    """Files written before issue 9 (INTERACTIVE): their cost is read from the file."""
    argon2id = keystore.nacl.pwhash.argon2id
    save_key(key_path, key, PASSPHRASE, opslimit=argon2id.OPSLIMIT_INTERACTIVE, memlimit=argon2id.MEMLIMIT_INTERACTIVE)
    assert _doc(key_path)["kdf"]["memlimit"] == argon2id.MEMLIMIT_INTERACTIVE  # type: ignore[index]
    assert load_key(key_path, PASSPHRASE).seed == key.seed
    again, created = load_or_create_key(key_path, PASSPHRASE)
    assert not created and again.seed == key.seed
    with pytest.raises(WrongPassphraseError):
        load_key(key_path, "not it")


def test_two_encryptions_differ(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    save_key(tmp_path / "a", key, PASSPHRASE, **FAST)
    save_key(tmp_path / "b", key, PASSPHRASE, **FAST)
    a, b = _doc(tmp_path / "a"), _doc(tmp_path / "b")
    assert a["ciphertext"] != b["ciphertext"]
    assert a["kdf"] != b["kdf"]  # fresh salt


def test_wrong_passphrase(key: Ed25519PrivateKey, key_path: Path) -> None:
    save_key(key_path, key, PASSPHRASE, **FAST)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase") as info:
        load_key(key_path, "Tr0ub4dor&3")
    assert "Tr0ub4dor" not in str(info.value)
    assert PASSPHRASE not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_passphrase_required(key: Ed25519PrivateKey, key_path: Path) -> None:
    save_key(key_path, key, PASSPHRASE, **FAST)
    with pytest.raises(PassphraseRequiredError, match="passphrase is required"):
        load_key(key_path)


def test_passphrase_ignored_for_plain_file(key: Ed25519PrivateKey, key_path: Path) -> None:
    save_key(key_path, key)
    assert load_key(key_path, "anything").seed == key.seed


def test_empty_passphrase_refused(key: Ed25519PrivateKey, key_path: Path) -> None:
    with pytest.raises(KeystoreError, match="empty passphrase"):
        save_key(key_path, key, "")
    assert not key_path.exists()


def test_passphrase_unicode_normalisation(key: Ed25519PrivateKey, key_path: Path) -> None:
    composed = "caf\u00e9 \u00fcber"
    save_key(key_path, key, composed, **FAST)
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert load_key(key_path, decomposed).seed == key.seed


def test_kdf_cost_bounds_on_save(key: Ed25519PrivateKey, key_path: Path) -> None:
    with pytest.raises(KeystoreError, match="memlimit"):
        save_key(key_path, key, PASSPHRASE, opslimit=1, memlimit=1 << 40)
    with pytest.raises(KeystoreError, match="opslimit"):
        save_key(key_path, key, PASSPHRASE, opslimit=0, memlimit=64 * 1024)


# --------------------------------------------------------------------------- tampering


def test_tampered_ciphertext(key: Ed25519PrivateKey, key_path: Path) -> None:
    save_key(key_path, key, PASSPHRASE, **FAST)
    doc = _doc(key_path)
    ct = bytearray(base64.b64decode(str(doc["ciphertext"])))
    ct[20] ^= 0x01
    doc["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    _rewrite(key_path, doc)
    with pytest.raises(WrongPassphraseError, match="altered"):
        load_key(key_path, PASSPHRASE)


def test_tampered_kdf_params_fail_authentication(key: Ed25519PrivateKey, key_path: Path) -> None:
    save_key(key_path, key, PASSPHRASE, **FAST)
    doc = _doc(key_path)
    doc["kdf"]["opslimit"] = 2  # type: ignore[index]
    _rewrite(key_path, doc)
    with pytest.raises(WrongPassphraseError):
        load_key(key_path, PASSPHRASE)


def test_hostile_kdf_cost_refused_without_running_it(key: Ed25519PrivateKey, key_path: Path) -> None:
    save_key(key_path, key, PASSPHRASE, **FAST)
    doc = _doc(key_path)
    doc["kdf"]["memlimit"] = 1 << 42  # type: ignore[index]
    _rewrite(key_path, doc)
    with pytest.raises(CorruptKeyFileError, match="memlimit"):
        load_key(key_path, PASSPHRASE)


def test_tampered_peer_id(key: Ed25519PrivateKey, key_path: Path) -> None:
    save_key(key_path, key)
    doc = _doc(key_path)
    doc["peer_id"] = str(PeerId.from_public_key(Ed25519PrivateKey.generate().public_key))
    _rewrite(key_path, doc)
    with pytest.raises(CorruptKeyFileError, match="peer_id does not match"):
        load_key(key_path)


def test_tampered_plain_key_bytes(key: Ed25519PrivateKey, key_path: Path) -> None:
    save_key(key_path, key)
    doc = _doc(key_path)
    pb = bytearray(base64.b64decode(str(doc["key"])))
    pb[-1] ^= 0x01  # the embedded public key no longer matches the seed
    doc["key"] = base64.b64encode(bytes(pb)).decode()
    _rewrite(key_path, doc)
    with pytest.raises(CorruptKeyFileError, match="malformed") as info:
        load_key(key_path)
    assert key.seed.hex() not in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(version=2), "version"),
        (lambda d: d.update(version=True), "version"),
        (lambda d: d.update(version=1.0), "version"),
        (lambda d: d.update(format="something-else"), "not a kosmesh key file"),
        (lambda d: d.update(type="rsa"), "key type"),
        (lambda d: d.update(encrypted="no"), "encrypted"),
        (lambda d: d.update(key="!!not base64!!"), "base64"),
        (lambda d: d.pop("key"), "'key'"),
    ],
)
def test_corrupted_headers(key: Ed25519PrivateKey, key_path: Path, mutate: object, message: str) -> None:
    save_key(key_path, key)
    doc = _doc(key_path)
    mutate(doc)  # type: ignore[operator]
    _rewrite(key_path, doc)
    with pytest.raises(CorruptKeyFileError, match=message):
        load_key(key_path)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(cipher="aes-256-gcm"),
        lambda d: d.update(kdf={"name": "scrypt"}),
        lambda d: d.update(nonce=base64.b64encode(b"short").decode()),
        lambda d: d.update(ciphertext=base64.b64encode(b"x").decode()),
        lambda d: d["kdf"].update(salt=base64.b64encode(b"salt").decode()),
        lambda d: d["kdf"].update(opslimit="2"),
    ],
)
def test_corrupted_encrypted_headers(key: Ed25519PrivateKey, key_path: Path, mutate: object) -> None:
    save_key(key_path, key, PASSPHRASE, **FAST)
    doc = _doc(key_path)
    mutate(doc)  # type: ignore[operator]
    _rewrite(key_path, doc)
    with pytest.raises(CorruptKeyFileError):
        load_key(key_path, PASSPHRASE)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b"\xff\xfe", b"\x08\x01\x12", b"x" * 20_000])
def test_garbage_files(key_path: Path, content: bytes) -> None:
    key_path.write_bytes(content)
    os.chmod(key_path, 0o600)
    with pytest.raises(CorruptKeyFileError):
        load_key(key_path)


def test_truncated_file(key: Ed25519PrivateKey, key_path: Path) -> None:
    save_key(key_path, key, PASSPHRASE, **FAST)
    data = key_path.read_bytes()
    key_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptKeyFileError):
        load_key(key_path, PASSPHRASE)


def test_directory_is_not_a_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="not a regular file"):
        load_key(tmp_path)


# --------------------------------------------------------------------------- permissions


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601, 0o610, 0o666])
def test_too_open_permissions_refused(key: Ed25519PrivateKey, key_path: Path, mode: int) -> None:
    save_key(key_path, key)
    os.chmod(key_path, mode)
    with pytest.raises(KeyFilePermissionError, match="chmod 600") as info:
        load_key(key_path)
    assert f"{mode:04o}" in str(info.value)
    with pytest.raises(KeyFilePermissionError):
        load_or_create_key(key_path)
    os.chmod(key_path, 0o600)
    assert load_key(key_path).seed == key.seed


@posix_only
def test_owner_only_modes_accepted(key: Ed25519PrivateKey, key_path: Path) -> None:
    save_key(key_path, key)
    os.chmod(key_path, 0o400)
    assert load_key(key_path).seed == key.seed


# --------------------------------------------------------------------------- atomicity


def test_atomic_write_leaves_no_temp_files(key: Ed25519PrivateKey, tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    for passphrase in (None, PASSPHRASE, None):
        save_key(path, key, passphrase, **FAST)
        assert [p.name for p in tmp_path.iterdir()] == ["node.key"]


def test_failed_write_keeps_old_key_and_cleans_up(
    key: Ed25519PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "node.key"
    save_key(path, key)
    before = path.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(KeystoreError, match="cannot write key file"):
        save_key(path, Ed25519PrivateKey.generate())
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"]


def test_temp_file_created_with_0600_from_the_start(
    key: Ed25519PrivateKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy_open(path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        seen.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", spy_open)
    save_key(tmp_path / "node.key", key)
    creates = [(p, f, m) for p, f, m in seen if f & os.O_CREAT]
    assert len(creates) == 1
    tmp_name, flags, mode = creates[0]
    assert mode == 0o600
    assert flags & os.O_EXCL
    assert Path(tmp_name).parent == tmp_path
    assert Path(tmp_name).name != "node.key"


# --------------------------------------------------------------------------- load_or_create


@posix_only
def test_load_or_create(tmp_path: Path) -> None:
    path = tmp_path / "state" / "node.key"
    key, created = load_or_create_key(path)
    assert created
    assert _mode(path) == 0o600
    again, created_again = load_or_create_key(path)
    assert not created_again
    assert again.seed == key.seed


def test_load_or_create_encrypted(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    key, created = load_or_create_key(path, PASSPHRASE, **FAST)
    assert created and key_file_is_encrypted(path)
    again, created_again = load_or_create_key(path, PASSPHRASE)
    assert not created_again and again.seed == key.seed
    with pytest.raises(WrongPassphraseError):
        load_or_create_key(path, "wrong")
    with pytest.raises(PassphraseRequiredError):
        load_or_create_key(path)


def test_load_or_create_never_replaces_a_damaged_key(key_path: Path) -> None:
    key_path.write_bytes(b"{not json")
    os.chmod(key_path, 0o600)
    with pytest.raises(CorruptKeyFileError):
        load_or_create_key(key_path)
    assert key_path.read_bytes() == b"{not json"


def test_load_or_create_loses_race_gracefully(
    key: Ed25519PrivateKey, key_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process creates the file between our 'missing' check and our write."""
    real_load = keystore.load_key
    calls = {"n": 0}

    def racing_load(path: Path, passphrase: str | None = None) -> Ed25519PrivateKey:
        calls["n"] += 1
        if calls["n"] == 1:
            save_key(key_path, key)  # the other process wins the race
            raise KeyFileNotFoundError("simulated")
        return real_load(path, passphrase)

    monkeypatch.setattr(keystore, "load_key", racing_load)
    loaded, created = keystore.load_or_create_key(key_path)
    assert not created
    assert loaded.seed == key.seed
    assert load_key(key_path).seed == key.seed
    assert [p.name for p in key_path.parent.iterdir()] == ["node.key"]


# --------------------------------------------------------------------------- hostile files


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_file_contents_raise_only_keystore_errors(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "node.key"
        path.write_bytes(content)
        os.chmod(path, 0o600)
        with contextlib.suppress(KeystoreError):
            load_key(path, PASSPHRASE)


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["format", "version", "type", "encrypted", "key", "kdf", "nonce", "ciphertext", "cipher"]
        ),
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=20)
        | st.lists(st.integers(), max_size=3),
    )
)
def test_random_json_headers_raise_only_keystore_errors(doc: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "node.key"
        path.write_text(json.dumps({"format": "kosmesh-node-key", **doc}))
        os.chmod(path, 0o600)
        with contextlib.suppress(KeystoreError):
            load_key(path, PASSPHRASE)
