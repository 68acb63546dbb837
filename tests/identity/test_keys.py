"""Ed25519 keys: RFC 8032 vectors, the libp2p protobuf encodings (peer-ids spec vectors)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kosmesh.codec.protobuf import encode_fields
from kosmesh.identity import Ed25519PrivateKey, Ed25519PublicKey, KeyError_, decode_public_key

# RFC 8032 section 7.1, TEST 1-3: (secret key, public key, message, signature).
RFC8032_VECTORS = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]

# libp2p specs, peer-ids/peer-ids.md "Test vectors": Ed25519 PrivateKey / PublicKey protobufs.
SPEC_ED25519_PRIVATE = bytes.fromhex(
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
    "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
SPEC_ED25519_PUBLIC = bytes.fromhex(
    "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
# The same spec table's secp256k1 public key: a key type kosmesh does not accept.
SPEC_SECP256K1_PUBLIC = bytes.fromhex(
    "08021221037777e994e452c21604f91de093ce415f5432f701dd8cd1a7a6fea0e630bfca99"
)


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032_VECTORS)
def test_rfc8032_vectors(seed: str, public: str, message: str, signature: str) -> None:
    key = Ed25519PrivateKey(bytes.fromhex(seed))
    assert key.public_key.raw == bytes.fromhex(public)
    assert key.sign(bytes.fromhex(message)) == bytes.fromhex(signature)
    assert key.public_key.verify(bytes.fromhex(signature), bytes.fromhex(message))


def test_verify_rejects_bad_signatures() -> None:
    _seed, public, message, signature = RFC8032_VECTORS[1]
    pub = Ed25519PublicKey(bytes.fromhex(public))
    sig = bytearray(bytes.fromhex(signature))
    msg = bytes.fromhex(message)
    assert not pub.verify(bytes(sig), msg + b"!")
    sig[0] ^= 1
    assert not pub.verify(bytes(sig), msg)
    assert not pub.verify(bytes(sig[:63]), msg)
    assert not pub.verify(b"", msg)


def test_spec_private_key_vector_decodes_to_spec_public_key() -> None:
    key = Ed25519PrivateKey.from_protobuf(SPEC_ED25519_PRIVATE)
    assert key.public_key.to_protobuf() == SPEC_ED25519_PUBLIC
    assert key.to_protobuf() == SPEC_ED25519_PRIVATE
    assert decode_public_key(SPEC_ED25519_PUBLIC) == key.public_key


def test_legacy_96_byte_private_key_form() -> None:
    key = Ed25519PrivateKey.from_protobuf(SPEC_ED25519_PRIVATE)
    legacy = encode_fields([(1, 1), (2, key.seed + key.public_key.raw * 2)])
    assert Ed25519PrivateKey.from_protobuf(legacy).seed == key.seed
    other = Ed25519PrivateKey(bytes(32)).public_key.raw
    bad = encode_fields([(1, 1), (2, key.seed + key.public_key.raw + other)])
    with pytest.raises(KeyError_):
        Ed25519PrivateKey.from_protobuf(bad)


def test_private_key_with_mismatched_public_half_is_rejected() -> None:
    key = Ed25519PrivateKey.from_protobuf(SPEC_ED25519_PRIVATE)
    other = Ed25519PrivateKey(bytes(32)).public_key.raw
    with pytest.raises(KeyError_, match="does not match"):
        Ed25519PrivateKey.from_protobuf(encode_fields([(1, 1), (2, key.seed + other)]))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x08",
        SPEC_ED25519_PUBLIC[:-1],  # truncated
        encode_fields([(1, 0), (2, b"\x01" * 64)]),  # RSA type
        encode_fields([(1, 1), (2, b"\x01" * 33)]),  # wrong length
        encode_fields([(1, 1)]),  # no data
    ],
)
def test_malformed_private_keys_raise_key_error(data: bytes) -> None:
    with pytest.raises(KeyError_):
        Ed25519PrivateKey.from_protobuf(data)


def test_unsupported_public_key_type_is_named() -> None:
    with pytest.raises(KeyError_, match="Secp256k1"):
        decode_public_key(SPEC_SECP256K1_PUBLIC)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        SPEC_ED25519_PUBLIC[:-1],
        encode_fields([(1, 1), (2, b"\x00" * 31)]),
        encode_fields([(2, b"x")]),
    ],
)
def test_malformed_public_keys_raise_key_error(data: bytes) -> None:
    with pytest.raises(KeyError_):
        decode_public_key(data)


def test_private_key_repr_hides_secret() -> None:
    key = Ed25519PrivateKey.from_protobuf(SPEC_ED25519_PRIVATE)
    text = repr(key) + str(key)
    assert key.seed.hex() not in text
    assert key.seed.hex()[:16] not in text


def test_wrong_sizes_rejected() -> None:
    with pytest.raises(KeyError_):
        Ed25519PrivateKey(b"\x00" * 31)
    with pytest.raises(KeyError_):
        Ed25519PublicKey(b"\x00" * 33)


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=256))
def test_protobuf_round_trip_and_sign_verify(seed: bytes, message: bytes) -> None:
    key = Ed25519PrivateKey(seed)
    again = Ed25519PrivateKey.from_protobuf(key.to_protobuf())
    assert again.seed == seed
    assert decode_public_key(key.public_key.to_protobuf()) == key.public_key
    signature = key.sign(message)
    assert again.public_key.verify(signature, message)


@given(st.binary(max_size=200))
def test_hostile_protobuf_raises_only_value_errors(data: bytes) -> None:
    for decode in (decode_public_key, Ed25519PrivateKey.from_protobuf):
        with contextlib.suppress(ValueError):
            decode(data)
