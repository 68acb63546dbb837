"""KLP payload data: the value a message carries, to and from the bytes of ``payload.data``.

``application/cbor`` payloads are deterministic CBOR, then optionally gzip'd; other content types
(and, later, ciphertext) travel as opaque bytes. Decoding is bounded: a decompression cap and an
item walk before cbor2 builds anything, so a small hostile payload cannot cost unbounded memory.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import cbor2

from kosmesh.klp.cbor import SAFE_DECODING, SHORT_HEADS, head
from kosmesh.klp.model import (
    COMPRESSION_GZIP,
    CONTENT_TYPE_CBOR,
    MAX_DATA_DEPTH,
    MAX_DATA_ITEMS,
    MAX_DECOMPRESSED_BYTES,
    CompressionInfo,
    EncryptionInfo,
    Payload,
)
from kosmesh.klp.reasons import (
    REASON_DECOMPRESSION_BOMB,
    REASON_MALFORMED_PAYLOAD,
    REASON_PAYLOAD_TOO_COMPLEX,
    REASON_UNSUPPORTED_COMPRESSION,
    EnvelopeError,
    fail,
)


def _text_keys_only(mapping: Any, _immutable: bool) -> Any:
    """Payload maps are keyed by text, as in JSON. This also keeps cbor2's length-first key order
    identical to RFC 8949 §4.2.1 bytewise order, which differ only across key types."""
    for key in mapping:
        if type(key) is not str:
            raise ValueError("payload map keys must be text")
    return mapping


def _strict_loads(data: bytes, max_depth: int) -> Any:
    """Decode one payload item with every cbor2 safety switch on; trailing bytes are an error."""
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(stream, object_hook=_text_keys_only, max_depth=max_depth, **SAFE_DECODING)
    value = decoder.decode()
    if stream.tell() != len(data):
        raise ValueError("trailing bytes after the CBOR item")
    return value


def _decompress(data: bytes, limit: int) -> bytes:
    decomp = zlib.decompressobj(wbits=31)  # gzip container
    try:
        out = decomp.decompress(data, limit + 1)
    except zlib.error as exc:
        fail(REASON_MALFORMED_PAYLOAD, f"bad gzip data: {exc}")
    if len(out) > limit:
        fail(REASON_DECOMPRESSION_BOMB, f"payload inflates beyond {limit} bytes")
    if not decomp.eof or decomp.unused_data:
        fail(REASON_MALFORMED_PAYLOAD, "gzip stream is truncated or has trailing data")
    return out


def _walk(data: bytes, limit: int) -> None:
    """Walk the CBOR heads of ``data`` without building anything; refuse more than ``limit`` items,
    tags, indefinite or reserved lengths, and map keys that are not text.

    This is the complexity check that runs before cbor2 sees a payload longer than ``limit`` bytes
    (a shorter one cannot hold more items than it has bytes), so a small gzip'd payload cannot make
    the decoder build a million objects. It checks map keys itself, so such a payload is decoded
    without a Python call per map. Its cost is bounded by ``limit`` items (~0.4 µs each).
    """
    pos = 0
    end = len(data)
    items = 0
    stack: list[tuple[int, bool]] = []  # (items left, is a map) of each enclosing container
    left = 1  # items still to read in the current container (the top level holds one)
    in_map = False
    while True:
        while not left:
            if not stack:
                if pos != end:
                    fail(REASON_MALFORMED_PAYLOAD, "trailing bytes after the CBOR item")
                return
            left, in_map = stack.pop()
        if pos >= end:
            fail(REASON_MALFORMED_PAYLOAD, "truncated CBOR")
        ib = data[pos]
        pos += 1
        major, info = ib >> 5, ib & 0x1F
        if in_map and not left & 1 and major != 3:  # an even count left in a map: this is a key
            fail(REASON_MALFORMED_PAYLOAD, "payload map keys must be text")
        left -= 1
        items += 1
        if items > limit:
            fail(REASON_PAYLOAD_TOO_COMPLEX, f"payload has more than {limit} items")
        if info < 24:
            n = info
        elif info < 28:
            size = 1 << (info - 24)
            n = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        else:
            fail(REASON_MALFORMED_PAYLOAD, "indefinite or reserved CBOR length")
        if major == 2 or major == 3:
            pos += n
        elif major == 4 or major == 5:
            if n:
                n <<= major - 4  # a map holds two items per entry
                if items + n > limit:
                    fail(REASON_PAYLOAD_TOO_COMPLEX, f"payload has more than {limit} items")
                stack.append((left, in_map))
                left, in_map = n, major == 5
        elif major == 6:
            fail(REASON_MALFORMED_PAYLOAD, "CBOR tags are not allowed")


def _loads_walked(data: bytes, max_depth: int) -> Any:
    """Decode one payload item that :func:`_walk` has already checked (no tags, text keys)."""
    return cbor2.loads(data, max_depth=max_depth, **SAFE_DECODING)


_PLAIN_SCALARS = frozenset({str, bytes, float, bool, type(None)})
_INT_LIMIT = 1 << 64  # CBOR's major types 0 and 1 hold -2**64 .. 2**64-1; beyond that are bignum tags


def _is_plain(value: Any) -> bool:
    """True for a flat dict (text keys) or list of null/bool/int/float/str/bytes, small enough for a
    KLP decoder: values whose deterministic CBOR cbor2 writes fast and a decoder accepts as is."""
    kind = type(value)
    if kind is dict:
        if 2 * len(value) >= MAX_DATA_ITEMS:
            return False
        for key in value:
            if type(key) is not str:
                return False
        items = value.values()
    elif kind is list:
        if len(value) >= MAX_DATA_ITEMS:
            return False
        items = value
    else:
        return False
    for item in items:
        kind = type(item)
        if kind is int:
            if not -_INT_LIMIT <= item < _INT_LIMIT:
                return False
        elif kind not in _PLAIN_SCALARS:
            return False
    return True


class _Unsupported(Exception):
    """A value of a type the direct encoder does not handle: encode_data falls back to cbor2."""


class _Refused(Exception):
    """A value no KLP decoder accepts (a non-text key, an int beyond 64 bits, too deep, too many items)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _float_cbor(value: float) -> bytes:
    """The shortest IEEE 754 form that keeps ``value`` (RFC 8949 §4.2.2), as cbor2's canonical mode."""
    if value != value:
        return b"\xf9\x7e\x00"  # NaN
    try:
        half = _pack_half(value)
        if _unpack_half(half)[0] == value:
            return b"\xf9" + half
    except OverflowError:
        pass
    try:
        single = _pack_single(value)
        if _unpack_single(single)[0] == value:
            return b"\xfa" + single
    except OverflowError:
        pass
    return b"\xfb" + _pack_double(value)


