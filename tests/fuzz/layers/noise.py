"""Fuzz targets for the Noise XX handshake, stage by stage, and the Noise transport.

Stages past message 1 need real state, built from fixed keys; structure-aware modes encrypt the
fuzzer's payload correctly so it reaches the parsing behind the cryptography.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

from kosmesh.codec.protobuf import encode_fields
from kosmesh.identity import (
    PeerId,
)
from kosmesh.wire.noise import (
    MAX_FRAME,
    CipherState,
    NoiseError,
    NoiseHandshake,
    NoiseTransport,
    XXHandshakeState,
    decode_handshake_payload,
    encode_handshake_payload,
)
from tests.fuzz.inputs import (
    ALICE,
    ALICE_EPHEMERAL,
    ALICE_PEER,
    ALICE_STATIC,
    BOB,
    BOB_EPHEMERAL,
    BOB_PEER,
    BOB_STATIC,
    Bytes,
    fails_again,
    options,
    reads,
)
from tests.fuzz.registry import fuzz_target

# -- Noise -----------------------------------------------------------------------------------------


def _noise_initiator(expect_bob: bool = False) -> NoiseHandshake:
    return NoiseHandshake(
        initiator=True,
        identity=ALICE,
        remote_peer_id=BOB_PEER if expect_bob else None,
        static_private=ALICE_STATIC,
        ephemeral_private=ALICE_EPHEMERAL,
    )


def _noise_responder(expect_alice: bool = False) -> NoiseHandshake:
    return NoiseHandshake(
        initiator=False,
        identity=BOB,
        remote_peer_id=ALICE_PEER if expect_alice else None,
        static_private=BOB_STATIC,
        ephemeral_private=BOB_EPHEMERAL,
    )


def _xx(initiator: bool) -> XXHandshakeState:
    """The generic Noise state with the same fixed keys, to write messages with chosen payloads."""
    if initiator:
        return XXHandshakeState(initiator=True, static_private=ALICE_STATIC, ephemeral_private=ALICE_EPHEMERAL)
    return XXHandshakeState(initiator=False, static_private=BOB_STATIC, ephemeral_private=BOB_EPHEMERAL)


def _frame(message: bytes) -> bytes:
    return struct.pack(">H", len(message)) + message


@dataclass(frozen=True)
class _Transcript:
    """A real, deterministic libp2p Noise handshake between the fixed identities."""

    msg1: bytes  # framed, as on the wire
    msg2: bytes
    msg3: bytes
    alice_static_public: bytes
    bob_static_public: bytes
    initiator_send_key: bytes
    responder_send_key: bytes


@functools.cache
def _transcript() -> _Transcript:
    alice, bob = _noise_initiator(), _noise_responder()
    msg1 = alice.initiate()
    msg2 = bob.receive_data(msg1)
    msg3 = alice.receive_data(msg2)
    assert bob.receive_data(msg3) == b"" and alice.complete and bob.complete
    # NoiseHandshake keeps its cipher states to itself; the generic objects with the same keys and
    # payloads derive the same ones.
    i, r = _xx(True), _xx(False)
    r.read_message(i.write_message(b""))
    i.read_message(r.write_message(encode_handshake_payload(BOB, r.s_public)))
    r.read_message(i.write_message(encode_handshake_payload(ALICE, i.s_public)))
    c1, c2 = i.split()
    assert c1.key is not None and c2.key is not None
    transcript = _Transcript(msg1, msg2, msg3, i.s_public, r.s_public, c1.key, c2.key)
    probe = NoiseTransport(CipherState(c1.key), CipherState(c2.key)).encrypt(b"probe")
    assert bob.take_transport().receive_data(probe) == b"probe", "derived transport keys differ from the handshake's"
    return transcript


def _transport(responder: bool) -> NoiseTransport:
    """A fresh transport of one side of the fixed handshake (nonces at zero)."""
    t = _transcript()
    if responder:
        return NoiseTransport(CipherState(t.responder_send_key), CipherState(t.initiator_send_key))
    return NoiseTransport(CipherState(t.initiator_send_key), CipherState(t.responder_send_key))


def _noise_responder_msg1_seeds() -> dict[str, bytes]:
    msg1 = _transcript().msg1
    with_payload = _frame(msg1[2:] + b"extra")  # libp2p sends none; a payload here is unauthenticated
    return {"message-1": b"\x00" + msg1, "message-1-in-pieces": b"\x02" + msg1, "with-payload": b"\x01" + with_payload}


@fuzz_target(_noise_responder_msg1_seeds)
def noise_responder_msg1(data: bytes) -> bool:
    """Noise XX responder reading message 1 (and whatever follows it) straight from the stream."""
    opt, body = options(data)
    hs = _noise_responder(expect_alice=bool(opt & 1))
    replied = False
    for chunk in reads(body, opt >> 1):
        try:
            replied = bool(hs.receive_data(chunk)) or replied
        except NoiseError:
            return fails_again(lambda: hs.receive_data(b"\x00"), NoiseError)
    return replied


def _encrypted_msg2(payload: bytes) -> bytes | None:
    """A correctly keyed message 2 from Bob carrying ``payload`` (None if it cannot fit in one message)."""
    bob = _xx(False)
    bob.read_message(_transcript().msg1[2:])
    try:
        return _frame(bob.write_message(payload))
    except NoiseError:
        return None


def _noise_initiator_msg2_seeds() -> dict[str, bytes]:
    t = _transcript()
    return {
        "message-2": b"\x00" + t.msg2,
        "message-2-expected-peer": b"\x02" + t.msg2,
        "payload": b"\x01" + encode_handshake_payload(BOB, t.bob_static_public),
        "payload-in-pieces": bytes([3 | 5 << 2]) + encode_handshake_payload(BOB, t.bob_static_public),
    }


@fuzz_target(_noise_initiator_msg2_seeds)
def noise_initiator_msg2(data: bytes) -> bool:
    """Noise XX initiator after a real message 1, reading message 2: raw bytes, or a correctly encrypted
    message 2 whose payload (identity key + signature) is the fuzz input."""
    opt, body = options(data)
    expect_bob = bool(opt & 2)
    hs = _noise_initiator(expect_bob)
    hs.initiate()
    stream = _encrypted_msg2(body) if opt & 1 else body
    if stream is None:
        return False
    for chunk in reads(stream, opt >> 2):
        try:
            hs.receive_data(chunk)
        except NoiseError:
            return fails_again(lambda: hs.receive_data(b"\x00"), NoiseError)
    if not hs.complete:
        return False
    assert hs.remote_public_key is not None and hs.remote_peer_id == PeerId.from_public_key(hs.remote_public_key)
    assert not expect_bob or hs.remote_peer_id == BOB_PEER
    hs.take_transport()
    return True


def _encrypted_msg3(payload: bytes) -> bytes | None:
    """A correctly keyed message 3 from Alice carrying ``payload`` (None if it cannot fit)."""
    alice = _xx(True)
    alice.write_message(b"")
    alice.read_message(_transcript().msg2[2:])
    try:
        return _frame(alice.write_message(payload))
    except NoiseError:
        return None


def _noise_responder_msg3_seeds() -> dict[str, bytes]:
    t = _transcript()
    early = _transport(responder=False)
    return {
        "message-3": b"\x00" + t.msg3,
        "message-3-expected-peer": b"\x04" + t.msg3,
        "payload": b"\x01" + encode_handshake_payload(ALICE, t.alice_static_public),
        "early-transport-frames": bytes([2 | 3 << 3]) + early.encrypt(b"first") + early.encrypt(b"second"),
    }


@fuzz_target(_noise_responder_msg3_seeds)
def noise_responder_msg3(data: bytes) -> bool:
    """Noise XX responder after real messages 1 and 2, reading message 3: raw bytes, a correctly encrypted
    message 3 carrying the fuzz input as its payload, or a real message 3 followed by fuzz bytes as
    early transport frames (handed over through ``unconsumed()``)."""
    opt, body = options(data)
    mode, expect_alice, selector = (opt & 3) % 3, bool(opt & 4), opt >> 3
    t = _transcript()
    hs = _noise_responder(expect_alice)
    assert hs.receive_data(t.msg1) == t.msg2
    stream = body if mode == 0 else _encrypted_msg3(body) if mode == 1 else t.msg3 + body
    if stream is None:
        return False
    for chunk in reads(stream, selector):
        try:
            hs.receive_data(chunk)
        except NoiseError:
            return fails_again(lambda: hs.receive_data(b"\x00"), NoiseError)
    if not hs.complete:
        return False
    assert hs.remote_public_key is not None and hs.remote_peer_id == PeerId.from_public_key(hs.remote_public_key)
    assert not expect_alice or hs.remote_peer_id == ALICE_PEER
    transport = hs.take_transport()
    try:
        transport.receive_data(hs.unconsumed())
    except NoiseError:
        return False
    return True


def _noise_payload_seeds() -> dict[str, bytes]:
    payload = encode_handshake_payload(ALICE, _transcript().alice_static_public)
    return {"payload": payload, "with-extensions": payload + encode_fields([(4, b"\x0a\x03abc")])}


@fuzz_target(_noise_payload_seeds)
def noise_handshake_payload(data: bytes) -> bool:
    """NoiseHandshakePayload decode: identity key protobuf + signature over the remote's Noise static key."""
    try:
        decode_handshake_payload(data, _transcript().alice_static_public)
    except NoiseError:
        return False
    return True


