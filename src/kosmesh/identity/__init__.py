"""Node identity: one Ed25519 key, three spellings (libp2p PeerId, CIDv1, did:key)."""

from kosmesh.identity.keys import Ed25519PrivateKey, Ed25519PublicKey, KeyError_, decode_public_key
from kosmesh.identity.peer_id import PeerId

__all__ = ["Ed25519PrivateKey", "Ed25519PublicKey", "KeyError_", "PeerId", "decode_public_key"]
