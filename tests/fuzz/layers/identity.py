"""Fuzz targets for identities: peer ids, did:key, key encodings, the key file."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nacl.pwhash
import nacl.secret

from kosmesh.codec.protobuf import encode_fields
from kosmesh.identity import (
    DidKeyError,
    Ed25519PrivateKey,
    Ed25519PublicKey,
    KeyError_,
    KeystoreError,
    PeerId,
    PeerIdError,
    decode_public_key,
    did_key_document,
    did_key_from_peer_id,
    did_key_from_public_key,
    peer_id_from_did_key,
    public_key_from_did_key,
)
from kosmesh.identity.did_key import KeyFormat
from kosmesh.identity.keystore import _decode_key_file, _encode_key_file
from tests.fuzz.inputs import (
    ALICE,
    ALICE_PEER,
    BOB,
    BOB_PEER,
    options,
)
from tests.fuzz.registry import fuzz_target


def _peer_id_seeds() -> dict[str, bytes]:
    hashed = PeerId(bytes((0x12, 32)) + bytes(range(32)))
    return {
        "base58": b"\x00" + str(ALICE_PEER).encode(),
        "sha256-base58": b"\x00" + hashed.to_base58().encode(),
        "multihash": b"\x01" + BOB_PEER.to_bytes(),
        "cid": b"\x02" + ALICE_PEER.to_cid().encode(),
    }


@fuzz_target(_peer_id_seeds)
def peer_id(data: bytes) -> bool:
    """peer id parse from base58btc or CIDv1 text and from multihash bytes; every spelling of what parses
    round-trips, and an inlined key is extracted without raising."""
    opt, body = options(data)
    mode = (opt & 3) % 3
    try:
        if mode == 1:
            peer = PeerId(body)
        else:
            text = body.decode("utf-8", "replace")
            peer = PeerId.from_string(text) if mode == 0 else PeerId.from_cid(text)
    except PeerIdError:
        return False
    assert PeerId(peer.to_bytes()) == peer
    assert PeerId.from_string(peer.to_base58()) == peer
    assert PeerId.from_cid(peer.to_cid()) == peer == PeerId.from_string(peer.to_cid())
    peer.extract_public_key()
    return True


def _did_key_seeds() -> dict[str, bytes]:
    did = did_key_from_public_key(ALICE.public_key).encode()
    return {
        "did-key": b"\x00" + did,
        "did-key-document-2020": bytes([4 | 8]) + did,
        "from-peer-id": b"\x01" + str(BOB_PEER).encode(),
        "from-raw-key": b"\x02" + BOB.public_key.raw,
    }


@fuzz_target(_did_key_seeds)
def did_key(data: bytes) -> bool:
    """did:key parse and DID document expansion, did:key from peer id text, and from raw key bytes; a
    parsed did:key spells itself again."""
    opt, body = options(data)
    mode = (opt & 3) % 3
    if mode == 2:
        try:
            key = Ed25519PublicKey(body)
            did = did_key_from_public_key(key)
        except (KeyError_, DidKeyError):
            return False
        assert public_key_from_did_key(did) == key
        return True
    text = body.decode("utf-8", "replace")
    if mode == 1:
        try:
            did = did_key_from_peer_id(text)
        except (PeerIdError, DidKeyError):
            return False
        assert did_key_from_public_key(public_key_from_did_key(did)) == did
        return True
    key_format: KeyFormat = "Ed25519VerificationKey2020" if opt & 4 else "Multikey"
    try:
        key = public_key_from_did_key(text)
        document = did_key_document(text, key_format=key_format, include_key_agreement=bool(opt & 8))
    except DidKeyError:
        return False
    assert did_key_from_public_key(key) == text and document["id"] == text
    assert peer_id_from_did_key(text) == PeerId.from_public_key(key)
    return True


def _identity_keys_seeds() -> dict[str, bytes]:
    legacy = encode_fields([(1, 1), (2, ALICE.seed + ALICE.public_key.raw * 2)])
    return {
        "public": b"\x00" + ALICE.public_key.to_protobuf(),
        "private": b"\x01" + ALICE.to_protobuf(),
        "private-legacy": b"\x01" + legacy,
    }


@fuzz_target(_identity_keys_seeds)
def identity_keys(data: bytes) -> bool:
    """libp2p PublicKey / PrivateKey protobuf decode (Ed25519 only); what decodes re-encodes to an equal key
    that signs and verifies."""
    opt, body = options(data)
    if opt & 1:
        try:
            private = Ed25519PrivateKey.from_protobuf(body)
        except KeyError_:
            return False
        assert Ed25519PrivateKey.from_protobuf(private.to_protobuf()).public_key == private.public_key
        assert private.public_key.verify(private.sign(b"fuzz"), b"fuzz")
        return True
    try:
        key = decode_public_key(body)
    except KeyError_:
        return False
    assert decode_public_key(key.to_protobuf()) == key
    assert key.verify(bytes(64), b"fuzz") in (True, False)
    return True


_KEY_FILE = Path("fuzz.key")
_PASSPHRASE = "fuzz passphrase"


def _keystore_seeds() -> dict[str, bytes]:
    salt, nonce = bytes(range(nacl.pwhash.argon2id.SALTBYTES)), bytes(range(nacl.secret.SecretBox.NONCE_SIZE))
    opslimit, memlimit = nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN
    secret = nacl.pwhash.argon2id.kdf(32, _PASSPHRASE.encode(), salt, opslimit=opslimit, memlimit=memlimit)
    sealed = nacl.secret.SecretBox(secret).encrypt(ALICE.to_protobuf(), nonce).ciphertext
    encrypted = {
        "format": "kosmesh-node-key",
        "version": 1,
        "type": "ed25519",
        "peer_id": str(ALICE_PEER),
        "encrypted": True,
        "kdf": {"name": "argon2id", "salt": _b64(salt), "opslimit": opslimit, "memlimit": memlimit},
        "cipher": "xsalsa20-poly1305",
        "nonce": _b64(nonce),
        "ciphertext": _b64(sealed),
    }
    return {
        "plain": b"\x00" + _encode_key_file(ALICE, None, opslimit, memlimit),
        "bare-protobuf": b"\x00" + ALICE.to_protobuf(),
        "encrypted": b"\x01" + json.dumps(encrypted, indent=2).encode(),
    }


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _cheap_kdf(body: bytes) -> bool:
    """False when a key file asks Argon2id for more than a fuzz run affords (a documented, bounded cost:
    up to 16 passes over 1 GiB), so the fuzzer does not spend its time there."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return True
    kdf = doc.get("kdf") if isinstance(doc, dict) else None
    if not isinstance(kdf, dict):
        return True
    ops, mem = kdf.get("opslimit"), kdf.get("memlimit")
    return not (isinstance(ops, int) and isinstance(mem, int) and (ops > 2 or mem > 1 << 20))


@fuzz_target(_keystore_seeds)
def keystore(data: bytes) -> bool:
    """Node key file decode (JSON, passphrase-encrypted JSON, bare libp2p protobuf); only KeystoreError
    escapes, and a decoded key writes out and reads back the same."""
    opt, body = options(data)
    passphrase = _PASSPHRASE if opt & 1 else None
    if passphrase is not None and not _cheap_kdf(body):
        return False
    try:
        key = _decode_key_file(body, passphrase, _KEY_FILE)
    except KeystoreError:
        return False
    again = _decode_key_file(_encode_key_file(key, None, 0, 0), None, _KEY_FILE)
    assert again.public_key == key.public_key
    return True
