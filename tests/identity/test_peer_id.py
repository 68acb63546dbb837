"""libp2p peer ids: spec vectors, text/bytes/CID round trips, hostile input."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kosmesh.identity import Ed25519PrivateKey, PeerId, PeerIdError

# libp2p specs peer-ids/peer-ids.md: the Ed25519 PrivateKey test vector...
SPEC_ED25519_PRIVATE = bytes.fromhex(
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
    "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
# ...and its peer id (identity multihash of the 36-byte PublicKey protobuf, base58btc), as
# derived by other libp2p implementations from that vector.
SPEC_ED25519_PEER_ID = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"

# peer-ids.md "String representation" examples: one sha256 peer id in both spellings,
# and one Ed25519 (identity multihash) peer id.
SPEC_SHA256_CID = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"
SPEC_SHA256_BASE58 = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
SPEC_ED25519_EXAMPLE = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"

seeds = st.binary(min_size=32, max_size=32)


def test_spec_ed25519_key_vector_to_peer_id() -> None:
    key = Ed25519PrivateKey.from_protobuf(SPEC_ED25519_PRIVATE)
    peer = PeerId.from_public_key(key.public_key)
    assert str(peer) == SPEC_ED25519_PEER_ID
    assert peer.to_base58() == SPEC_ED25519_PEER_ID
    # identity multihash: code 0x00, length 36, then the PublicKey protobuf
    assert peer.to_bytes() == bytes((0x00, 36)) + key.public_key.to_protobuf()
    assert peer.extract_public_key() == key.public_key
    assert peer.matches(key.public_key)
    assert PeerId.from_string(SPEC_ED25519_PEER_ID) == peer


def test_spec_sha256_peer_id_cid_and_base58_are_the_same_peer() -> None:
    from_cid = PeerId.from_string(SPEC_SHA256_CID)
    from_b58 = PeerId.from_string(SPEC_SHA256_BASE58)
    assert from_cid == from_b58
    assert from_b58.to_cid() == SPEC_SHA256_CID
    assert from_cid.to_base58() == SPEC_SHA256_BASE58
    assert from_b58.to_bytes()[:2] == bytes((0x12, 0x20))  # sha2-256 multihash
    assert from_b58.extract_public_key() is None  # a hashed id does not embed the key


def test_spec_ed25519_example_embeds_its_key() -> None:
    peer = PeerId.from_string(SPEC_ED25519_EXAMPLE)
    key = peer.extract_public_key()
    assert key is not None
    assert PeerId.from_public_key(key) == peer
    assert str(peer) == SPEC_ED25519_EXAMPLE
    cid = peer.to_cid()
    assert cid.startswith("bafz")
    assert PeerId.from_string(cid) == peer


def test_cid_form_layout() -> None:
    peer = PeerId.from_string(SPEC_ED25519_PEER_ID)
    cid = peer.to_cid()
    assert cid == cid.lower() and "=" not in cid
    assert PeerId.from_cid(cid) == peer
    # multibase is case-insensitive for base32 data, so upper-case body still parses
    assert PeerId.from_string("b" + cid[1:].upper()) == peer


def test_cid_with_wrong_codec_rejected() -> None:
    import base64

    peer = PeerId.from_string(SPEC_ED25519_PEER_ID)
    raw = bytes((0x01, 0x55)) + peer.to_bytes()  # codec 0x55 = raw, not libp2p-key
    text = "b" + base64.b32encode(raw).decode().lower().rstrip("=")
    with pytest.raises(PeerIdError, match="libp2p-key"):
        PeerId.from_string(text)


def test_from_cid_requires_base32_prefix() -> None:
    peer = PeerId.from_string(SPEC_ED25519_PEER_ID)
    with pytest.raises(PeerIdError):
        PeerId.from_cid("z" + peer.to_cid()[1:])


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "Qm",
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5",  # truncated
        "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq1",  # trailing byte
        "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3p0",  # '0' is not base58
        "b",
        "bafz",
        "b!!!!",
        "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK",
        "1" * 10_000,
        "b" + "a" * 10_000,
    ],
)
def test_invalid_peer_ids(text: str) -> None:
    with pytest.raises(PeerIdError):
        PeerId.from_string(text)


def test_peer_id_value_semantics() -> None:
    a = PeerId.from_public_key(Ed25519PrivateKey(bytes(32)).public_key)
    b = PeerId.from_public_key(Ed25519PrivateKey(bytes(31) + b"\x01").public_key)
    assert a == PeerId(a.to_bytes())
    assert hash(a) == hash(PeerId(a.to_bytes()))
    assert a != b and a != str(a)
    assert sorted([a, b]) == sorted([b, a])
    assert repr(a) == f"PeerId({a})"


@given(seeds)
def test_round_trips_for_random_keys(seed: bytes) -> None:
    key = Ed25519PrivateKey(seed).public_key
    peer = PeerId.from_public_key(key)
    text = str(peer)
    assert text.startswith("12D3KooW")
    assert PeerId.from_string(text) == peer
    assert PeerId(peer.to_bytes()) == peer
    cid = peer.to_cid()
    assert cid.startswith("bafz")
    assert PeerId.from_string(cid) == peer
    assert PeerId.from_cid(cid).to_base58() == text
    assert peer.extract_public_key() == key
    assert peer.matches(key)


@given(st.text(max_size=120))
def test_hostile_text_raises_only_peer_id_errors(text: str) -> None:
    try:
        peer = PeerId.from_string(text)
    except PeerIdError:
        return
    assert PeerId.from_string(str(peer)) == peer


@given(st.from_regex(r"\A(12D3KooW|Qm|1|bafz|b)[A-Za-z0-9=]{0,70}\Z"))
def test_near_miss_text_raises_only_peer_id_errors(text: str) -> None:
    with contextlib.suppress(PeerIdError):
        PeerId.from_string(text)


@given(st.binary(max_size=100))
def test_hostile_bytes_raise_only_peer_id_errors(data: bytes) -> None:
    try:
        peer = PeerId(data)
    except PeerIdError:
        return
    assert PeerId.from_string(peer.to_base58()) == peer
    assert PeerId.from_string(peer.to_cid()) == peer


def test_a_non_canonical_spelling_of_a_key_yields_no_key() -> None:
    key = Ed25519PrivateKey.generate().public_key
    canonical = key.to_protobuf()  # field 1 (type) then field 2 (data)
    padded = canonical + bytes((0x08, 0x01))  # field 1 again: a lenient decoder takes the same key
    other = PeerId(bytes((0x00, len(padded))) + padded)
    assert other != PeerId.from_public_key(key)
    assert other.extract_public_key() is None  # so it can sign nothing and earn no trust of its own
    assert PeerId.from_public_key(key).extract_public_key() == key
