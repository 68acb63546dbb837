"""Length-prefixed KLP frames on a stream: any chunking reassembles; bad prefixes fail early."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kosmesh.codec.varint import encode_uvarint
from kosmesh.klp import PROTOCOL_ID, FrameReader, FramingError, encode_frame


def test_protocol_id() -> None:
    assert PROTOCOL_ID == "/kos/klp/1.0.0"


def test_encode_frame_prefixes_length() -> None:
    assert encode_frame(b"") == b"\x00"
    assert encode_frame(b"abc") == b"\x03abc"
    assert encode_frame(b"x" * 300) == b"\xac\x02" + b"x" * 300
    with pytest.raises(FramingError):
        encode_frame(b"x" * 11, max_frame=10)


def test_reader_returns_whole_frames_only() -> None:
    reader = FrameReader()
    assert reader.at_frame_boundary
    assert reader.receive_data(b"\x03ab") == []
    assert reader.buffered == 3 and not reader.at_frame_boundary
    assert reader.receive_data(b"c\x00\x01") == [b"abc", b""]
    assert reader.buffered == 1
    assert reader.receive_data(b"z") == [b"z"]
    assert reader.at_frame_boundary


@settings(max_examples=200)
@given(
    st.lists(st.binary(max_size=300), max_size=12),
    st.lists(st.integers(1, 64), min_size=1, max_size=50),
)
def test_any_chunking_reassembles(payloads: list[bytes], sizes: list[int]) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    reader = FrameReader(max_frame=1000)
    frames: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(stream):
        size = sizes[i % len(sizes)]
        frames += reader.receive_data(stream[pos : pos + size])
        pos += size
        i += 1
    assert frames == payloads
    assert reader.at_frame_boundary


def test_oversized_prefix_fails_before_the_body_arrives() -> None:
    reader = FrameReader(max_frame=1 << 20)
    with pytest.raises(FramingError, match="exceeds"):
        reader.receive_data(encode_uvarint((1 << 20) + 1))  # no body sent at all


def test_incomplete_prefix_already_too_long_fails() -> None:
    reader = FrameReader(max_frame=1 << 20)
    assert reader.receive_data(b"\xff\xff") == []  # a third byte could still end it below 1 MiB
    with pytest.raises(FramingError, match="more than"):
        reader.receive_data(b"\xff")  # three continuation bytes: at least 2**21 > 1 MiB


def test_exact_limit_is_accepted() -> None:
    reader = FrameReader(max_frame=1000)
    assert reader.receive_data(encode_frame(b"x" * 1000, max_frame=1000)) == [b"x" * 1000]


@pytest.mark.parametrize("prefix", [b"\x80\x00", b"\xff" * 10])
def test_malformed_prefix(prefix: bytes) -> None:
    reader = FrameReader(max_frame=2**62)
    with pytest.raises(FramingError):
        reader.receive_data(prefix)


def test_reader_stays_failed() -> None:
    reader = FrameReader(max_frame=10)
    with pytest.raises(FramingError):
        reader.receive_data(b"\x0b")
    with pytest.raises(FramingError, match="already failed"):
        reader.receive_data(b"\x01a")
    assert reader.buffered == 0


@settings(max_examples=200)
@given(st.binary(max_size=200), st.integers(0, 64))
def test_arbitrary_bytes_give_frames_or_framing_error(data: bytes, max_frame: int) -> None:
    reader = FrameReader(max_frame=max_frame)
    try:
        frames = reader.receive_data(data)
    except FramingError:
        return
    assert all(len(f) <= max_frame for f in frames)
    assert sum(len(encode_frame(f, max_frame)) for f in frames) + reader.buffered == len(data)
