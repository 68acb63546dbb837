"""The fuzz targets: attacker bytes into each sans-I/O core, one target per decoder or handshake stage.

A target is ``def name(data: bytes) -> bool``. It lets through only the errors its module documents
(``NoiseError``, ``MultistreamError``, ``EnvelopeError``…) and checks what must hold on the way
(round trips, size bounds, no forged plaintext). Any other exception — ``IndexError``, ``KeyError``,
``struct.error``, ``UnicodeDecodeError``, ``RecursionError``, a bare ``ValueError``, a failed
``assert`` — is a finding. The return value says whether the core accepted the input as a whole,
valid exchange; the seed check uses it to prove the seeds are real inputs, the fuzzers ignore it.

Many targets read option bits from the first byte: which side or mode to run, and how to cut the
rest into reads (so the cores' buffering across partial reads is fuzzed too). Where a stage needs
valid state first (Noise message 2 needs a real message 1), that state is built from fixed keys,
so every input replays the same way. Structure-aware modes (a correctly encrypted Noise payload,
a correctly signed KLP envelope) let the fuzzer past the cryptography to the parsing behind it.

Every new decoder or protocol stage gets a target here, with seeds (``python -m tests.fuzz.run
--write-seeds`` writes them to ``tests/fuzz/corpus/<target>/``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import pickle
import random
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import nacl.pwhash
import nacl.secret

from kosmesh.identity import (
    DidKeyError,
    Ed25519PrivateKey,
    Ed25519PublicKey,
    KeyError_,
    KeystoreError,
    PeerId,
    PeerIdError,
    decode_public_key,
    did_key_document,
    did_key_from_peer_id,
    did_key_from_public_key,
    peer_id_from_did_key,
    public_key_from_did_key,
)
from kosmesh.identity.base58 import MAX_DECODE_CHARS, b58decode, b58encode
from kosmesh.identity.did_key import KeyFormat
from kosmesh.identity.keystore import _decode_key_file, _encode_key_file
from kosmesh.klp import (
    CODEC_REASONS,
    CONTENT_TYPE_CBOR,
    ENCRYPTION_ALGORITHMS,
    KLP_VERSION,
    MAX_MESSAGE_BYTES,
    REASON_MALFORMED,
    REASON_REPLAY,
    REJECTION_REASONS,
    Accepted,
    AddressError,
    CheckResult,
    EnvelopeError,
    FrameReader,
    FramingError,
    KLPAddress,
    KLPMessage,
    KLPProcessor,
    MessageType,
    Priority,
    ProcessingResult,
    Rejected,
    RoutingHint,
    TrustRequirements,
    VerificationLevel,
    build_message,
    compute_message_id,
    decode_envelope,
    decode_message,
    encode_frame,
    encode_message,
    make_response,
    message_to_json,
    parse_response,
    signing_bytes,
    verify_signature,
)
from kosmesh.klp import envelope as envelope_module
from kosmesh.klp.address import signer_key_for
from kosmesh.klp.envelope import encode_data
from kosmesh.wire.identify import (
    IdentifyError,
    IdentifyInfo,
    IdentifyReader,
    decode_identify,
    encode_identify,
)
from kosmesh.wire.multiaddr import Multiaddr, MultiaddrError
from kosmesh.wire.multistream import (
    HEADER,
    NA_MESSAGE,
    MultistreamDialer,
    MultistreamError,
    MultistreamListener,
)
from kosmesh.wire.multistream import (
    encode_message as encode_multistream,
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
from kosmesh.wire.ping import MAX_OUTSTANDING, PING_SIZE, PingError, PingInitiator, PingResponder
from kosmesh.wire.protobuf import ProtobufError, all_bytes, decode_fields, encode_fields, first_bytes, first_int
from kosmesh.wire.varint import MAX_VARINT_BYTES, VarintError, decode_uvarint, encode_uvarint
from kosmesh.wire.yamux import (
    GO_AWAY_NORMAL,
    HEADER_SIZE,
    INITIAL_WINDOW,
    ConnectionTerminated,
    DataReceived,
    StreamOpened,
    YamuxSession,
)

FuzzFunction = Callable[[bytes], bool]
SeedFunction = Callable[[], dict[str, bytes]]


@dataclass(frozen=True)
class FuzzTarget:
    """One registered target: the function, its seed inputs, and a line saying what it covers."""

    name: str
    run: FuzzFunction
    seeds: SeedFunction
    about: str


TARGETS: dict[str, FuzzTarget] = {}


def fuzz_target(seeds: SeedFunction) -> Callable[[FuzzFunction], FuzzFunction]:
    """Register the decorated function under its own name, with the function that makes its seeds."""

    def register(run: FuzzFunction) -> FuzzFunction:
        if run.__name__ in TARGETS:
            raise RuntimeError(f"fuzz target {run.__name__} registered twice")
        about = (run.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        TARGETS[run.__name__] = FuzzTarget(run.__name__, run, seeds, " ".join(about.split()))
        return run

    return register


# -- input helpers ---------------------------------------------------------------------------------


def _options(data: bytes) -> tuple[int, bytes]:
    """The option byte and the rest of the input."""
    return (data[0], data[1:]) if data else (0, b"")


_READ_SIZES = (0, 1, 2, 3, 7, 12, 13, 31, 32, 33, 64, 255, 1024)


def _reads(data: bytes, selector: int, scale: int = 1) -> list[bytes]:
    """``data`` cut into reads as a socket might deliver it; selector 0 is one read, others a fixed pattern
    (empty reads included), so the same input always cuts the same way."""
    if selector == 0 or not data:
        return [data]
    rng = random.Random(selector)
    pieces = []
    pos = 0
    while pos < len(data):
        size = rng.choice(_READ_SIZES) * scale
        pieces.append(data[pos : pos + size])
        pos += size
    return pieces


class _Bytes:
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


def _fails_again(call: Callable[[], object], error: type[Exception]) -> bool:
    """A core that failed must keep failing with its own error, never resume or crash (always False)."""
    try:
        call()
    except error:
        return False
    raise AssertionError(f"a failed core accepted more input instead of raising {error.__name__}")


# -- fixed identities and state (deterministic, so every input replays the same way) ----------------


def _fixed(label: str) -> bytes:
    return hashlib.sha256(b"kosmesh fuzz: " + label.encode()).digest()


ALICE = Ed25519PrivateKey(_fixed("alice identity"))  # the dialer, Noise initiator and KLP sender
BOB = Ed25519PrivateKey(_fixed("bob identity"))  # the listener, Noise responder and local KLP node
ALICE_PEER = PeerId.from_public_key(ALICE.public_key)
BOB_PEER = PeerId.from_public_key(BOB.public_key)
_ALICE_STATIC, _ALICE_EPHEMERAL = _fixed("alice noise static"), _fixed("alice noise ephemeral")
_BOB_STATIC, _BOB_EPHEMERAL = _fixed("bob noise static"), _fixed("bob noise ephemeral")

NOW_MS = 1_750_000_000_000
NOW = NOW_MS / 1000
_KLP_NONCE = bytes(range(8))
ALICE_AGENT = KLPAddress.for_agent(ALICE_PEER, "fuzzer")
BOB_NODE = KLPAddress.for_node(BOB_PEER)


# -- varint and protobuf ---------------------------------------------------------------------------


def _varint_seeds() -> dict[str, bytes]:
    return {
        "one-byte": b"\x00" + encode_uvarint(1),
        "two-bytes": b"\x00" + encode_uvarint(300),
        "largest": b"\x00" + encode_uvarint(2**63 - 1),
        "at-offset-in-bytearray": b"\x06\xff\xff" + encode_uvarint(16384),
    }


@fuzz_target(_varint_seeds)
def varint(data: bytes) -> bool:
    """uvarint decode at an offset, from bytes, bytearray or memoryview; a decoded value re-encodes to
    exactly the bytes it came from (minimal, at most 9 bytes)."""
    opt, body = _options(data)
    offset = opt % 4
    source: bytes | bytearray | memoryview = (body, bytearray(body), memoryview(body))[(opt >> 2) % 3]
    try:
        got = decode_uvarint(source, offset)
    except VarintError:
        return False
    if got is None:
        return False
    value, end = got
    assert offset < end <= len(body) and end - offset <= MAX_VARINT_BYTES
    assert encode_uvarint(value) == body[offset:end], "a decoded varint must be the minimal encoding"
    return True


def _protobuf_seeds() -> dict[str, bytes]:
    fixed_widths = encode_uvarint(3 << 3 | 1) + bytes(8) + encode_uvarint(4 << 3 | 5) + bytes(4)
    return {
        "public-key": b"\x08" + ALICE.public_key.to_protobuf(),
        "noise-payload": b"\x10" + encode_handshake_payload(ALICE, bytes(32)),
        "fixed-width-fields": b"\x02" + encode_fields([(1, 150)]) + fixed_widths + encode_fields([(5, b"x")]),
    }


@fuzz_target(_protobuf_seeds)
def protobuf(data: bytes) -> bool:
    """protobuf field decode under a field cap; the decoded fields re-encode and decode to themselves."""
    opt, body = _options(data)
    max_fields = 1 + opt
    try:
        fields = decode_fields(body, max_fields=max_fields)
    except ProtobufError:
        return False
    assert decode_fields(encode_fields(fields), max_fields=max_fields) == fields
    for number in {number for number, _ in fields}:
        first_bytes(fields, number)
        first_int(fields, number)
        all_bytes(fields, number)
    return True


# -- multiaddr -------------------------------------------------------------------------------------

_MULTIADDR_SEEDS = (
    "/ip4/127.0.0.1/tcp/4001",
    "/ip6/::1/tcp/4001/p2p/" + str(ALICE_PEER),
    "/ip6/::ffff:10.0.0.1/udp/4001/quic-v1",
    "/dns4/node.example.org/tcp/443/wss",
    "/dnsaddr/bootstrap.example.org",
    "/ip4/10.0.0.1/tcp/4001/p2p/" + str(BOB_PEER) + "/p2p-circuit/p2p/" + str(ALICE_PEER),
)


def _check_multiaddr(addr: Multiaddr) -> None:
    """One address, every spelling and accessor: text and bytes round-trip, pickling too."""
    text = str(addr)
    again = Multiaddr.parse(text)
    assert again == addr and str(again) == text, f"{text!r} does not parse back to itself"
    assert Multiaddr.from_bytes(addr.to_bytes()) == addr
    assert pickle.loads(pickle.dumps(addr)) == addr
    peer = addr.peer_id
    if peer is not None:
        assert addr.with_peer_id(peer) == addr  # replacing the trailing /p2p/ with itself changes nothing
        suffix = Multiaddr.parse(f"/p2p/{peer}").to_bytes()
        assert addr.without_peer_id().to_bytes() + suffix == addr.to_bytes()
    try:
        host, port = addr.tcp_endpoint()
    except MultiaddrError:
        return
    if addr.components[0][0] in ("ip4", "ip6"):  # a socket address of our own, turned back into an address
        assert Multiaddr.from_tcp(host, port).tcp_endpoint() == (host, port)


def _multiaddr_bytes_seeds() -> dict[str, bytes]:
    return {f"addr-{i}": Multiaddr.parse(text).to_bytes() for i, text in enumerate(_MULTIADDR_SEEDS)}


@fuzz_target(_multiaddr_bytes_seeds)
def multiaddr_bytes(data: bytes) -> bool:
    """Binary multiaddr decode; what decodes re-encodes to the same bytes and survives the text round trip."""
    try:
        addr = Multiaddr.from_bytes(data)
    except MultiaddrError:
        return False
    assert addr.to_bytes() == data
    _check_multiaddr(addr)
    return True


def _multiaddr_text_seeds() -> dict[str, bytes]:
    return {f"addr-{i}": b"\x00" + text.encode() for i, text in enumerate(_MULTIADDR_SEEDS)}


@fuzz_target(_multiaddr_text_seeds)
def multiaddr_text(data: bytes) -> bool:
    """Text multiaddr parse (UTF-8, or text holding lone surrogates as a str from elsewhere may); what
    parses round-trips through bytes and text."""
    opt, body = _options(data)
    text = body.decode("utf-8", "surrogateescape" if opt & 1 else "replace")
    try:
        addr = Multiaddr.parse(text)
    except MultiaddrError:
        return False
    _check_multiaddr(addr)
    return True


# -- multistream-select ----------------------------------------------------------------------------

_SUPPORTED = ("/noise", "/yamux/1.0.0", "/kos/klp/1.0.0")
_PROPOSALS = ("/kos/klp/2.0.0", "/kos/klp/1.0.0", "/yamux/1.0.0")


def _check_agreement(fed: bytes, selected: str, rest: bytes) -> None:
    """The agreed message is the last thing consumed; everything after it is handed back untouched."""
    assert fed.endswith(rest)
    assert fed[: len(fed) - len(rest)].endswith(encode_multistream(selected))


def _multistream_listener_seeds() -> dict[str, bytes]:
    yamux_proposal = encode_multistream("/yamux/1.0.0")
    return {
        "pipelined": b"\x00" + HEADER + yamux_proposal + b"first application bytes",
        "ls-then-retry": b"\x03" + HEADER + encode_multistream("ls") + encode_multistream("/nope") + yamux_proposal,
        "byte-by-byte": bytes([1 << 2]) + HEADER + encode_multistream("/kos/klp/1.0.0"),
    }


@fuzz_target(_multistream_listener_seeds)
def multistream_listener(data: bytes) -> bool:
    """multistream-select as the listener: header, proposals, ``ls``, data pipelined after the agreement."""
    opt, body = _options(data)
    listener = MultistreamListener(
        _SUPPORTED.__contains__, max_attempts=4, ls_protocols=_SUPPORTED if opt & 2 else None
    )
    if opt & 1:
        assert listener.initiate() == HEADER
    return _negotiate(listener, _reads(body, opt >> 2), _SUPPORTED)


def _multistream_dialer_seeds() -> dict[str, bytes]:
    return {
        "first-choice": b"\x00" + HEADER + encode_multistream(_PROPOSALS[0]),
        "na-then-second": b"\x00" + HEADER + NA_MESSAGE + encode_multistream(_PROPOSALS[1]) + b"early data",
        "header-given": bytes([1 | 3 << 1]) + NA_MESSAGE + NA_MESSAGE + encode_multistream(_PROPOSALS[2]),
    }


@fuzz_target(_multistream_dialer_seeds)
def multistream_dialer(data: bytes) -> bool:
    """multistream-select as the (pipelined) dialer: the listener's header and answers, optionally after a
    valid header so the fuzzer starts past it."""
    opt, body = _options(data)
    dialer = MultistreamDialer(_PROPOSALS)
    dialer.initiate()
    if opt & 1:
        body = HEADER + body
    return _negotiate(dialer, _reads(body, opt >> 1), _PROPOSALS)


def _negotiate(side: MultistreamListener | MultistreamDialer, chunks: Iterable[bytes], allowed: Sequence[str]) -> bool:
    """Feed ``chunks`` until agreement (checked against what was fed) or a sticky failure."""
    fed = bytearray()
    for chunk in chunks:
        fed += chunk
        try:
            side.receive_data(chunk)
        except MultistreamError:
            return _fails_again(lambda: side.receive_data(b"\x00"), MultistreamError)
        if side.selected is not None:
            assert side.selected in allowed
            _check_agreement(bytes(fed), side.selected, side.unconsumed())
            return True
    return False


# -- Noise -----------------------------------------------------------------------------------------


def _noise_initiator(expect_bob: bool = False) -> NoiseHandshake:
    return NoiseHandshake(
        initiator=True,
        identity=ALICE,
        remote_peer_id=BOB_PEER if expect_bob else None,
        static_private=_ALICE_STATIC,
        ephemeral_private=_ALICE_EPHEMERAL,
    )


def _noise_responder(expect_alice: bool = False) -> NoiseHandshake:
    return NoiseHandshake(
        initiator=False,
        identity=BOB,
        remote_peer_id=ALICE_PEER if expect_alice else None,
        static_private=_BOB_STATIC,
        ephemeral_private=_BOB_EPHEMERAL,
    )


def _xx(initiator: bool) -> XXHandshakeState:
    """The generic Noise state with the same fixed keys, to write messages with chosen payloads."""
    if initiator:
        return XXHandshakeState(initiator=True, static_private=_ALICE_STATIC, ephemeral_private=_ALICE_EPHEMERAL)
    return XXHandshakeState(initiator=False, static_private=_BOB_STATIC, ephemeral_private=_BOB_EPHEMERAL)


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
    opt, body = _options(data)
    hs = _noise_responder(expect_alice=bool(opt & 1))
    replied = False
    for chunk in _reads(body, opt >> 1):
        try:
            replied = bool(hs.receive_data(chunk)) or replied
        except NoiseError:
            return _fails_again(lambda: hs.receive_data(b"\x00"), NoiseError)
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
    opt, body = _options(data)
    expect_bob = bool(opt & 2)
    hs = _noise_initiator(expect_bob)
    hs.initiate()
    stream = _encrypted_msg2(body) if opt & 1 else body
    if stream is None:
        return False
    for chunk in _reads(stream, opt >> 2):
        try:
            hs.receive_data(chunk)
        except NoiseError:
            return _fails_again(lambda: hs.receive_data(b"\x00"), NoiseError)
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
    opt, body = _options(data)
    mode, expect_alice, selector = (opt & 3) % 3, bool(opt & 4), opt >> 3
    t = _transcript()
    hs = _noise_responder(expect_alice)
    assert hs.receive_data(t.msg1) == t.msg2
    stream = body if mode == 0 else _encrypted_msg3(body) if mode == 1 else t.msg3 + body
    if stream is None:
        return False
    for chunk in _reads(stream, selector):
        try:
            hs.receive_data(chunk)
        except NoiseError:
            return _fails_again(lambda: hs.receive_data(b"\x00"), NoiseError)
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
    opt, body = _options(data)
    mode, selector = opt & 3, opt >> 2
    receiver = _transport(responder=True)
    if mode < 2:
        receive = receiver.receive_data if mode == 0 else receiver.receive_data_inplace
        for chunk in _reads(body, selector):
            try:
                receive(chunk)
            except NoiseError:
                return _fails_again(lambda: receive(b"\x00\x00"), NoiseError)
            assert receiver.buffered <= 2 + MAX_FRAME
        return True
    r = _Bytes(body)
    repeat, flip_at, mask, read_options = 1 + r.byte() % 64, r.u16(), r.byte() or 1, r.byte()
    plain = r.rest() * repeat
    sender = _transport(responder=False)
    scale = 1 + len(plain) // 512
    wire = bytearray(b"".join(sender.encrypt(message) for message in _reads(plain, selector, scale)))
    tampered = mode == 3 and bool(wire)
    if tampered:
        wire[flip_at % len(wire)] ^= mask
    receive = receiver.receive_data_inplace if read_options & 1 else receiver.receive_data
    received = bytearray()
    for chunk in _reads(bytes(wire), read_options >> 1, scale):
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


# -- yamux -----------------------------------------------------------------------------------------


def _yamux_session(is_client: bool, prepared: bool) -> tuple[YamuxSession, bytes]:
    """The session under test and what it sent first; prepared: two streams of its own, one with data
    queued past the peer's window, one already closed, and a ping outstanding."""
    session = YamuxSession(is_client=is_client, max_streams=8)
    if prepared:
        first = session.open_stream()
        session.send_data(first, b"\x5a" * (INITIAL_WINDOW + 4096))
        second = session.open_stream()
        session.send_data(second, b"bye")
        session.close_stream(second)
        session.ping(7)
    return session, session.data_to_send()


