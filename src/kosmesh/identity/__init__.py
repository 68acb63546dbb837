"""Node identity: one Ed25519 key, three spellings (libp2p PeerId, CIDv1, did:key)."""

from kosmesh.identity.did_key import (
    DidKeyError,
    did_key_document,
    did_key_from_peer_id,
    did_key_from_public_key,
    peer_id_from_did_key,
    public_key_from_did_key,
)
from kosmesh.identity.keys import Ed25519PrivateKey, Ed25519PublicKey, KeyError_, decode_public_key
from kosmesh.identity.keystore import (
    CorruptKeyFileError,
    KeyFileNotFoundError,
    KeyFilePermissionError,
    KeystoreError,
    PassphraseRequiredError,
    WrongPassphraseError,
    key_file_is_encrypted,
    load_key,
    load_or_create_key,
    save_key,
)
from kosmesh.identity.peer_id import PeerId, PeerIdError

__all__ = [
    "CorruptKeyFileError",
    "DidKeyError",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "KeyError_",
    "KeyFileNotFoundError",
    "KeyFilePermissionError",
    "KeystoreError",
    "PassphraseRequiredError",
    "PeerId",
    "PeerIdError",
    "WrongPassphraseError",
    "decode_public_key",
    "did_key_document",
    "did_key_from_peer_id",
    "did_key_from_public_key",
    "key_file_is_encrypted",
    "load_key",
    "load_or_create_key",
    "peer_id_from_did_key",
    "public_key_from_did_key",
    "save_key",
]