_pack_half, _unpack_half = struct.Struct(">e").pack, struct.Struct(">e").unpack
_pack_single, _unpack_single = struct.Struct(">f").pack, struct.Struct(">f").unpack
_pack_double = struct.Struct(">d").pack


class _Encoder:
    """Deterministic CBOR of a payload value, checking as it goes what a KLP decoder checks.

    cbor2's encoder costs ~1-2 µs per container and its output would then need decoding back (with a
    Python call per map) to be checked; this one costs ~0.3-0.6 µs per item and needs no check after.
    """

    __slots__ = ("items", "out")

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.items = 0

    def encode(self, value: Any, enclosing: int) -> None:
        self.items += 1
        if self.items > MAX_DATA_ITEMS:
            raise _Refused(REASON_PAYLOAD_TOO_COMPLEX, f"more than {MAX_DATA_ITEMS} items")
        out = self.out
        kind = type(value)
        if kind is str:
            raw = value.encode("utf-8")
            n = len(raw)
            out.append(SHORT_HEADS[3][n] if n < 24 else head(3, n))
            out.append(raw)
        elif kind is int:
            if value >= 0:
                if value >= _INT_LIMIT:
                    raise _Refused(REASON_MALFORMED_PAYLOAD, "an integer beyond 64 bits")
                out.append(SHORT_HEADS[0][value] if value < 24 else head(0, value))
            else:
                value = -1 - value
                if value >= _INT_LIMIT:
                    raise _Refused(REASON_MALFORMED_PAYLOAD, "an integer beyond 64 bits")
                out.append(SHORT_HEADS[1][value] if value < 24 else head(1, value))
        elif kind is list or kind is tuple or kind is dict:
            if enclosing >= MAX_DATA_DEPTH:
                raise _Refused(REASON_MALFORMED_PAYLOAD, f"nested deeper than {MAX_DATA_DEPTH}")
            n = len(value)
            if kind is dict:
                out.append(SHORT_HEADS[5][n] if n < 24 else head(5, n))
                self._entries(value, enclosing + 1)
            else:
                out.append(SHORT_HEADS[4][n] if n < 24 else head(4, n))
                for item in value:
                    self.encode(item, enclosing + 1)
        elif kind is bytes:
            n = len(value)
            out.append(SHORT_HEADS[2][n] if n < 24 else head(2, n))
            out.append(value)
        elif kind is float:
            out.append(_float_cbor(value))
        elif value is None:
            out.append(b"\xf6")
        elif kind is bool:
            out.append(b"\xf5" if value else b"\xf4")
        else:
            raise _Unsupported(kind.__name__)

    def _entries(self, mapping: dict[Any, Any], enclosing: int) -> None:
        """Map entries in bytewise order of the encoded keys (text keys only)."""
        keyed = []
        for key, item in mapping.items():
            if type(key) is not str:
                raise _Refused(REASON_MALFORMED_PAYLOAD, "payload map keys must be text")
            raw = key.encode("utf-8")
            n = len(raw)
            keyed.append(((SHORT_HEADS[3][n] if n < 24 else head(3, n)) + raw, item))
        if len(keyed) > 1:
            keyed.sort(key=_first)
        out = self.out
        for key_cbor, item in keyed:
            self.items += 1
            out.append(key_cbor)
            self.encode(item, enclosing)


