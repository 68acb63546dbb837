"""Ed25519 keys (PyNaCl / libsodium) and their libp2p protobuf encodings.

libp2p wraps keys in ``message PublicKey { KeyType Type = 1; bytes Data = 2; }``; the
Ed25519 private key's Data is the 64-byte ``seed || public key`` (the legacy 96-byte
``seed || public key || public key`` form is accepted when reading).
"""

from __future__ import annotations

import nacl.exceptions
import nacl.signing

from kosmesh.codec.protobuf import ProtobufError, decode_fields, encode_fields, first_bytes, first_int

KEY_TYPE_ED25519 = 1
KEY_TYPE_NAMES = {0: "RSA", 1: "Ed25519", 2: "Secp256k1", 3: "ECDSA"}


class KeyError_(ValueError):
    """A key could not be decoded or is of an unsupported type."""


class Ed25519PublicKey:
    """An Ed25519 public key; equality and hashing follow the raw 32 bytes."""

    __slots__ = ("_raw", "_verify_key")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise KeyError_("an Ed25519 public key is 32 bytes")
        self._raw = bytes(raw)
        self._verify_key = nacl.signing.VerifyKey(self._raw)

    @property
    def raw(self) -> bytes:
        return self._raw

    def verify(self, signature: bytes, message: bytes) -> bool:
        """True if ``signature`` is this key's Ed25519 signature of ``message``."""
        if len(signature) != 64:
            return False
        try:
            self._verify_key.verify(message, signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            return False
        return True

    def to_protobuf(self) -> bytes:
        return encode_fields([(1, KEY_TYPE_ED25519), (2, self._raw)])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ed25519PublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"Ed25519PublicKey({self._raw.hex()[:16]}…)"


class Ed25519PrivateKey:
    """An Ed25519 signing key. Never logged: ``repr`` shows only the public half."""

    __slots__ = ("_public", "_signing_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise KeyError_("an Ed25519 seed is 32 bytes")
        self._signing_key = nacl.signing.SigningKey(bytes(seed))
        self._public = Ed25519PublicKey(bytes(self._signing_key.verify_key))

    @classmethod
    def generate(cls) -> Ed25519PrivateKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        return bytes(self._signing_key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return self._signing_key.sign(message).signature

    def to_protobuf(self) -> bytes:
        return encode_fields([(1, KEY_TYPE_ED25519), (2, self.seed + self._public.raw)])

    @classmethod
    def from_protobuf(cls, data: bytes) -> Ed25519PrivateKey:
        try:
            fields = decode_fields(data)
        except ProtobufError as exc:
            raise KeyError_(f"malformed private key: {exc}") from None
        key_type = first_int(fields, 1)
        raw = first_bytes(fields, 2)
        if key_type != KEY_TYPE_ED25519 or raw is None or len(raw) not in (32, 64, 96):
            raise KeyError_("not an Ed25519 private key")
        if len(raw) == 96:
            # Legacy libp2p form seed || pubkey || pubkey: the two copies must agree.
            if raw[32:64] != raw[64:]:
                raise KeyError_("legacy private key's two public key copies differ")
            raw = raw[:64]
        key = cls(raw[:32])
        if len(raw) == 64 and raw[32:] != key.public_key.raw:
            raise KeyError_("private key's embedded public key does not match its seed")
        return key

    def __repr__(self) -> str:
        return f"Ed25519PrivateKey(public={self._public!r})"


def decode_public_key(data: bytes) -> Ed25519PublicKey:
    """Decode a libp2p protobuf PublicKey; only Ed25519 is accepted by kosmesh."""
    try:
        fields = decode_fields(data, max_fields=8)
    except ProtobufError as exc:
        raise KeyError_(f"malformed public key: {exc}") from None
    key_type = first_int(fields, 1)
    raw = first_bytes(fields, 2)
    if key_type is None or raw is None:
        raise KeyError_("public key is missing its type or data")
    if key_type != KEY_TYPE_ED25519:
        raise KeyError_(f"unsupported key type {KEY_TYPE_NAMES.get(key_type, key_type)}")
    return Ed25519PublicKey(raw)
