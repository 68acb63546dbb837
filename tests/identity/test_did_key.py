"""did:key: W3C CCG did:key spec Ed25519 vectors, round trips, strict parsing."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kosmesh.codec.base58 import b58decode, b58encode
from kosmesh.identity import (
    DidKeyError,
    Ed25519PrivateKey,
    Ed25519PublicKey,
    PeerId,
    did_key_document,
    did_key_from_peer_id,
    did_key_from_public_key,
    peer_id_from_did_key,
    public_key_from_did_key,
)
from kosmesh.identity.did_key import public_key_from_multibase, x25519_multibase_from_public_key

# did:key spec test vectors (test-vectors/ed25519-x25519.json): seed -> DID, with the
# Ed25519 public key as publicKeyBase58 (or, for the last one, as a JWK "x" in base64url)
# and the derived X25519 key-agreement key.
SPEC_VECTORS = [
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
        "4zvwRjXUKGfvwnParsHAS3HuSVzV5cA4McphgmoCtajS",
        "z6LShs9GGnqk85isEBzzshkuVWrVKsRp24GnDuHk8QWkARMW",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000001",
        "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG",
        "6ASf5EcmmEHTgDJ4X4ZT5vT6iHVJBXPg5AN5YoTCpGWt",
        None,
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000002",
        "did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf",
        "8pM1DN3RiT8vbom5u1sNryaNT1nyL8CTTW3b5PwWXRBH",
        None,
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000003",
        "did:key:z6MkvqoYXQfDDJRv8L4wKzxYeuKyVZBfi9Qo6Ro8MiLH3kDQ",
        "HPYVwAQmskwT1qEEeRzhoomyfyupJGASQQtCXSNG8XS2",
        None,
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000005",
        "did:key:z6MkwYMhwTvsq376YBAcJHy3vyRWzBgn5vKfVqqDCgm7XVKU",
        b58encode(base64.urlsafe_b64decode("_eT7oDCtAC98L31MMx9J0T-w7HR-zuvsY08f9MvKne8=")),
        "z6LSmArkPSdTKjEESsExHRrSwUzYUHgDuWDewXc4nocasvFU",
    ),
]

# The spec's main example and its Ed25519 test vector (keys not listed, DIDs only).
SPEC_EXAMPLE_DID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
SPEC_EXAMPLE_X25519 = "z6LSj72tK8brWgZja8NLRwPigth2T9QRiG1uH9oKZuKjdh9p"
SPEC_ED25519_DID = "did:key:z6Mkf5rGMoatrSj1f4CyvuHBeXJELe9RPdzo2PKGNCKVtZxP"
# Spec examples for other key types: valid did:keys that kosmesh must refuse clearly.
SPEC_SECP256K1_DID = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"
SPEC_P256_DID = "did:key:zDnaerx9CtbPJ1q36T5Ln5wYt3MQYeGRG5ehnPAmxcf5mDZpv"


@pytest.mark.parametrize(("seed", "did", "public_b58", "x25519"), SPEC_VECTORS)
def test_spec_vectors(seed: str, did: str, public_b58: str, x25519: str | None) -> None:
    key = Ed25519PrivateKey(bytes.fromhex(seed)).public_key
    assert key.raw == b58decode(public_b58)
    assert did_key_from_public_key(key) == did
    assert public_key_from_did_key(did) == key
    if x25519 is not None:
        assert x25519_multibase_from_public_key(key) == x25519
        doc = did_key_document(did, include_key_agreement=True)
        assert doc["keyAgreement"] == [f"{did}#{x25519}"]


@pytest.mark.parametrize("did", [SPEC_EXAMPLE_DID, SPEC_ED25519_DID])
def test_spec_example_dids_parse_and_round_trip(did: str) -> None:
    key = public_key_from_did_key(did)
    assert did_key_from_public_key(key) == did
    assert did_key_from_peer_id(peer_id_from_did_key(did)) == did


def test_document_shape_matches_spec_example() -> None:
    did = SPEC_EXAMPLE_DID
    vm_id = did + "#" + did.removeprefix("did:key:")
    doc = did_key_document(did, include_key_agreement=True)
    assert doc["id"] == did
    assert doc["@context"][0] == "https://www.w3.org/ns/did/v1"
    assert doc["verificationMethod"][0] == {
        "id": vm_id,
        "type": "Multikey",
        "controller": did,
        "publicKeyMultibase": did.removeprefix("did:key:"),
    }
    for relation in ("authentication", "assertionMethod", "capabilityInvocation", "capabilityDelegation"):
        assert doc[relation] == [vm_id]
    x_vm = doc["verificationMethod"][1]
    assert x_vm["id"] == f"{did}#{SPEC_EXAMPLE_X25519}"
    assert x_vm["publicKeyMultibase"] == SPEC_EXAMPLE_X25519
    assert doc["keyAgreement"] == [x_vm["id"]]


def test_document_ed25519_2020_format_and_minimal_default() -> None:
    doc = did_key_document(SPEC_EXAMPLE_DID, key_format="Ed25519VerificationKey2020")
    assert doc["verificationMethod"][0]["type"] == "Ed25519VerificationKey2020"
    assert "https://w3id.org/security/suites/ed25519-2020/v1" in doc["@context"]
    assert "keyAgreement" not in doc
    assert len(doc["verificationMethod"]) == 1
    with pytest.raises(DidKeyError):
        did_key_document(SPEC_EXAMPLE_DID, key_format="JsonWebKey2020")  # type: ignore[arg-type]
    with pytest.raises(DidKeyError):
        did_key_document("did:web:example.com")


def test_peer_id_conversions() -> None:
    key = Ed25519PrivateKey(bytes(32)).public_key
    did = did_key_from_public_key(key)
    peer = PeerId.from_public_key(key)
    assert peer_id_from_did_key(did) == peer
    assert did_key_from_peer_id(peer) == did
    assert did_key_from_peer_id(str(peer)) == did
    assert did_key_from_peer_id(peer.to_cid()) == did
    with pytest.raises(DidKeyError, match="does not embed"):
        did_key_from_peer_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
    with pytest.raises(ValueError):
        did_key_from_peer_id("not a peer id")


def _did(payload: bytes) -> str:
    return "did:key:z" + b58encode(payload)


GOOD_RAW = b58decode("4zvwRjXUKGfvwnParsHAS3HuSVzV5cA4McphgmoCtajS")


@pytest.mark.parametrize(
    ("did", "message"),
    [
        ("", "not a DID"),
        ("z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "not a DID"),
        ("DID:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "not a DID"),
        ("did:web:example.com", "unsupported DID method 'web'"),
        ("did:KEY:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "unsupported DID method"),
        ("did:key:1:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "version"),
        (SPEC_EXAMPLE_DID + "#z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "DID URL"),
        (SPEC_EXAMPLE_DID + "/path", "DID URL"),
        ("did:key:", "empty"),
        ("did:key:u7QE7aie8zrakLWKjqNAqbw1zZTIVdx3iQ6Y6wEihi1naKQ", "multibase prefix 'u'"),
        ("did:key:f" + "ed01" + GOOD_RAW.hex(), "multibase prefix 'f'"),
        ("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2do0", "base58"),
        ("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doKK", "unsupported key type"),
        (_did(b"\xed\x01" + GOOD_RAW[:31]), "wrong key length: an ed25519-pub key is 32 bytes, got 31"),
        (_did(b"\xed\x01"), "wrong key length"),
        (_did(b"\xed\x01" + GOOD_RAW + b"\x00"), "wrong key length"),
        (_did(b"\xec\x01" + GOOD_RAW), "x25519-pub"),
        (SPEC_SECP256K1_DID, "secp256k1-pub"),
        (SPEC_P256_DID, "p256-pub"),
        (_did(b"\x00" + GOOD_RAW), "0x0"),
        (_did(b"\xed"), "multicodec header"),
        (_did(b"\xed\x81\x80\x00" + GOOD_RAW), "multicodec"),
        (_did(b"\xed\x01" + bytes(32)), "not a valid Ed25519 public key"),
        ("did:key:z" + "1" * 300, "too long"),
    ],
)
def test_strict_parsing_with_clear_messages(did: str, message: str) -> None:
    with pytest.raises(DidKeyError, match=message.replace("(", r"\(")):
        public_key_from_did_key(did)


def test_non_string_input_rejected() -> None:
    with pytest.raises(DidKeyError):
        public_key_from_did_key(b"did:key:z6Mk")  # type: ignore[arg-type]
    with pytest.raises(DidKeyError):
        public_key_from_multibase(None)  # type: ignore[arg-type]


def test_invalid_point_cannot_be_encoded() -> None:
    with pytest.raises(DidKeyError, match="not a valid Ed25519"):
        did_key_from_public_key(Ed25519PublicKey(bytes(32)))


@given(st.binary(min_size=32, max_size=32))
def test_round_trip_for_random_keys(seed: bytes) -> None:
    key = Ed25519PrivateKey(seed).public_key
    did = did_key_from_public_key(key)
    assert did.startswith("did:key:z6Mk")
    assert public_key_from_did_key(did) == key
    assert peer_id_from_did_key(did) == PeerId.from_public_key(key)
    assert did_key_from_peer_id(PeerId.from_public_key(key)) == did
    doc = did_key_document(did)
    assert doc["verificationMethod"][0]["publicKeyMultibase"] == did.removeprefix("did:key:")


@given(st.text(max_size=120))
def test_hostile_text_raises_only_did_key_errors(text: str) -> None:
    for candidate in (text, "did:key:" + text, "did:key:z" + text, "did:key:z6Mk" + text):
        try:
            key = public_key_from_did_key(candidate)
        except DidKeyError:
            continue
        assert did_key_from_public_key(key) == candidate


@given(st.binary(max_size=64))
def test_hostile_payloads_raise_only_did_key_errors(payload: bytes) -> None:
    for candidate in (_did(payload), _did(b"\xed\x01" + payload)):
        try:
            key = public_key_from_did_key(candidate)
        except DidKeyError:
            continue
        assert did_key_from_public_key(key) == candidate