def _first(pair: tuple[bytes, Any]) -> bytes:
    return pair[0]


def encode_data(data: Any) -> bytes:
    """Deterministic CBOR of a payload value; refuses values a KLP decoder would refuse."""
    kind = type(data)
    if kind is str:  # the common payloads, encoded directly (the same bytes cbor2 writes)
        try:
            raw: bytes = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            fail(REASON_MALFORMED_PAYLOAD, f"data is not CBOR-encodable: {exc}")
        n = len(raw)
        return (SHORT_HEADS[3][n] if n < 24 else head(3, n)) + raw
    if kind is bytes:
        blob: bytes = data
        return head(2, len(blob)) + blob
    if _is_plain(data):
        try:
            return cbor2.dumps(data, canonical=True)  # C speed for flat values
        except Exception as exc:
            fail(REASON_MALFORMED_PAYLOAD, f"data is not CBOR-encodable: {exc}")
    encoder = _Encoder()
    try:
        encoder.encode(data, 0)
    except _Refused as exc:
        fail(exc.reason, str(exc))
    except UnicodeEncodeError as exc:
        fail(REASON_MALFORMED_PAYLOAD, f"data is not CBOR-encodable: {exc}")
    except _Unsupported:
        return _encode_other(data)
    return b"".join(encoder.out)


