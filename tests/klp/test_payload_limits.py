"""Payload complexity limits: checked before cbor2 builds anything, the same for the encoder (which
refuses to build what no decoder takes) and the two decode paths (small payloads through cbor2 with a
key check per map, larger ones walked first, then decoded without a Python call per map)."""

from __future__ import annotations

import gzip
import math
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kosmesh.klp import CompressionInfo, EncryptionInfo, EnvelopeError
from kosmesh.klp.model import CONTENT_TYPE_CBOR, MAX_DATA_DEPTH, MAX_DATA_ITEMS, MAX_MESSAGE_BYTES
from kosmesh.klp.payload import _loads_walked, _strict_loads, _walk, decode_payload_data, encode_data

PLAIN = EncryptionInfo(), CompressionInfo()
GZIP = EncryptionInfo(), CompressionInfo(True, "gzip")


def decode(raw: bytes, switches: tuple[EncryptionInfo, CompressionInfo] = PLAIN) -> Any:
    return decode_payload_data(raw, CONTENT_TYPE_CBOR, *switches, MAX_MESSAGE_BYTES)


def reason(call: Any) -> str:
    with pytest.raises(EnvelopeError) as info:
        call()
    return info.value.reason


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64 - 1)
    | st.floats()
    | st.text(max_size=30)
    | st.binary(max_size=30)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=6), inner, max_size=5),
    max_leaves=40,
)


def _same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to itself and tuples as lists (CBOR has arrays only)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=400, deadline=None)
@given(_values)
def test_encode_data_writes_what_cbor2_canonical_writes_and_decodes_back(value: Any) -> None:
    encoded = encode_data(value)
    assert encoded == cbor2.dumps(value, canonical=True)
    assert _same(decode(encoded), value)


@settings(max_examples=400, deadline=None)
@given(
    st.recursive(
        _scalars,
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=4) | st.binary(max_size=3) | st.integers(0, 3), inner, max_size=3),
        max_leaves=30,
    )
)
def test_the_walked_path_decides_like_the_hooked_path(value: Any) -> None:
    """For any CBOR (non-text keys included), walking then decoding without the per-map hook accepts
    exactly what decoding with the hook accepts, and yields the same value."""
    raw = cbor2.dumps(value)
    try:
        hooked: Any = _strict_loads(raw, MAX_DATA_DEPTH)
    except Exception:
        hooked = "refused"
    try:
        _walk(raw, MAX_DATA_ITEMS)
        walked: Any = _loads_walked(raw, MAX_DATA_DEPTH)
    except Exception:
        walked = "refused"
    assert _same(walked, hooked)


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"\xa1\x41k\x00", "malformed_payload"),  # a byte-string key
        (b"\xa1\x01\x00", "malformed_payload"),  # an integer key
        (b"\x81\xc1\x00", "malformed_payload"),  # a tag
        (b"\x9f\x00\xff", "malformed_payload"),  # indefinite length
        (b"\x82\x00", "malformed_payload"),  # truncated
        (b"\x80\x00", "malformed_payload"),  # trailing bytes
        (b"\x9a" + (MAX_DATA_ITEMS).to_bytes(4, "big"), "payload_too_complex"),  # refused at its head
    ],
)
def test_walker_refusals(raw: bytes, why: str) -> None:
    assert reason(lambda: _walk(raw, MAX_DATA_ITEMS)) == why


def _items(n: int) -> list[Any]:
    """A list whose CBOR holds ``n`` items in all (the list itself included), each a 1-byte empty map,
    so it is longer than the item limit in bytes and must be walked."""
    return [{}] * (n - 1)


def test_item_limit_is_the_same_for_encoder_and_decoder() -> None:
    at_limit = _items(MAX_DATA_ITEMS)
    raw = encode_data(at_limit)
    assert decode(gzip.compress(raw), GZIP) == at_limit
    assert reason(lambda: encode_data(_items(MAX_DATA_ITEMS + 1))) == "payload_too_complex"
    over = cbor2.dumps(_items(MAX_DATA_ITEMS + 1))
    assert reason(lambda: decode(gzip.compress(over), GZIP)) == "payload_too_complex"
    flat = list(range(MAX_DATA_ITEMS))  # a flat list takes the fast path: the same limit
    assert reason(lambda: encode_data(flat)) == "payload_too_complex"
    assert encode_data(flat[:-1]) == cbor2.dumps(flat[:-1])


def _nested(enclosing: int) -> Any:
    value: Any = 0
    for _ in range(enclosing):
        value = [value]
    return value


def test_depth_limit_is_the_same_for_encoder_and_decoder() -> None:
    deepest = _nested(MAX_DATA_DEPTH)  # an int inside 64 arrays
    assert decode(encode_data(deepest)) == deepest
    assert reason(lambda: encode_data(_nested(MAX_DATA_DEPTH + 1))) == "malformed_payload"
    assert reason(lambda: decode(cbor2.dumps(_nested(MAX_DATA_DEPTH + 1)))) == "malformed_payload"
    assert reason(lambda: encode_data({"k": _nested(MAX_DATA_DEPTH)})) == "malformed_payload"


def test_decompression_is_capped_at_the_largest_message() -> None:
    fits = cbor2.dumps(b"x" * (MAX_MESSAGE_BYTES - 8))
    assert len(decode(gzip.compress(fits), GZIP)) == MAX_MESSAGE_BYTES - 8
    too_big = cbor2.dumps(b"x" * MAX_MESSAGE_BYTES)
    assert reason(lambda: decode(gzip.compress(too_big), GZIP)) == "decompression_bomb"


def test_a_node_with_a_smaller_message_limit_inflates_less() -> None:
    inflated = gzip.compress(cbor2.dumps("y" * 5000))
    with pytest.raises(EnvelopeError) as info:
        decode_payload_data(inflated, CONTENT_TYPE_CBOR, *GZIP, 4096)
    assert info.value.reason == "decompression_bomb"


@pytest.mark.parametrize(
    "value",
    [
        [{"a": 1}, {"b": [1.5, None, True]}],  # nested: the direct encoder
        {"k": (1, 2)},  # a tuple is an array
        [bytearray(b"ab")],  # another type: cbor2, then checked
        {"n": float("nan"), "i": float("-inf"), "z": -0.0},
    ],
)
def test_encode_data_other_shapes(value: Any) -> None:
    assert encode_data(value) == cbor2.dumps(value, canonical=True)
