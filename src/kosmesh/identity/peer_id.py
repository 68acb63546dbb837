"""libp2p PeerId: the identity multihash of the protobuf-encoded public key.

For Ed25519 keys the protobuf is 36 bytes, short enough to be inlined with the identity
hash (code 0x00), so the text form ``12D3KooW…`` embeds the public key itself. The CIDv1
spelling is ``b`` + base32(0x01 0x72 multihash) (codec 0x72 = libp2p-key).
"""

from __future__ import annotations

import base64
import hashlib

from kosmesh.codec.base58 import b58decode, b58encode
from kosmesh.codec.varint import VarintError, decode_uvarint
from kosmesh.identity.keys import Ed25519PublicKey, KeyError_, decode_public_key

MULTIHASH_IDENTITY = 0x00
MULTIHASH_SHA2_256 = 0x12
CID_VERSION_1 = 0x01
CODEC_LIBP2P_KEY = 0x72
MAX_INLINE_KEY_BYTES = 42


class PeerIdError(ValueError):
    """Text or bytes that are not a valid peer id."""


class PeerId:
    """A peer id (its multihash bytes). Immutable, hashable, ordered by bytes."""

    __slots__ = ("_bytes", "_text")

    def __init__(self, multihash: bytes) -> None:
        _check_multihash(multihash)
        self._bytes = bytes(multihash)
        self._text = b58encode(self._bytes)

    @classmethod
    def from_public_key(cls, key: Ed25519PublicKey) -> PeerId:
        encoded = key.to_protobuf()
        if len(encoded) <= MAX_INLINE_KEY_BYTES:
            return cls(bytes((MULTIHASH_IDENTITY, len(encoded))) + encoded)
        return cls(bytes((MULTIHASH_SHA2_256, 32)) + hashlib.sha256(encoded).digest())

    @classmethod
    def from_string(cls, text: str) -> PeerId:
        """Parse the base58btc form (``12D3KooW…``/``Qm…``) or the CIDv1 form (``bafz…``)."""
        if not isinstance(text, str) or not text:
            raise PeerIdError("empty peer id")
        if text[0] in "1Q":
            try:
                return cls(b58decode(text))
            except ValueError as exc:
                raise PeerIdError(f"invalid peer id {text[:60]!r}: {exc}") from None
        if text[0] == "b":
            return cls.from_cid(text)
        raise PeerIdError(f"invalid peer id {text[:60]!r}")

    @classmethod
    def from_cid(cls, text: str) -> PeerId:
        """Parse a CIDv1 peer id in base32 multibase (``b…``, e.g. ``bafz…``)."""
        if not isinstance(text, str) or not text.startswith("b"):
            raise PeerIdError("CID peer id must use the base32 multibase prefix 'b'")
        body = text[1:].upper()
        try:
            raw = base64.b32decode(body + "=" * (-len(body) % 8))
        except ValueError:
            raise PeerIdError("CID is not valid base32") from None
        try:
            got = decode_uvarint(raw, 0)
            if got is None or got[0] != CID_VERSION_1:
                raise PeerIdError("not a CIDv1")
            got2 = decode_uvarint(raw, got[1])
            if got2 is None or got2[0] != CODEC_LIBP2P_KEY:
                raise PeerIdError("CID codec is not libp2p-key")
        except VarintError:
            raise PeerIdError("malformed CID") from None
        return cls(raw[got2[1] :])

    def to_bytes(self) -> bytes:
        return self._bytes

    def to_base58(self) -> str:
        return self._text

    def to_cid(self) -> str:
        raw = bytes((CID_VERSION_1, CODEC_LIBP2P_KEY)) + self._bytes
        return "b" + base64.b32encode(raw).decode().lower().rstrip("=")

    def extract_public_key(self) -> Ed25519PublicKey | None:
        """The public key inlined in an identity multihash, or None for hashed ids.

        Only the canonical spelling yields a key: a protobuf with extra or repeated fields decodes
        to the same key under another id, which would split anything keyed by peer id (trust).
        """
        if self._bytes[0] != MULTIHASH_IDENTITY:
            return None
        try:
            key = decode_public_key(self._bytes[2:])
        except KeyError_:
            return None
        return key if key.to_protobuf() == self._bytes[2:] else None

    def matches(self, key: Ed25519PublicKey) -> bool:
        return PeerId.from_public_key(key) == self

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"PeerId({self._text})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PeerId) and other._bytes == self._bytes

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, PeerId):
            return NotImplemented
        return self._bytes < other._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)


def _check_multihash(data: bytes) -> None:
    if len(data) < 2 or len(data) > 2 + MAX_INLINE_KEY_BYTES + 32:
        raise PeerIdError("peer id has an impossible length")
    code, length = data[0], data[1]
    if code == MULTIHASH_IDENTITY:
        if length > MAX_INLINE_KEY_BYTES or len(data) != 2 + length:
            raise PeerIdError("malformed identity multihash")
    elif code == MULTIHASH_SHA2_256:
        if length != 32 or len(data) != 34:
            raise PeerIdError("malformed sha2-256 multihash")
    else:
        raise PeerIdError(f"unsupported multihash code 0x{code:02x}")