def _encode_other(data: Any) -> bytes:
    """Values holding other types (subclasses, bytearray, sets, dates…): cbor2 encodes them, and its
    output is decoded back to check that a KLP decoder takes it."""
    try:
        raw = cbor2.dumps(data, canonical=True)
    except Exception as exc:
        fail(REASON_MALFORMED_PAYLOAD, f"data is not CBOR-encodable: {exc}")
    try:
        if len(raw) > MAX_DATA_ITEMS:
            _walk(raw, MAX_DATA_ITEMS)
        _strict_loads(raw, MAX_DATA_DEPTH)
    except EnvelopeError:
        raise
    except Exception as exc:
        fail(
            REASON_MALFORMED_PAYLOAD,
            f"data must be null/bool/int (64-bit)/float/str/bytes/list/dict with text keys: {exc}",
        )
    return raw


def payload_wire_data(payload: Payload) -> bytes:
    """The bytes carried in ``payload.data`` on the wire (encoded, then compressed)."""
    if payload._wire_data is not None:
        return payload._wire_data
    return wire_data_of(payload.content_type, payload.data, payload.encryption, payload.compression)


def wire_data_of(content_type: str, data: Any, enc: EncryptionInfo, comp: CompressionInfo) -> bytes:
    if enc.enabled or content_type != CONTENT_TYPE_CBOR:
        if not isinstance(data, bytes | bytearray | memoryview):
            fail(
                REASON_MALFORMED_PAYLOAD,
                "data must be bytes unless the content type is application/cbor and it is not encrypted",
            )
        raw = bytes(data)
    else:
        raw = encode_data(data)
    if comp.enabled and not enc.enabled:
        if comp.algorithm != COMPRESSION_GZIP:
            fail(REASON_UNSUPPORTED_COMPRESSION, f"unknown compression {comp.algorithm!r}")
        raw = zlib.compress(raw, 6, wbits=31)
    return raw


def _string_item(raw: bytes) -> Any:
    """The value of ``raw`` when it is exactly one definite-length text or byte string (the common
    payloads, decoded without setting up a cbor2 decoder), else None. Invalid UTF-8 raises."""
    if not raw:
        return None
    ib = raw[0]
    if not 0x40 <= ib <= 0x7A or 0x5B <= ib <= 0x5F:
        return None
    info = ib & 0x1F
    if info < 24:
        start, n = 1, info
    else:
        start = 1 + (1 << (info - 24))
        n = int.from_bytes(raw[1:start], "big")
    if start + n != len(raw):  # truncated, or trailing bytes: let the strict decoder say which
        return None
    if ib >= 0x60:
        return raw[start:].decode("utf-8")  # strict, like cbor2's str_errors="strict"
    return raw[start:]


def decode_payload_data(
    wire_data: bytes, content_type: str, enc: EncryptionInfo, comp: CompressionInfo, max_size: int
) -> Any:
    """Recover the payload value from its wire bytes (ciphertext stays opaque bytes).

    Bounded before anything is built: a compressed payload may inflate to ``max_size`` bytes (the
    largest message the receiver takes: no answer carrying it could be larger), and a CBOR payload
    may hold at most ``MAX_DATA_ITEMS`` items, nested at most ``MAX_DATA_DEPTH`` deep.
    """
    if enc.enabled:
        return wire_data
    raw = wire_data
    if comp.enabled:
        raw = _decompress(raw, min(max_size, MAX_DECOMPRESSED_BYTES))
    if content_type != CONTENT_TYPE_CBOR:
        return raw
    try:
        value = _string_item(raw)
        if value is None:
            if len(raw) > MAX_DATA_ITEMS:
                _walk(raw, MAX_DATA_ITEMS)  # raises EnvelopeError with its reason
                value = _loads_walked(raw, MAX_DATA_DEPTH)
            else:
                value = _strict_loads(raw, MAX_DATA_DEPTH)
    except EnvelopeError:
        raise
    except Exception as exc:
        fail(REASON_MALFORMED_PAYLOAD, f"payload data is not acceptable CBOR: {exc}")
    return value