def _yamux_seeds() -> dict[str, bytes]:
    seeds = {}
    for is_client in (False, True):
        for prepared in (False, True):
            _, sent = _yamux_session(is_client, prepared)
            peer = YamuxSession(is_client=not is_client)
            for event in peer.receive_data(sent):
                if isinstance(event, DataReceived):
                    peer.consume(event.stream_id, len(event.data))
            sid = peer.open_stream()
            peer.send_data(sid, b"hello")
            peer.close_stream(sid)
            peer.ping(42)
            if prepared:
                peer.go_away(GO_AWAY_NORMAL)
            name = f"{'client' if is_client else 'server'}-{'prepared' if prepared else 'fresh'}"
            seeds[name] = bytes([is_client | prepared << 1 | (3 << 2 if prepared else 0)]) + peer.data_to_send()
    return seeds


@fuzz_target(_yamux_seeds)
def yamux_session(data: bytes) -> bool:
    """yamux session receive on the client or server side (optionally with streams of its own open and data
    queued past the window): frames, window updates, pings, go-away. It must never raise, keep its buffer
    under one window plus a header, and survive the answers an adapter gives (consume, reply, close)."""
    opt, body = _options(data)
    session, _ = _yamux_session(is_client=bool(opt & 1), prepared=bool(opt & 2))
    closed_here: set[int] = set()
    terminations = 0
    violated = False
    for chunk in _reads(body, opt >> 2):
        was_terminated = session.is_terminated
        events = session.receive_data(chunk)
        assert not (was_terminated and events), "a terminated session produced events"
        assert session.buffered_input <= HEADER_SIZE + INITIAL_WINDOW
        for event in events:
            if isinstance(event, DataReceived):
                session.consume(event.stream_id, len(event.data))
            elif isinstance(event, StreamOpened):
                sid = event.stream_id
                if not session.is_terminated and sid in session.stream_ids() and sid not in closed_here:
                    session.send_data(sid, b"reply")
                    session.close_stream(sid)
                    closed_here.add(sid)
            elif isinstance(event, ConnectionTerminated):
                terminations += 1
                violated = violated or event.reason != "remote sent go-away"
        session.data_to_send()
    assert terminations <= 1, "a session terminated twice"
    return not violated


