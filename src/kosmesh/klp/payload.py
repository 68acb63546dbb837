"""KLP payload data: the value a message carries, to and from the bytes of ``payload.data``.

``application/cbor`` payloads are deterministic CBOR, then optionally gzip'd; other content types
(and, later, ciphertext) travel as opaque bytes. Decoding is bounded: a decompression cap and an
item walk before cbor2 builds anything, so a small hostile payload cannot cost unbounded memory.
"""

from __future__ import annotations

import io
import zlib
from typing import Any

import cbor2

from kosmesh.klp.cbor import NO_TAGS, SHORT_HEADS, head, reject_tag
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
    decoder = cbor2.CBORDecoder(
        stream,
        tag_hook=reject_tag,
        object_hook=_text_keys_only,
        semantic_decoders=NO_TAGS,
        max_depth=max_depth,
        allow_indefinite=False,
        allow_duplicate_keys=False,
        strict_hashable_types=True,
    )
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


def _count_items(data: bytes, limit: int) -> None:
    """Walk CBOR heads (without building objects) and refuse more than ``limit`` items.

    Run only on payloads that inflated beyond the wire limit: there, decoding ``[[],[],…]`` could
    otherwise turn 16 MiB into a gigabyte of Python lists.
    """
    pos = 0
    end = len(data)
    pending = 1  # items still to read
    items = 0
    while pending:
        if pos >= end:
            fail(REASON_MALFORMED_PAYLOAD, "truncated CBOR")
        pending -= 1
        items += 1
        if items > limit:
            fail(REASON_PAYLOAD_TOO_COMPLEX, f"payload has more than {limit} items")
        ib = data[pos]
        pos += 1
        major, info = ib >> 5, ib & 0x1F
        if info < 24:
            n = info
        elif info <= 27:
            size = 1 << (info - 24)
            n = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        else:
            fail(REASON_MALFORMED_PAYLOAD, "indefinite or reserved CBOR length")
        if major in (2, 3):
            pos += n
        elif major == 4:
            pending += n
        elif major == 5:
            pending += 2 * n
        elif major == 6:
            fail(REASON_MALFORMED_PAYLOAD, "CBOR tags are not allowed")
        if pending > limit:
            fail(REASON_PAYLOAD_TOO_COMPLEX, f"payload has more than {limit} items")


_PLAIN_SCALARS = frozenset({str, bytes, float, bool, type(None)})
_INT_LIMIT = 1 << 64  # CBOR's major types 0 and 1 hold -2**64 .. 2**64-1; beyond that are bignum tags


def _is_plain(value: Any) -> bool:
    """True for a flat dict (text keys) or list of null/bool/int/float/str/bytes: values whose
    deterministic CBOR a KLP decoder accepts, so encode_data need not decode them back to check."""
    kind = type(value)
    if kind is dict:
        for key in value:
            if type(key) is not str:
                return False
        items = value.values()
    elif kind is list:
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
    try:
        raw = cbor2.dumps(data, canonical=True)
    except Exception as exc:
        fail(REASON_MALFORMED_PAYLOAD, f"data is not CBOR-encodable: {exc}")
    if _is_plain(data):
        return raw
    try:
        # What we just encoded holds exactly one item; only its content needs checking.
        cbor2.loads(
            raw,
            semantic_decoders=NO_TAGS,
            tag_hook=reject_tag,
            object_hook=_text_keys_only,
            max_depth=MAX_DATA_DEPTH,
            strict_hashable_types=True,
        )
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
    wire_data: bytes, content_type: str, enc: EncryptionInfo, comp: CompressionInfo, max_inline: int
) -> Any:
    """Recover the payload value from its wire bytes (ciphertext stays opaque bytes)."""
    if enc.enabled:
        return wire_data
    raw = wire_data
    if comp.enabled:
        raw = _decompress(raw, MAX_DECOMPRESSED_BYTES)
    if content_type != CONTENT_TYPE_CBOR:
        return raw
    if len(raw) > max_inline:
        _count_items(raw, MAX_DATA_ITEMS)
    try:
        value = _string_item(raw)
        if value is None:
            value = _strict_loads(raw, MAX_DATA_DEPTH)
    except Exception as exc:
        fail(REASON_MALFORMED_PAYLOAD, f"payload data is not acceptable CBOR: {exc}")
    return value
