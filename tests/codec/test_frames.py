"""The shared uvarint-length-prefixed frame reader: any chunking reassembles, hostile prefixes fail early."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kosmesh
from kosmesh.codec.frames import FrameError, LengthPrefixedReader, encode_frame
from kosmesh.codec.varint import encode_uvarint

SRC = Path(kosmesh.__file__).parent


def _cut(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        chunks.append(data[pos : pos + size])
        pos += size
        i += 1
    return chunks


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=300), max_size=12), st.lists(st.integers(1, 64), min_size=1, max_size=50))
def test_any_chunking_reassembles_with_both_apis(payloads: list[bytes], sizes: list[int]) -> None:
    stream = b"".join(encode_frame(p, 300) for p in payloads)
    pushed = LengthPrefixedReader(300)
    pulled = LengthPrefixedReader(300)
    got_pushed: list[bytes] = []
    got_pulled: list[bytes] = []
    for chunk in _cut(stream, sizes):
        got_pushed += pushed.receive_data(chunk)
        pulled.feed(chunk)
        while (frame := pulled.next_frame()) is not None:
            got_pulled.append(frame)
        assert pushed.buffered == pulled.buffered <= 300 + 2  # never more than one partial frame
    assert got_pushed == got_pulled == payloads
    assert pushed.at_frame_boundary and pulled.at_frame_boundary


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(0, 300), st.lists(st.integers(1, 40), min_size=1, max_size=10))
def test_hostile_bytes_give_frames_or_frame_error(data: bytes, max_frame: int, sizes: list[int]) -> None:
    reader = LengthPrefixedReader(max_frame)
    frames: list[bytes] = []
    try:
        for chunk in _cut(data, sizes):
            frames += reader.receive_data(chunk)
    except FrameError:
        with pytest.raises(FrameError, match="already failed"):
            reader.receive_data(b"\x00")
        assert reader.buffered == 0
        return
    assert all(len(f) <= max_frame for f in frames)
    assert sum(len(encode_frame(f, max_frame)) for f in frames) + reader.buffered == len(data)


def test_oversized_prefix_is_refused_before_any_body() -> None:
    reader = LengthPrefixedReader(1000)
    with pytest.raises(FrameError, match="1001 bytes exceeds 1000"):
        reader.receive_data(encode_uvarint(1001))


def test_incomplete_prefix_already_too_long_is_refused() -> None:
    reader = LengthPrefixedReader(100)  # fits one prefix byte; a continuation byte cannot end below 128
    with pytest.raises(FrameError, match="more than 100"):
        reader.receive_data(b"\x80")


@pytest.mark.parametrize("prefix", [b"\x80\x00", b"\xff" * 10])
def test_malformed_prefix(prefix: bytes) -> None:
    with pytest.raises(FrameError, match="malformed"):
        LengthPrefixedReader(2**62).receive_data(prefix)


def test_take_rest_returns_what_follows_the_last_frame_read() -> None:
    reader = LengthPrefixedReader(10)
    reader.feed(b"\x02hi\x03abc" + b"\xff\xff raw application bytes")
    assert reader.next_frame() == b"hi"
    assert reader.next_frame() == b"abc"
    assert reader.take_rest() == b"\xff\xff raw application bytes"
    assert reader.at_frame_boundary and reader.next_frame() is None


def test_max_frame_can_be_lowered_between_frames() -> None:
    reader = LengthPrefixedReader(10)
    assert reader.receive_data(b"\x06abcdef") == [b"abcdef"]
    reader.max_frame = 4  # e.g. what is left of a total budget
    assert reader.receive_data(b"\x04abcd") == [b"abcd"]
    reader.max_frame = 0
    with pytest.raises(FrameError, match="exceeds 0"):
        reader.receive_data(b"\x01z")


def test_subclass_chooses_its_error() -> None:
    class Mine(FrameError):
        pass

    class Reader(LengthPrefixedReader):
        __slots__ = ()
        error = Mine

    with pytest.raises(Mine):
        Reader(1).receive_data(b"\x02")
    with pytest.raises(Mine):
        encode_frame(b"xx", 1, Mine)


def test_negative_limit_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        LengthPrefixedReader(-1)


# -- layering: codec is the bottom of the stack --------------------------------------------------------


def _kosmesh_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "kosmesh" or name.startswith("kosmesh.")}


def test_codec_imports_nothing_above_it() -> None:
    for path in sorted((SRC / "codec").glob("*.py")):
        above = {m for m in _kosmesh_imports(path) if not m.startswith("kosmesh.codec")}
        assert not above, f"{path.name} imports {sorted(above)}"


def test_identity_builds_on_codec_not_on_wire() -> None:
    for path in sorted((SRC / "identity").glob("*.py")):
        above = {m for m in _kosmesh_imports(path) if not m.startswith(("kosmesh.codec", "kosmesh.identity"))}
        assert not above, f"identity/{path.name} imports {sorted(above)}"
