"""The ``did:key`` spelling of a node identity (W3C CCG did:key method, Ed25519 only).

A did:key is ``did:key:`` + multibase base58btc (prefix ``z``) of the multicodec
``ed25519-pub`` header (code 0xed, the varint bytes ``ed 01``) followed by the 32-byte raw
public key, so every Ed25519 did:key starts with ``did:key:z6Mk``.

Parsing is strict and canonical: only ``did:key:z…`` with exactly three components (the
optional ``did:key:<version>:z…`` form is refused, so one key has one DID string), only the
ed25519-pub codec, exactly 32 key bytes that form a valid Ed25519 point, and text that
re-encodes to itself. Every failure raises :class:`DidKeyError` (a ``ValueError``).
"""

from __future__ import annotations

from typing import Any, Literal

import nacl.bindings
import nacl.exceptions

from kosmesh.codec.base58 import b58decode, b58encode
from kosmesh.codec.varint import VarintError, decode_uvarint, encode_uvarint
from kosmesh.identity.keys import Ed25519PublicKey
from kosmesh.identity.peer_id import PeerId

DID_KEY_PREFIX = "did:key:"
MULTIBASE_BASE58BTC = "z"
MULTICODEC_ED25519_PUB = 0xED
MULTICODEC_X25519_PUB = 0xEC
ED25519_PUBLIC_KEY_BYTES = 32
# Longest text we look at: an Ed25519 did:key is 56 characters; this leaves room for a
# clear "wrong codec"/"wrong length" message on other key types without unbounded work.
MAX_DID_CHARS = 256

# Public-key multicodecs a did:key may carry (multicodec table), for clear error messages.
_KNOWN_KEY_CODECS = {
    0xE7: "secp256k1-pub",
    0xEA: "bls12_381-g1-pub",
    0xEB: "bls12_381-g2-pub",
    0xEC: "x25519-pub",
    0xED: "ed25519-pub",
    0x1200: "p256-pub",
    0x1201: "p384-pub",
    0x1202: "p521-pub",
    0x1205: "rsa-pub",
    0x1300: "ed25519-priv",
}

_ED25519_HEADER = encode_uvarint(MULTICODEC_ED25519_PUB)  # b"\xed\x01"
_X25519_HEADER = encode_uvarint(MULTICODEC_X25519_PUB)  # b"\xec\x01"

DID_V1_CONTEXT = "https://www.w3.org/ns/did/v1"
MULTIKEY_CONTEXT = "https://w3id.org/security/multikey/v1"
ED25519_2020_CONTEXT = "https://w3id.org/security/suites/ed25519-2020/v1"
X25519_2020_CONTEXT = "https://w3id.org/security/suites/x25519-2020/v1"

KeyFormat = Literal["Multikey", "Ed25519VerificationKey2020"]


class DidKeyError(ValueError):
    """Text that is not a valid Ed25519 did:key, or a key that cannot be expressed as one."""


def multibase_from_public_key(key: Ed25519PublicKey) -> str:
    """The ``z6Mk…`` multibase/multicodec spelling of ``key`` (the did:key's method-specific id)."""
    _require_valid_point(key.raw)
    return MULTIBASE_BASE58BTC + b58encode(_ED25519_HEADER + key.raw)


def did_key_from_public_key(key: Ed25519PublicKey) -> str:
    """``did:key:z6Mk…`` for an Ed25519 public key.

    Raises :class:`DidKeyError` if the 32 bytes are not a valid Ed25519 point (such a key can
    never have signed anything, and its did:key would not parse).
    """
    return DID_KEY_PREFIX + multibase_from_public_key(key)


def public_key_from_multibase(value: str) -> Ed25519PublicKey:
    """Decode a ``z6Mk…`` multibase ed25519-pub value (a did:key's method-specific id)."""
    if not isinstance(value, str):
        raise DidKeyError("a multibase key must be a string")
    if not value:
        raise DidKeyError("empty multibase key")
    if len(value) > MAX_DID_CHARS:
        raise DidKeyError(f"multibase key is too long ({len(value)} characters)")
    if value[0] != MULTIBASE_BASE58BTC:
        raise DidKeyError(
            f"unsupported multibase prefix {value[0]!r}: did:key uses base58btc, which starts with 'z'"
        )
    try:
        decoded = b58decode(value[1:])
    except ValueError:
        raise DidKeyError("multibase key is not valid base58btc") from None
    try:
        got = decode_uvarint(decoded, 0)
    except VarintError:
        raise DidKeyError("malformed multicodec header") from None
    if got is None:
        raise DidKeyError("multibase key is too short to hold a multicodec header")
    codec, offset = got
    if codec != MULTICODEC_ED25519_PUB:
        name = _KNOWN_KEY_CODECS.get(codec, "unknown codec")
        raise DidKeyError(
            f"unsupported key type: multicodec 0x{codec:x} ({name}); only ed25519-pub (0xed) is supported"
        )
    raw = decoded[offset:]
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise DidKeyError(
            f"wrong key length: an ed25519-pub key is {ED25519_PUBLIC_KEY_BYTES} bytes, got {len(raw)}"
        )
    _require_valid_point(raw)
    # No further canonical-form check is needed: the decoded bytes start with 0xed (no
    # leading zero bytes), so base58 text for them is unique, and the varint is minimal.
    return Ed25519PublicKey(raw)