def _noise_transport_seeds() -> dict[str, bytes]:
    sender = _transport(responder=False)
    frames = sender.encrypt(b"hello") + sender.encrypt(b"world" * 100)
    return {
        "frames": b"\x00" + frames,
        "frames-in-pieces-in-place": bytes([1 | 7 << 2]) + frames,
        "roundtrip": bytes([2 | 9 << 2]) + b"\x00\x00\x00\x00\x06" + b"plaintext to encrypt",
        "roundtrip-large-in-place": bytes([2 | 3 << 2]) + b"\x3f\x00\x00\x00\x0b" + bytes(range(256)) * 8,
    }


@fuzz_target(_noise_transport_seeds)
def noise_transport(data: bytes) -> bool:
    """Noise transport frames after a completed handshake: raw bytes through both receive paths; real frames
    cut anywhere (must decrypt to exactly what was sent); real frames with one byte altered (must never
    yield altered plaintext)."""
    opt, body = options(data)
    mode, selector = opt & 3, opt >> 2
    receiver = _transport(responder=True)
    if mode < 2:
        receive = receiver.receive_data if mode == 0 else receiver.receive_data_inplace
        for chunk in reads(body, selector):
            try:
                receive(chunk)
            except NoiseError:
                return fails_again(lambda: receive(b"\x00\x00"), NoiseError)
            assert receiver.buffered <= 2 + MAX_FRAME
        return True
    r = Bytes(body)
    repeat, flip_at, mask, read_options = 1 + r.byte() % 64, r.u16(), r.byte() or 1, r.byte()
    plain = r.rest() * repeat
    sender = _transport(responder=False)
    scale = 1 + len(plain) // 512
    wire = bytearray(b"".join(sender.encrypt(message) for message in reads(plain, selector, scale)))
    tampered = mode == 3 and bool(wire)
    if tampered:
        wire[flip_at % len(wire)] ^= mask
    receive = receiver.receive_data_inplace if read_options & 1 else receiver.receive_data
    received = bytearray()
    for chunk in reads(bytes(wire), read_options >> 1, scale):
        try:
            received += receive(chunk)
        except NoiseError:
            assert tampered, "untampered frames must decrypt"
            break
        assert receiver.buffered <= 2 + MAX_FRAME
    if tampered:
        assert plain.startswith(received) and len(received) < len(plain), "altered frames yielded plaintext"
        return False
    assert received == plain, "frames did not decrypt to what was sent"
    return True
