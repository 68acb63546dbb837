"""What every fuzz target shares: reading options off an input, cutting it into reads, and the fixed
identities and state that make every input replay the same way."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

from kosmesh.identity import (
    Ed25519PrivateKey,
    PeerId,
)
from kosmesh.klp import (
    KLPAddress,
)

# -- input helpers ---------------------------------------------------------------------------------


def options(data: bytes) -> tuple[int, bytes]:
    """The option byte and the rest of the input."""
    return (data[0], data[1:]) if data else (0, b"")


READ_SIZES = (0, 1, 2, 3, 7, 12, 13, 31, 32, 33, 64, 255, 1024)


def reads(data: bytes, selector: int, scale: int = 1) -> list[bytes]:
    """``data`` cut into reads as a socket might deliver it; selector 0 is one read, others a fixed pattern
    (empty reads included), so the same input always cuts the same way."""
    if selector == 0 or not data:
        return [data]
    rng = random.Random(selector)
    pieces = []
    pos = 0
    while pos < len(data):
        size = rng.choice(READ_SIZES) * scale
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


class Bytes:
    """Reads choices off the front of an input; past its end every choice is zero."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def byte(self) -> int:
        if self._pos >= len(self._data):
            return 0
        self._pos += 1
        return self._data[self._pos - 1]

    def u16(self) -> int:
        return self.byte() << 8 | self.byte()

    def take(self, n: int) -> bytes:
        taken = self._data[self._pos : self._pos + n]
        self._pos += len(taken)
        return taken

    def rest(self) -> bytes:
        rest = self._data[self._pos :]
        self._pos = len(self._data)
        return rest


def fails_again(call: Callable[[], object], error: type[Exception]) -> bool:
    """A core that failed must keep failing with its own error, never resume or crash (always False)."""
    try:
        call()
    except error:
        return False
    raise AssertionError(f"a failed core accepted more input instead of raising {error.__name__}")


# -- fixed identities and state (deterministic, so every input replays the same way) ----------------


def fixed(label: str) -> bytes:
    return hashlib.sha256(b"kosmesh fuzz: " + label.encode()).digest()


ALICE = Ed25519PrivateKey(fixed("alice identity"))  # the dialer, Noise initiator and KLP sender
BOB = Ed25519PrivateKey(fixed("bob identity"))  # the listener, Noise responder and local KLP node
ALICE_PEER = PeerId.from_public_key(ALICE.public_key)
BOB_PEER = PeerId.from_public_key(BOB.public_key)
ALICE_STATIC, ALICE_EPHEMERAL = fixed("alice noise static"), fixed("alice noise ephemeral")
BOB_STATIC, BOB_EPHEMERAL = fixed("bob noise static"), fixed("bob noise ephemeral")

NOW_MS = 1_750_000_000_000
NOW = NOW_MS / 1000
KLP_NONCE = bytes(range(8))
ALICE_AGENT = KLPAddress.for_agent(ALICE_PEER, "fuzzer")
BOB_NODE = KLPAddress.for_node(BOB_PEER)