def public_key_from_did_key(did: str) -> Ed25519PublicKey:
    """Parse ``did:key:z6Mk…`` into its Ed25519 public key; raises :class:`DidKeyError`."""
    if not isinstance(did, str):
        raise DidKeyError("a did:key must be a string")
    if len(did) > MAX_DID_CHARS:
        raise DidKeyError(f"did:key is too long ({len(did)} characters)")
    parts = did.split(":")
    if len(parts) < 3 or parts[0] != "did":
        raise DidKeyError(f"not a DID: {did[:64]!r} (expected 'did:key:z6Mk…')")
    if parts[1] != "key":
        raise DidKeyError(f"unsupported DID method {parts[1][:32]!r}: expected did:key")
    if any(ch in did for ch in "#?/"):
        raise DidKeyError("expected a bare did:key, not a DID URL: remove the path, query or '#' fragment")
    if len(parts) != 3:
        raise DidKeyError("unsupported did:key form: expected exactly 'did:key:z6Mk…' (no version component)")
    return public_key_from_multibase(parts[2])


def peer_id_from_did_key(did: str) -> PeerId:
    """The libp2p peer id of the key named by ``did``."""
    return PeerId.from_public_key(public_key_from_did_key(did))


def did_key_from_peer_id(peer_id: PeerId | str) -> str:
    """The did:key of an Ed25519 peer id (text or :class:`PeerId`).

    Only identity-multihash peer ids (``12D3KooW…``) embed their public key; a hashed peer
    id (``Qm…``) cannot be converted and raises :class:`DidKeyError`. Malformed peer id text
    raises :class:`~kosmesh.identity.peer_id.PeerIdError` (also a ``ValueError``).
    """
    if isinstance(peer_id, str):
        peer_id = PeerId.from_string(peer_id)
    key = peer_id.extract_public_key()
    if key is None:
        raise DidKeyError(f"peer id {peer_id} does not embed an Ed25519 public key, so it has no did:key")
    return did_key_from_public_key(key)


def x25519_multibase_from_public_key(key: Ed25519PublicKey) -> str:
    """The ``z6LS…`` x25519-pub key derived from an Ed25519 key (birational map, RFC 7748)."""
    _require_valid_point(key.raw)
    try:
        x25519 = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(key.raw)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, RuntimeError):
        raise DidKeyError("public key cannot be converted to X25519") from None
    return MULTIBASE_BASE58BTC + b58encode(_X25519_HEADER + bytes(x25519))


def did_key_document(
    did: str, *, key_format: KeyFormat = "Multikey", include_key_agreement: bool = False
) -> dict[str, Any]:
    """Expand ``did:key:z6Mk…`` into its DID document (did:key "Create"/"Read" operation).

    The single verification method ``did#z6Mk…`` (type ``Multikey`` or
    ``Ed25519VerificationKey2020``, ``publicKeyMultibase`` = the method-specific id) is
    referenced from ``authentication``, ``assertionMethod``, ``capabilityInvocation`` and
    ``capabilityDelegation``. With ``include_key_agreement`` the X25519 key derived from
    the Ed25519 key is added as ``did#z6LS…`` under ``keyAgreement``.
    """
    if key_format not in ("Multikey", "Ed25519VerificationKey2020"):
        raise DidKeyError(f"unsupported verification method type {key_format!r}")
    key = public_key_from_did_key(did)
    multibase = did[len(DID_KEY_PREFIX) :]
    vm_id = f"{did}#{multibase}"
    context = [DID_V1_CONTEXT, MULTIKEY_CONTEXT if key_format == "Multikey" else ED25519_2020_CONTEXT]
    document: dict[str, Any] = {
        "@context": context,
        "id": did,
        "verificationMethod": [
            {"id": vm_id, "type": key_format, "controller": did, "publicKeyMultibase": multibase}
        ],
        "authentication": [vm_id],
        "assertionMethod": [vm_id],
        "capabilityInvocation": [vm_id],
        "capabilityDelegation": [vm_id],
    }
    if include_key_agreement:
        x_multibase = x25519_multibase_from_public_key(key)
        x_id = f"{did}#{x_multibase}"
        x_type = "Multikey" if key_format == "Multikey" else "X25519KeyAgreementKey2020"
        if key_format != "Multikey":
            context.append(X25519_2020_CONTEXT)
        document["verificationMethod"].append(
            {"id": x_id, "type": x_type, "controller": did, "publicKeyMultibase": x_multibase}
        )
        document["keyAgreement"] = [x_id]
    return document


def _require_valid_point(raw: bytes) -> None:
    """Reject bytes that are not a canonical, prime-order-subgroup Ed25519 point."""
    if len(raw) != ED25519_PUBLIC_KEY_BYTES or not nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
        raise DidKeyError("not a valid Ed25519 public key (the bytes are not a usable curve point)")