# -- identify and ping -----------------------------------------------------------------------------


def _identify_seeds() -> dict[str, bytes]:
    info = IdentifyInfo(
        protocol_version="ipfs/0.1.0",
        agent_version="kosmesh/fuzz",
        public_key=ALICE.public_key.to_protobuf(),
        listen_addrs=tuple(Multiaddr.parse(text) for text in _MULTIADDR_SEEDS[:3]),
        observed_addr=Multiaddr.parse("/ip4/192.0.2.1/tcp/50000"),
        protocols=("/ipfs/id/1.0.0", "/ipfs/ping/1.0.0", "/kos/klp/1.0.0"),
        signed_peer_record=b"\x0a\x02\x01\x02",
    )
    whole = encode_identify(info)
    push = encode_identify(IdentifyInfo(protocols=("/ipfs/id/push/1.0.0",)))
    return {"whole": b"\x00" + whole, "reader-two-messages": bytes([1 | 6 << 1]) + whole + push}


@fuzz_target(_identify_seeds)
def identify(data: bytes) -> bool:
    """identify decode, as one length-prefixed message or through the stream reader in pieces; what
    decodes re-encodes to the same info."""
    opt, body = _options(data)
    try:
        if opt & 1:
            reader = IdentifyReader()
            for chunk in _reads(body, opt >> 1):
                reader.receive_data(chunk)
            info = reader.eof()
        else:
            info = decode_identify(body)
    except IdentifyError:
        return False
    try:
        encoded = encode_identify(info)
    except IdentifyError:
        pass  # replacement characters grew a version string past the size cap: refused, as documented
    else:
        assert decode_identify(encoded) == info
    with contextlib.suppress(IdentifyError):
        info.peer_id()
    return True


