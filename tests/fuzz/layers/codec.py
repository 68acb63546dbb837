"""Fuzz targets for the codec layer: varints, the protobuf subset, base58btc, length-prefixed frames."""

from __future__ import annotations

from kosmesh.codec.base58 import MAX_DECODE_CHARS, b58decode, b58encode
from kosmesh.codec.frames import FrameError, LengthPrefixedReader, encode_frame
from kosmesh.codec.protobuf import ProtobufError, all_bytes, decode_fields, encode_fields, first_bytes, first_int
from kosmesh.codec.varint import MAX_VARINT_BYTES, VarintError, decode_uvarint, encode_uvarint
from kosmesh.wire.noise import (
    encode_handshake_payload,
)
from tests.fuzz.inputs import (
    ALICE,
    ALICE_PEER,
    fails_again,
    options,
    reads,
)
from tests.fuzz.registry import fuzz_target

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
    opt, body = options(data)
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
    opt, body = options(data)
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


def _base58_seeds() -> dict[str, bytes]:
    return {
        "peer-id-text": b"\x00" + str(ALICE_PEER).encode(),
        "leading-zeros": b"\x00" + b58encode(b"\x00\x00\x01\x02").encode(),
        "encode-bytes": b"\x01" + b"\x00\x00" + bytes(range(40)),
    }


@fuzz_target(_base58_seeds)
def base58(data: bytes) -> bool:
    """base58btc decode of any text, and encode of any bytes; both directions round-trip."""
    opt, body = options(data)
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


# -- length-prefixed frames ------------------------------------------------------------------------

_FRAME_LIMITS = (0, 1, 5, 127, 128, 300, 16383, 1 << 20)


def _frames_seeds() -> dict[str, bytes]:
    two = encode_frame(b"hello", 300) + encode_frame(b"x" * 200, 300)
    return {
        "push-two-frames": b"\x05" + two,
        "pull-in-pieces-then-rest": bytes([0x80 | 1 << 3 | 5]) + two + b"raw application bytes",
        "budget-shrinks": bytes([0x40 | 5]) + encode_frame(b"a" * 100, 300) + encode_frame(b"b" * 150, 300),
    }


@fuzz_target(_frames_seeds)
def length_prefixed_frames(data: bytes) -> bool:
    """The shared uvarint-length-prefixed frame reader, push (receive_data) or pull (feed + next_frame,
    then take_rest), optionally lowering max_frame as a total budget is spent; frames re-encode to the
    bytes consumed and at most one partial frame is ever buffered."""
    opt, body = options(data)
    limit = _FRAME_LIMITS[opt & 7]
    pull, budget = bool(opt & 0x80), bool(opt & 0x40)
    reader = LengthPrefixedReader(limit)
    frames: list[bytes] = []
    fed = bytearray()
    spent = 0
    for chunk in reads(body, (opt >> 3) & 7):
        fed += chunk
        try:
            if pull:
                reader.feed(chunk)
                got = []
                while (frame := reader.next_frame()) is not None:
                    got.append(frame)
                    if budget:
                        spent += len(frame)
                        reader.max_frame = limit - spent
            else:
                got = reader.receive_data(chunk)
        except FrameError:
            return fails_again(lambda: reader.receive_data(b""), FrameError)
        frames += got
        assert all(len(f) <= limit for f in got)
        assert reader.buffered <= len(encode_uvarint(limit)) + limit or pull  # pull buffers what it is fed
    consumed = b"".join(encode_frame(frame, limit) for frame in frames)
    assert fed.startswith(consumed) and len(fed) - len(consumed) == reader.buffered
    if pull:
        assert reader.take_rest() == bytes(fed[len(consumed) :]) and reader.at_frame_boundary
    return bool(frames)
