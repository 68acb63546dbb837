"""multistream-select 1.0: byte-exact exchanges, pipelining, chunking, hostile input."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kosmesh.codec.varint import encode_uvarint
from kosmesh.wire.multistream import (
    MAX_MESSAGE,
    PROTOCOL_ID,
    MultistreamDialer,
    MultistreamError,
    MultistreamListener,
    encode_message,
)

HEADER = b"\x13/multistream/1.0.0\n"
NA = b"\x03na\n"  # 0x036e610a in the multistream-select README


def _only(*protocols: str) -> MultistreamListener:
    return MultistreamListener(lambda p: p in protocols)


def test_message_framing_matches_spec() -> None:
    assert encode_message(PROTOCOL_ID) == HEADER
    assert encode_message("na") == NA
    assert encode_message("ls") == bytes.fromhex("036c730a")
    assert encode_message("/yamux/1.0.0") == b"\x0d/yamux/1.0.0\n"
    long = "/" + "x" * 200
    assert encode_message(long) == b"\xca\x01" + long.encode() + b"\n"  # 202 = 0xca 0x01
    assert len(encode_message("x" * (MAX_MESSAGE - 1))) == MAX_MESSAGE + 2
    with pytest.raises(MultistreamError):
        encode_message("x" * MAX_MESSAGE)


def test_exchange_with_na_is_byte_exact() -> None:
    dialer = MultistreamDialer(["/noise", "/yamux/1.0.0"])
    listener = _only("/yamux/1.0.0")

    first = dialer.initiate()
    assert first == HEADER + b"\x07/noise\n"
    assert listener.initiate() == HEADER
    assert listener.receive_data(first) == NA
    assert listener.selected is None

    assert dialer.receive_data(HEADER) == b""
    second = dialer.receive_data(NA)
    assert second == b"\x0d/yamux/1.0.0\n"
    assert dialer.selected is None

    echo = listener.receive_data(second)
    assert echo == b"\x0d/yamux/1.0.0\n"
    assert listener.selected == "/yamux/1.0.0"
    assert listener.unconsumed() == b""

    assert dialer.receive_data(echo) == b""
    assert dialer.selected == "/yamux/1.0.0"
    assert dialer.unconsumed() == b""


def test_pipelined_dialer_with_application_data_in_one_chunk() -> None:
    # js-libp2p's lazy select: header, proposal and the first application bytes together.
    chunk = HEADER + encode_message("/ipfs/ping/1.0.0") + b"\x00" * 32
    listener = _only("/ipfs/ping/1.0.0")
    reply = listener.receive_data(chunk)  # initiate() never called: header is prepended
    assert reply == HEADER + encode_message("/ipfs/ping/1.0.0")
    assert listener.selected == "/ipfs/ping/1.0.0"
    assert listener.unconsumed() == b"\x00" * 32


def test_dialer_gets_listener_data_after_echo() -> None:
    dialer = MultistreamDialer(["/ipfs/id/1.0.0"])
    dialer.initiate()
    assert dialer.receive_data(HEADER + encode_message("/ipfs/id/1.0.0") + b"identify!") == b""
    assert dialer.selected == "/ipfs/id/1.0.0"
    assert dialer.unconsumed() == b"identify!"


def test_every_protocol_refused() -> None:
    dialer = MultistreamDialer(["/a", "/b"])
    dialer.initiate()
    assert dialer.receive_data(HEADER + NA) == encode_message("/b")
    with pytest.raises(MultistreamError, match="none of"):
        dialer.receive_data(NA)
    with pytest.raises(MultistreamError):  # stays failed
        dialer.receive_data(b"")


def test_ls_is_answered() -> None:
    listener = MultistreamListener(lambda p: p == "/a", ls_protocols=["/a", "/b"])
    reply = listener.receive_data(HEADER + encode_message("ls"))
    inner = encode_message("/a") + encode_message("/b")
    assert reply == HEADER + encode_uvarint(len(inner) + 1) + inner + b"\n"
    # without a listing, ls is politely refused and negotiation continues
    plain = _only("/a")
    assert plain.receive_data(HEADER + encode_message("ls") + encode_message("/a")) == (
        HEADER + NA + encode_message("/a")
    )
    assert plain.selected == "/a"


def test_listener_limits_attempts() -> None:
    listener = MultistreamListener(lambda p: False, max_attempts=3)
    out = listener.receive_data(HEADER + encode_message("/x") * 3)
    assert out == HEADER + NA * 3
    with pytest.raises(MultistreamError, match="more than 3"):
        listener.receive_data(encode_message("/x"))


@pytest.mark.parametrize(
    "data",
    [
        encode_message("/not-multistream/1.0.0"),  # wrong header
        HEADER + b"\x03na!",  # no trailing newline
        HEADER + b"\x00",  # empty message
        HEADER + encode_uvarint(MAX_MESSAGE + 1),  # oversized: rejected before its body arrives
        HEADER + b"\xff" * 10,  # runaway varint
        HEADER + b"\x80\x00",  # non-minimal varint
        HEADER + b"\x03\xff\xfe\n",  # invalid UTF-8
        HEADER + b"\x04a\nb\n",  # embedded newline
    ],
)
def test_listener_rejects_malformed(data: bytes) -> None:
    with pytest.raises(MultistreamError):
        _only("/a").receive_data(data)


@pytest.mark.parametrize(
    "data",
    [
        encode_message("/multistream/2.0.0"),
        HEADER + encode_message("/other"),  # echo of something never proposed
        HEADER + encode_message("ls"),
        encode_message("/a"),  # response before header
        HEADER + encode_uvarint(5000),
    ],
)
def test_dialer_rejects_malformed(data: bytes) -> None:
    dialer = MultistreamDialer(["/a"])
    dialer.initiate()
    with pytest.raises(MultistreamError):
        dialer.receive_data(data)


def test_misuse_is_reported() -> None:
    with pytest.raises(MultistreamError):
        MultistreamDialer([])
    for bad in ["", "a\nb", "na", "ls", "x" * MAX_MESSAGE]:
        with pytest.raises(MultistreamError):
            MultistreamDialer([bad])
    dialer = MultistreamDialer(["/a"])
    with pytest.raises(MultistreamError):
        dialer.receive_data(HEADER)  # before initiate()
    dialer.initiate()
    with pytest.raises(MultistreamError):
        dialer.initiate()
    dialer.receive_data(HEADER + encode_message("/a"))
    with pytest.raises(MultistreamError, match="finished"):
        dialer.receive_data(b"more")
    listener = _only("/a")
    assert listener.initiate() == HEADER
    assert listener.initiate() == b""  # the header goes out once
    assert listener.receive_data(HEADER + encode_message("/a")) == encode_message("/a")


# -- properties ---------------------------------------------------------------------------
_protocol = st.text(
    st.characters(min_codepoint=0x20, codec="utf-8"),
    min_size=1,
    max_size=60,
).filter(lambda p: p not in ("na", "ls", PROTOCOL_ID) and "\n" not in p)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _run(
    proposals: list[str], supported: set[str], cuts_a: list[int], cuts_b: list[int]
) -> tuple[MultistreamDialer, MultistreamListener, bytes, bytes]:
    """Drive both ends over in-memory pipes, re-chunking every write arbitrarily."""
    app_l = b"listener-data"
    dialer = MultistreamDialer(proposals)
    listener = MultistreamListener(lambda p: p in supported)
    to_listener = dialer.initiate()
    to_dialer = listener.initiate()
    got_l = got_d = b""
    for _ in range(len(proposals) + 2):
        for piece in _chunks(to_listener, cuts_a):
            if listener.selected is None:
                to_dialer += listener.receive_data(piece)
                if listener.selected is not None:
                    to_dialer += app_l
                    got_l += listener.unconsumed()
            else:
                got_l += piece
        to_listener = b""
        for piece in _chunks(to_dialer, cuts_b):
            if dialer.selected is None:
                to_listener += dialer.receive_data(piece)
                if dialer.selected is not None:
                    got_d += dialer.unconsumed()
            else:
                got_d += piece
        to_dialer = b""
        if dialer.selected is not None and listener.selected is not None:
            break
    return dialer, listener, got_d, got_l


@given(
    st.lists(_protocol, min_size=1, max_size=5, unique=True),
    st.data(),
    st.lists(st.integers(0, 10_000), max_size=12),
    st.lists(st.integers(0, 10_000), max_size=12),
)
def test_negotiation_under_arbitrary_chunking(
    proposals: list[str], data: st.DataObject, cuts_a: list[int], cuts_b: list[int]
) -> None:
    chosen = data.draw(st.sampled_from(proposals))
    supported = {chosen, "/something-else"}
    dialer, listener, got_d, got_l = _run(proposals, supported, cuts_a, cuts_b)
    first = next(p for p in proposals if p in supported)
    assert dialer.selected == listener.selected == first
    assert got_d == b"listener-data"
    assert got_l == b""


@given(
    st.lists(_protocol, min_size=1, max_size=4, unique=True), st.lists(st.integers(0, 10_000), max_size=12)
)
def test_refusal_under_arbitrary_chunking(proposals: list[str], cuts: list[int]) -> None:
    with pytest.raises(MultistreamError, match="none of"):
        _run(proposals, set(), cuts, cuts)


@given(st.lists(_protocol, min_size=1, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_pipelined_listener_sees_app_data_whatever_the_split(protocols: list[str], cuts: list[int]) -> None:
    wire = HEADER + b"".join(encode_message(p) for p in protocols) + b"APP"
    listener = MultistreamListener(lambda p: p == protocols[-1], max_attempts=len(protocols))
    out = b""
    rest = b""
    for piece in _chunks(wire, cuts):
        if listener.selected is None:
            out += listener.receive_data(piece)
            rest = listener.unconsumed()
        else:
            rest += piece
    first = protocols.index(protocols[-1])
    assert listener.selected == protocols[-1]
    assert out == HEADER + NA * first + encode_message(protocols[-1])
    assert rest == b"".join(encode_message(p) for p in protocols[first + 1 :]) + b"APP"


@given(st.binary(max_size=300), st.lists(st.integers(0, 10_000), max_size=8), st.booleans())
def test_hostile_bytes_only_raise_multistream_error(data: bytes, cuts: list[int], with_header: bool) -> None:
    if with_header:
        data = HEADER + data
    dialer = MultistreamDialer(["/a", "/b"])
    dialer.initiate()
    listener = MultistreamListener(lambda p: p.startswith("/a"))
    for end in (dialer, listener):
        try:
            for piece in _chunks(data, cuts):
                if end.selected is not None:
                    break
                end.receive_data(piece)
                reader = end._reader
                assert reader.buffered <= MAX_MESSAGE + 9  # one partial message at most
        except MultistreamError:
            pass


@given(st.integers(MAX_MESSAGE + 1, 2**62), st.booleans())
def test_oversized_length_fails_fast(length: int, dialer_side: bool) -> None:
    data = HEADER + encode_uvarint(length)
    end: MultistreamDialer | MultistreamListener
    if dialer_side:
        end = MultistreamDialer(["/a"])
        end.initiate()
    else:
        end = _only("/a")
    with pytest.raises(MultistreamError):
        end.receive_data(data)