def _ping_seeds() -> dict[str, bytes]:
    echoes = b"".join(bytes([i]) * PING_SIZE for i in range(3))
    return {
        "responder": b"\x00" + bytes(range(64)),
        "responder-in-pieces": bytes([2 << 1]) + bytes(range(100)),
        "initiator": bytes([1 | 3 << 1]) + echoes,
        "initiator-in-pieces": bytes([1 | 3 << 1 | 5 << 5]) + echoes,
    }


@fuzz_target(_ping_seeds)
def ping(data: bytes) -> bool:
    """ping responder (echoes whole 32-byte payloads, nothing else) and initiator (matches echoes to the
    pings it sent, in order, and refuses anything unasked)."""
    opt, body = _options(data)
    if not opt & 1:
        responder = PingResponder()
        echoed = bytearray()
        for chunk in _reads(body, opt >> 1):
            echoed += responder.receive_data(chunk)
        assert echoed == body[: len(body) - len(body) % PING_SIZE]
        return True
    initiator = PingInitiator()
    sent = [bytes([i]) * PING_SIZE for i in range((opt >> 1) & 15)]
    assert len(sent) <= MAX_OUTSTANDING
    for payload in sent:
        initiator.request(payload)
    done: list[bytes] = []
    try:
        for chunk in _reads(body, opt >> 5):
            done += initiator.receive_data(chunk)
    except PingError:
        return _fails_again(lambda: initiator.receive_data(b""), PingError)
    assert done == sent[: len(done)]
    return len(done) == len(sent)


