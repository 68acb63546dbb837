"""Property tests for the varint and protobuf codecs that every libp2p message rests on."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kosmesh.codec.protobuf import ProtobufError, all_bytes, decode_fields, encode_fields, first_bytes, first_int
from kosmesh.codec.varint import VarintError, decode_uvarint, encode_uvarint

U63 = st.integers(min_value=0, max_value=2**63 - 1)


@given(U63)
def test_varint_round_trip(value: int) -> None:
    encoded = encode_uvarint(value)
    assert decode_uvarint(encoded) == (value, len(encoded))
    assert len(encoded) <= 9


@given(U63, st.binary(max_size=16))
def test_varint_with_trailing_bytes_and_offset(value: int, tail: bytes) -> None:
    encoded = b"\x00" + encode_uvarint(value) + tail
    assert decode_uvarint(encoded, 1) == (value, 1 + len(encode_uvarint(value)))


@given(U63)
def test_truncated_varint_is_incomplete(value: int) -> None:
    encoded = encode_uvarint(value)
    for cut in range(len(encoded)):
        assert decode_uvarint(encoded[:cut]) is None


def test_spec_examples() -> None:
    # multiformats unsigned-varint examples
    assert encode_uvarint(1) == b"\x01"
    assert encode_uvarint(127) == b"\x7f"
    assert encode_uvarint(128) == b"\x80\x01"
    assert encode_uvarint(255) == b"\xff\x01"
    assert encode_uvarint(300) == b"\xac\x02"
    assert encode_uvarint(16384) == b"\x80\x80\x01"


def test_overlong_and_non_minimal_varints_are_refused() -> None:
    with pytest.raises(VarintError):
        decode_uvarint(b"\xff" * 9 + b"\x01")
    with pytest.raises(VarintError):
        decode_uvarint(b"\x81\x00")  # 1 encoded in two bytes
    with pytest.raises(ValueError):
        encode_uvarint(-1)


@given(st.binary(max_size=12))
def test_random_varint_bytes_never_crash(data: bytes) -> None:
    try:
        got = decode_uvarint(data)
    except VarintError:
        return
    if got is not None:
        value, end = got
        assert encode_uvarint(value) == data[:end]


FIELDS = st.lists(
    st.tuples(st.integers(min_value=1, max_value=2**20), st.one_of(U63, st.binary(max_size=64))), max_size=20
)


@given(FIELDS)
def test_protobuf_round_trip(fields: list[tuple[int, int | bytes]]) -> None:
    assert decode_fields(encode_fields(fields)) == fields


@given(FIELDS)
def test_protobuf_accessors(fields: list[tuple[int, int | bytes]]) -> None:
    decoded = decode_fields(encode_fields(fields))
    for number in {n for n, _ in fields}:
        values = [v for n, v in fields if n == number]
        ints = [v for v in values if isinstance(v, int)]
        blobs = [v for v in values if isinstance(v, bytes)]
        assert first_int(decoded, number) == (ints[0] if ints else None)
        assert first_bytes(decoded, number) == (blobs[0] if blobs else None)
        assert all_bytes(decoded, number) == blobs


def test_protobuf_skips_fixed_width_fields() -> None:
    data = encode_fields([(1, 5)]) + bytes([2 << 3 | 1]) + b"\0" * 8 + bytes([3 << 3 | 5]) + b"\0" * 4
    assert decode_fields(data + encode_fields([(4, b"x")])) == [(1, 5), (4, b"x")]


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05abc",  # length overruns the message
        b"\x08",  # varint value missing
        b"\x00\x01",  # field number 0
        b"\x0b",  # wire type 3 (groups) unsupported
        b"\x09\x00",  # truncated fixed64
        b"\x0d\x00",  # truncated fixed32
        b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # overlong length varint
    ],
)
def test_protobuf_malformed(data: bytes) -> None:
    with pytest.raises(ProtobufError):
        decode_fields(data)


def test_protobuf_field_count_is_bounded() -> None:
    with pytest.raises(ProtobufError, match="too many"):
        decode_fields(encode_fields([(1, 1)] * 20), max_fields=10)


@given(st.binary(max_size=256))
def test_random_protobuf_bytes_raise_only_protobuf_error(data: bytes) -> None:
    with contextlib.suppress(ProtobufError):
        decode_fields(data)