# -- KLP -------------------------------------------------------------------------------------------


def _klp_message(**overrides: Any) -> KLPMessage:
    """A valid, deterministic message from Alice's agent to Bob's node."""
    fields: dict[str, Any] = {
        "type": MessageType.TASK_REQUEST,
        "source": ALICE_AGENT,
        "target": BOB_NODE,
        "data": {"task": "echo", "text": "hello", "n": [1, 2.5, None, True, b"\x00"]},
        "timestamp_ms": NOW_MS,
        "nonce": _KLP_NONCE,
    }
    fields.update(overrides)
    return build_message(ALICE, **fields)


def _klp_seed_messages() -> dict[str, bytes]:
    return {
        "request": encode_message(_klp_message()),
        "gzip": encode_message(_klp_message(data="compress me " * 20, compression="gzip")),
        "octets": encode_message(_klp_message(content_type="application/octet-stream", data=b"\x00\x01\x02")),
        "response": encode_message(
            _klp_message(
                type=MessageType.TASK_RESPONSE,
                data={"status": "processed", "reason": None, "retry_after": None, "result": "ok"},
                correlation_id="0" * 32,
                priority=Priority.HIGH,
                routing_hints=(RoutingHint("relay", str(BOB_PEER)),),
                trust_requirements=TrustRequirements(5.0, 0, VerificationLevel.STRONG),
            )
        ),
    }


def _klp_framing_seeds() -> dict[str, bytes]:
    messages = _klp_seed_messages()
    frames = encode_frame(messages["request"]) + encode_frame(messages["gzip"])
    return {
        "two-frames": b"\x00" + frames,
        "in-pieces": bytes([9 << 3]) + frames,
        "small-cap": b"\x05" + encode_frame(b"x" * 300, 300),
    }


_FRAME_LIMITS = (MAX_MESSAGE_BYTES, 0, 1, 127, 128, 300, 16383, 16384)


@fuzz_target(_klp_framing_seeds)
def klp_framing(data: bytes) -> bool:
    """KLP length-prefixed frame reader under several size caps, fed in pieces; the frames re-encode to
    exactly the bytes consumed and the buffer never holds more than one frame."""
    opt, body = _options(data)
    limit = _FRAME_LIMITS[opt & 7]
    reader = FrameReader(limit)
    frames: list[bytes] = []
    fed = bytearray()
    for chunk in _reads(body, opt >> 3):
        fed += chunk
        try:
            frames += reader.receive_data(chunk)
        except FramingError:
            return _fails_again(lambda: reader.receive_data(b""), FramingError)
        assert reader.buffered <= len(encode_uvarint(limit)) + limit
    consumed = b"".join(encode_frame(frame, limit) for frame in frames)
    assert fed.startswith(consumed) and len(fed) - len(consumed) == reader.buffered
    return bool(frames) and reader.at_frame_boundary


@fuzz_target(_klp_seed_messages)
def klp_envelope(data: bytes) -> bool:
    """KLP envelope decode, content address and signature check, payload decode; what decodes re-encodes
    (from its fields, caches cleared) to the same bytes, and its payload value is encodable again."""
    try:
        envelope = decode_envelope(data)
    except EnvelopeError as exc:
        assert exc.reason in CODEC_REASONS, exc.reason
        return False
    assert envelope.wire == data
    signed_ok = envelope.verify_signature()
    try:
        message = envelope.to_message()
    except EnvelopeError as exc:
        assert exc.reason in CODEC_REASONS, exc.reason
        return False
    fresh = dataclasses.replace(message)
    assert encode_message(fresh) == data, "a decoded message must re-encode to its own bytes"
    assert signing_bytes(fresh) == envelope.signed
    assert verify_signature(fresh) == signed_ok
    payload = message.payload
    if payload.content_type == CONTENT_TYPE_CBOR and not payload.encryption.enabled:
        encode_data(payload.data)  # a value the decoder accepted must be sendable again (responses echo data)
    json.dumps(message_to_json(message))
    return compute_message_id(fresh) == message.message_id and signed_ok


_TYPES = (*(t.value for t in MessageType), "TASK_CANCEL")
_CONTENT_TYPES = (CONTENT_TYPE_CBOR, "application/octet-stream", "text/plain; charset=utf-8")
_VERSIONS = (KLP_VERSION, "1.7", "2.0")
_PRIORITIES = (1, 5, 8, 10, 3)
_TRUST_SCORES = (0.0, 0.5, 5.0, 6.0, 10.0, 10.5)
_LEVELS = (*(v.value for v in VerificationLevel), "paranoid")
_HOSTILE_SUPPORTED = frozenset(MessageType) - {MessageType.AGENT_MIGRATION}


def _canonical(value: Any) -> bytes:
    return cbor2.dumps(value, canonical=True)


# Fields the input may replace with a CBOR item of its own (or remove, with an empty item); the last two
# are replaced after sealing, so the id or the signature itself is what is wrong.
_OVERRIDABLE = (
    ("version",),
    ("type",),
    ("source",),
    ("target",),
    ("timestamp",),
    ("payload",),
    ("metadata",),
    ("extension",),
    ("payload", "content_type"),
    ("payload", "data"),
    ("payload", "encryption"),
    ("payload", "compression"),
    ("payload", "encryption", "algorithm"),
    ("payload", "compression", "enabled"),
    ("payload", "extension"),
    ("metadata", "nonce"),
    ("metadata", "priority"),
    ("metadata", "ttl"),
    ("metadata", "routing_hints"),
    ("metadata", "correlation_id"),
    ("metadata", "trust_requirements"),
    ("metadata", "trust_requirements", "minimum_trust_score"),
    ("metadata", "trust_requirements", "required_endorsements"),
    ("metadata", "trust_requirements", "verification_level"),
    ("metadata", "extension"),
    ("metadata", "message_id"),
    ("signature",),
)
_AFTER_SEALING = frozenset({("metadata", "message_id"), ("signature",)})
# Past the 1 MiB line above which the item count is walked before decoding; not up to the 16 MiB bomb
# cap (tests/klp covers that), because each grown input is inflated and walked twice (the replay check).
_GROWN_LIMIT = 2 << 20
_GROWN_HEAD = 9  # bytes kept once when a payload is grown: room for a CBOR array head with a 64-bit count


# The envelope's own tag refusal: cbor2 builds no datetimes, regexes or shared (cyclic) references.
_NO_TAGS, _refuse_tag = envelope_module._NO_TAGS, envelope_module._reject_tag


def _cbor_item(raw: bytes) -> Any:
    """The CBOR item ``raw`` holds, else ``raw`` as text: either way, a value to put in a field."""
    try:
        return cbor2.loads(raw, semantic_decoders=_NO_TAGS, tag_hook=_refuse_tag, max_depth=16)
    except Exception:
        return raw.decode("latin-1")


def _override(envelope: dict[str, Any], path: tuple[str, ...], raw: bytes) -> None:
    """Replace (or, for an empty item, remove) the field at ``path``."""
    parent: Any = envelope
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(parent, dict):
        return
    if raw:
        parent[path[-1]] = _cbor_item(raw)
    else:
        parent.pop(path[-1], None)


def _signed_hostile_envelope(body: bytes, grown: bool = False) -> tuple[bytes, bool]:
    """A correctly signed envelope from Alice (id and signature derived as the spec says, with cbor2's
    canonical encoder, not kosmesh's) whose field choices and payload bytes come from the input; and
    whether a field was overridden with an item of the input's own.

    Input: flags, kinds, picks, ttl/2, skew+128, grow, field, item length, item, payload bytes.
    Flags: 1 override a field, 2 gzip, 4 the payload claims gzip itself, 8 encrypted, 16 a routing
    hint, 32 one endorsement required, 64 correlation id (128 unused). ``grown``: always gzip the payload after
    repeating all but its first 9 bytes 1 + grow**2 times (at most 2 MiB).
    """
    r = _Bytes(body)
    flags, kinds, picks, ttl, skew, grow, field, item_length = (r.byte() for _ in range(8))
    flags = (flags | 2) & ~4 if grown else flags
    item = r.take(item_length)
    data = r.rest()
    compression: dict[str, Any] = {"enabled": False}
    if flags & 2:
        compression = {"enabled": True, "algorithm": "gzip"}
        if not flags & 4:  # else the input's own bytes claim to be gzip
            if grown and len(data) > _GROWN_HEAD:
                head, tail = data[:_GROWN_HEAD], data[_GROWN_HEAD:]
                data = head + tail * min(1 + grow * grow, _GROWN_LIMIT // len(tail))
            data = zlib.compress(data, 6, wbits=31)
    encryption: dict[str, Any] = {"enabled": False}
    if flags & 8:
        encryption = {"enabled": True, "algorithm": sorted(ENCRYPTION_ALGORITHMS)[kinds >> 7]}
    metadata: dict[str, Any] = {
        "nonce": _KLP_NONCE,
        "priority": _PRIORITIES[picks % len(_PRIORITIES)],
        "ttl": ttl * 2,
        "routing_hints": [{"kind": "relay", "value": str(BOB_PEER)}] if flags & 16 else [],
        "trust_requirements": {
            "minimum_trust_score": _TRUST_SCORES[(picks >> 3) % len(_TRUST_SCORES)],
            "required_endorsements": (flags >> 5) & 1,
            "verification_level": _LEVELS[(picks >> 6) % len(_LEVELS)],
        },
    }
    if flags & 64:
        metadata["correlation_id"] = "0" * 32
    envelope: dict[str, Any] = {
        "version": _VERSIONS[(kinds >> 5) % len(_VERSIONS)],
        "type": _TYPES[kinds % len(_TYPES)],
        "source": str(ALICE_AGENT),
        "target": str(BOB_NODE),
        "payload": {
            "content_type": _CONTENT_TYPES[(kinds >> 3) % len(_CONTENT_TYPES)],
            "data": data,
            "encryption": encryption,
            "compression": compression,
        },
        "metadata": metadata,
        "timestamp": NOW_MS + (skew - 128) * 2000,
    }
    path = _OVERRIDABLE[field % len(_OVERRIDABLE)] if flags & 1 else None
    if path is not None and path not in _AFTER_SEALING:
        _override(envelope, path, item)
    try:
        _seal(envelope)
        if path in _AFTER_SEALING:
            _override(envelope, path, item)
        return _canonical(envelope), path is not None
    except Exception:  # an item cbor2 cannot encode again (or encode canonically): no override then
        return _signed_hostile_envelope(bytes([flags & ~1]) + body[1:], grown) if path is not None else (b"", False)


def _seal(envelope: dict[str, Any]) -> None:
    """Content-address and sign, as the spec says: id over the map without id and signature."""
    metadata = envelope.get("metadata")
    if isinstance(metadata, dict):
        metadata.pop("message_id", None)
        metadata["message_id"] = hashlib.sha256(_canonical(envelope)).digest()[:16].hex()
    envelope["signature"] = ALICE.sign(_canonical(envelope))


def _klp_pipeline_seeds() -> dict[str, bytes]:
    messages = _klp_seed_messages()
    # flags, kinds, picks, ttl/2, skew+128, grow, field, item length: a TASK_REQUEST Bob's node accepts.
    accepted = bytes([0, 0, 1, 30, 128, 0, 0, 0])
    response = {"status": "deferred", "reason": "busy", "retry_after": 1.5, "result": None}
    return {
        "request": b"\x00" + messages["request"],
        "response": b"\x00" + messages["response"],
        "hostile-request": b"\x01" + accepted + encode_data({"task": "echo", "text": "hi"}),
        "hostile-gzip-request": b"\x01" + bytes([2]) + accepted[1:] + encode_data(["a"] * 50),
        "hostile-response": b"\x01" + bytes([64, 1, 1, 30, 128, 0, 0, 0]) + encode_data(response),
        "hostile-override-ttl": b"\x01"
        + bytes([1, 0, 1, 0, 128, 0, _OVERRIDABLE.index(("metadata", "ttl")), 2])
        + b"\x18\x3c"  # ttl 60 as a CBOR item of the input's own
        + encode_data("ttl from the input"),
    }


def _klp_processor() -> KLPProcessor:
    """Bob's node: trusts every peer 5.0, handles every type but AGENT_MIGRATION, remembers 4 ids."""
    return KLPProcessor(
        local_peer_id=BOB_PEER, trust_score=lambda _peer: 5.0, supported_types=_HOSTILE_SUPPORTED, replay_capacity=4
    )


def _check_result(result: CheckResult) -> None:
    """A known reason, and a message attached only when its signature verified (so the node answers
    authenticated senders only)."""
    if isinstance(result, Rejected):
        assert result.reason in REJECTION_REASONS, f"unknown rejection reason {result.reason!r}"
    else:
        assert isinstance(result, Accepted)
    assert result.message is None or verify_signature(result.message)


@fuzz_target(_klp_pipeline_seeds)
def klp_pipeline(data: bytes) -> bool:
    """KLP processing pipeline on raw bytes, or on a correctly signed envelope whose fields and payload are
    hostile (so decompression, payload decode, timestamp window, TTL, replay, trust and type checks are
    all reached); check() never raises, an accepted message replays as a replay and can be answered."""
    opt, body = _options(data)
    wire, overridden = _signed_hostile_envelope(body) if opt & 1 else (body, False)
    return _through_pipeline(wire, canonical=bool(opt & 1) and not overridden)


def _klp_inflation_seeds() -> dict[str, bytes]:
    # flags, kinds, picks, ttl/2, skew+128, grow, field, item length; then the payload: an array head
    # with a 64-bit count, then one item that is repeated 1 + grow**2 times.
    head = bytes([0, 0, 1, 30, 128, 102, 0, 0]) + b"\x9b" + (1 + 102 * 102).to_bytes(8, "big")
    return {
        # 10,405 byte strings, 1.06 MB once inflated: walked, decoded, then too large to echo back.
        "byte-strings": head + b"\x58\x64" + b"x" * 100,
        "text-strings": head + b"\x78\x64" + b"y" * 100,
    }


@fuzz_target(_klp_inflation_seeds)
def klp_payload_inflation(data: bytes) -> bool:
    """KLP pipeline on correctly signed messages whose gzip payload inflates past 1 MiB (up to 2 MiB), so
    the item-count walk before decoding, its limits and large-payload decoding and echoing are reached.
    Its own target because each such input costs milliseconds, which would starve klp_pipeline."""
    wire, overridden = _signed_hostile_envelope(data, grown=True)
    return _through_pipeline(wire, canonical=not overridden)


def _through_pipeline(wire: bytes, canonical: bool) -> bool:
    """check() never raises; an accepted message re-encodes to itself, is a replay the second time and
    can be answered. ``canonical``: the bytes are cbor2's canonical encoding, never "malformed"."""
    processor = _klp_processor()
    result = processor.check(wire, NOW)
    _check_result(result)
    if isinstance(result, Rejected):
        assert not (canonical and result.reason == REASON_MALFORMED), (
            f"cbor2's canonical encoding was refused as non-deterministic CBOR: {result.detail}"
        )
        return False
    message = result.message
    assert encode_message(dataclasses.replace(message)) == wire
    again = processor.check(wire, NOW)
    assert isinstance(again, Rejected) and again.reason == REASON_REPLAY, "an accepted message was accepted twice"
    processor.is_for_local_node(message)
    if message.type is MessageType.TASK_RESPONSE:
        with contextlib.suppress(EnvelopeError):
            parse_response(message)
        return True
    try:
        response = make_response(
            BOB,
            message,
            ProcessingResult("processed", data=message.payload.data),
            source=BOB_NODE,
            timestamp_ms=NOW_MS + 1,
        )
    except EnvelopeError:
        return True  # the echo went past a bound (1 MiB on the wire, nesting depth): refused, as documented
    assert parse_response(decode_message(encode_message(response))).status == "processed"
    return True


def _klp_address_seeds() -> dict[str, bytes]:
    agent = str(ALICE_AGENT).encode()
    return {
        "agent": b"\x00" + agent,
        "name-with-query-fragment": b"\x00klp://node.domain.kai/services/search?q=1#top",
        "node-no-path": b"\x01klp://" + str(BOB_PEER).encode(),
        "fields": b"\x02" + b"\x00".join((b"node.domain.kai", b"/agents/a", b"x=1", b"f")),
    }


@fuzz_target(_klp_address_seeds)
def klp_address(data: bytes) -> bool:
    """KLP address parse (UTF-8 text, text with lone surrogates, or separate authority/path/query/fragment
    fields); what parses has one spelling, which parses back to the same address."""
    opt, body = _options(data)
    mode = (opt & 3) % 3
    try:
        if mode == 2:
            parts = body.decode("utf-8", "replace").split("\x00", 3)
            query = parts[2] if len(parts) > 2 else None
            fragment = parts[3] if len(parts) > 3 else None
            address = KLPAddress(parts[0], parts[1] if len(parts) > 1 else "/", query, fragment)
        else:
            address = KLPAddress.parse(body.decode("utf-8", "surrogateescape" if mode else "replace"))
    except AddressError:
        return False
    text = str(address)
    again = KLPAddress.parse(text)
    assert again == address and str(again) == text, f"{text!r} does not parse back to itself"
    peer = address.authority_peer_id()
    assert (peer is None) == address.is_name()
    if peer is not None:
        assert KLPAddress.parse(str(KLPAddress.for_node(peer))).authority == address.authority
        signer_key_for(address.authority)
    address.agent_name()
    address.service_name()
    return True


# -- identity --------------------------------------------------------------------------------------


def _base58_seeds() -> dict[str, bytes]:
    return {
        "peer-id-text": b"\x00" + str(ALICE_PEER).encode(),
        "leading-zeros": b"\x00" + b58encode(b"\x00\x00\x01\x02").encode(),
        "encode-bytes": b"\x01" + b"\x00\x00" + bytes(range(40)),
    }


@fuzz_target(_base58_seeds)
def base58(data: bytes) -> bool:
    """base58btc decode of any text, and encode of any bytes; both directions round-trip."""
    opt, body = _options(data)
    if opt & 1:
        text = b58encode(body)
        if len(text) > MAX_DECODE_CHARS:
            return False
        assert b58decode(text) == body
        return True
    text = body.decode("latin-1") if opt & 2 else body.decode("utf-8", "replace")
    try:
        raw = b58decode(text)
    except ValueError:  # base58 declares no class of its own: ValueError is its documented failure
        return False
    assert b58encode(raw) == text
    return True


def _peer_id_seeds() -> dict[str, bytes]:
    hashed = PeerId(bytes((0x12, 32)) + bytes(range(32)))
    return {
        "base58": b"\x00" + str(ALICE_PEER).encode(),
        "sha256-base58": b"\x00" + hashed.to_base58().encode(),
        "multihash": b"\x01" + BOB_PEER.to_bytes(),
        "cid": b"\x02" + ALICE_PEER.to_cid().encode(),
    }


@fuzz_target(_peer_id_seeds)
def peer_id(data: bytes) -> bool:
    """peer id parse from base58btc or CIDv1 text and from multihash bytes; every spelling of what parses
    round-trips, and an inlined key is extracted without raising."""
    opt, body = _options(data)
    mode = (opt & 3) % 3
    try:
        if mode == 1:
            peer = PeerId(body)
        else:
            text = body.decode("utf-8", "replace")
            peer = PeerId.from_string(text) if mode == 0 else PeerId.from_cid(text)
    except PeerIdError:
        return False
    assert PeerId(peer.to_bytes()) == peer
    assert PeerId.from_string(peer.to_base58()) == peer
    assert PeerId.from_cid(peer.to_cid()) == peer == PeerId.from_string(peer.to_cid())
    peer.extract_public_key()
    return True


def _did_key_seeds() -> dict[str, bytes]:
    did = did_key_from_public_key(ALICE.public_key).encode()
    return {
        "did-key": b"\x00" + did,
        "did-key-document-2020": bytes([4 | 8]) + did,
        "from-peer-id": b"\x01" + str(BOB_PEER).encode(),
        "from-raw-key": b"\x02" + BOB.public_key.raw,
    }


@fuzz_target(_did_key_seeds)
def did_key(data: bytes) -> bool:
    """did:key parse and DID document expansion, did:key from peer id text, and from raw key bytes; a
    parsed did:key spells itself again."""
    opt, body = _options(data)
    mode = (opt & 3) % 3
    if mode == 2:
        try:
            key = Ed25519PublicKey(body)
            did = did_key_from_public_key(key)
        except (KeyError_, DidKeyError):
            return False
        assert public_key_from_did_key(did) == key
        return True
    text = body.decode("utf-8", "replace")
    if mode == 1:
        try:
            did = did_key_from_peer_id(text)
        except (PeerIdError, DidKeyError):
            return False
        assert did_key_from_public_key(public_key_from_did_key(did)) == did
        return True
    key_format: KeyFormat = "Ed25519VerificationKey2020" if opt & 4 else "Multikey"
    try:
        key = public_key_from_did_key(text)
        document = did_key_document(text, key_format=key_format, include_key_agreement=bool(opt & 8))
    except DidKeyError:
        return False
    assert did_key_from_public_key(key) == text and document["id"] == text
    assert peer_id_from_did_key(text) == PeerId.from_public_key(key)
    return True


def _identity_keys_seeds() -> dict[str, bytes]:
    legacy = encode_fields([(1, 1), (2, ALICE.seed + ALICE.public_key.raw * 2)])
    return {
        "public": b"\x00" + ALICE.public_key.to_protobuf(),
        "private": b"\x01" + ALICE.to_protobuf(),
        "private-legacy": b"\x01" + legacy,
    }


@fuzz_target(_identity_keys_seeds)
def identity_keys(data: bytes) -> bool:
    """libp2p PublicKey / PrivateKey protobuf decode (Ed25519 only); what decodes re-encodes to an equal key
    that signs and verifies."""
    opt, body = _options(data)
    if opt & 1:
        try:
            private = Ed25519PrivateKey.from_protobuf(body)
        except KeyError_:
            return False
        assert Ed25519PrivateKey.from_protobuf(private.to_protobuf()).public_key == private.public_key
        assert private.public_key.verify(private.sign(b"fuzz"), b"fuzz")
        return True
    try:
        key = decode_public_key(body)
    except KeyError_:
        return False
    assert decode_public_key(key.to_protobuf()) == key
    assert key.verify(bytes(64), b"fuzz") in (True, False)
    return True


_KEY_FILE = Path("fuzz.key")
_PASSPHRASE = "fuzz passphrase"


def _keystore_seeds() -> dict[str, bytes]:
    salt, nonce = bytes(range(nacl.pwhash.argon2id.SALTBYTES)), bytes(range(nacl.secret.SecretBox.NONCE_SIZE))
    opslimit, memlimit = nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN
    secret = nacl.pwhash.argon2id.kdf(32, _PASSPHRASE.encode(), salt, opslimit=opslimit, memlimit=memlimit)
    sealed = nacl.secret.SecretBox(secret).encrypt(ALICE.to_protobuf(), nonce).ciphertext
    encrypted = {
        "format": "kosmesh-node-key",
        "version": 1,
        "type": "ed25519",
        "peer_id": str(ALICE_PEER),
        "encrypted": True,
        "kdf": {"name": "argon2id", "salt": _b64(salt), "opslimit": opslimit, "memlimit": memlimit},
        "cipher": "xsalsa20-poly1305",
        "nonce": _b64(nonce),
        "ciphertext": _b64(sealed),
    }
    return {
        "plain": b"\x00" + _encode_key_file(ALICE, None, opslimit, memlimit),
        "bare-protobuf": b"\x00" + ALICE.to_protobuf(),
        "encrypted": b"\x01" + json.dumps(encrypted, indent=2).encode(),
    }


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _cheap_kdf(body: bytes) -> bool:
    """False when a key file asks Argon2id for more than a fuzz run affords (a documented, bounded cost:
    up to 16 passes over 1 GiB), so the fuzzer does not spend its time there."""
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return True
    kdf = doc.get("kdf") if isinstance(doc, dict) else None
    if not isinstance(kdf, dict):
        return True
    ops, mem = kdf.get("opslimit"), kdf.get("memlimit")
    return not (isinstance(ops, int) and isinstance(mem, int) and (ops > 2 or mem > 1 << 20))


@fuzz_target(_keystore_seeds)
def keystore(data: bytes) -> bool:
    """Node key file decode (JSON, passphrase-encrypted JSON, bare libp2p protobuf); only KeystoreError
    escapes, and a decoded key writes out and reads back the same."""
    opt, body = _options(data)
    passphrase = _PASSPHRASE if opt & 1 else None
    if passphrase is not None and not _cheap_kdf(body):
        return False
    try:
        key = _decode_key_file(body, passphrase, _KEY_FILE)
    except KeystoreError:
        return False
    again = _decode_key_file(_encode_key_file(key, None, 0, 0), None, _KEY_FILE)
    assert again.public_key == key.public_key
    return True
from tests.fuzz import targets_connection  # noqa: E402, F401  (registers the connection core target)
