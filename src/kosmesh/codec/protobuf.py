"""A minimal, bounded protobuf (proto2/proto3) wire codec for the handful of libp2p messages.

libp2p's messages (PublicKey, NoiseHandshakePayload, Identify) use only varint and
length-delimited fields, so we encode/decode those directly instead of generating code.
Unknown fields are skipped, as protobuf requires; malformed input raises ProtobufError.
"""

from collections.abc import Iterable

from kosmesh.codec.varint import VarintError, decode_uvarint, encode_uvarint

WIRE_VARINT = 0
WIRE_I64 = 1
WIRE_LEN = 2
WIRE_I32 = 5


class ProtobufError(ValueError):
    """The bytes are not a well-formed protobuf message."""


Field = tuple[int, int | bytes]


def encode_fields(fields: Iterable[Field]) -> bytes:
    """Encode ``(field_number, value)`` pairs; ints as varints, bytes as length-delimited."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, int):
            out += encode_uvarint(number << 3 | WIRE_VARINT)
            out += encode_uvarint(value)
        else:
            out += encode_uvarint(number << 3 | WIRE_LEN)
            out += encode_uvarint(len(value))
            out += value
    return bytes(out)


def decode_fields(data: bytes, max_fields: int = 1024) -> list[Field]:
    """Decode every field in order; repeated fields appear several times."""
    fields: list[Field] = []
    i = 0
    n = len(data)
    try:
        while i < n:
            if len(fields) >= max_fields:
                raise ProtobufError("too many fields")
            got = decode_uvarint(data, i)
            if got is None:
                raise ProtobufError("truncated tag")
            tag, i = got
            number, wire_type = tag >> 3, tag & 7
            if number == 0:
                raise ProtobufError("field number 0")
            if wire_type == WIRE_VARINT:
                got = decode_uvarint(data, i)
                if got is None:
                    raise ProtobufError("truncated varint")
                value, i = got
                fields.append((number, value))
            elif wire_type == WIRE_LEN:
                got = decode_uvarint(data, i)
                if got is None:
                    raise ProtobufError("truncated length")
                length, i = got
                if i + length > n:
                    raise ProtobufError("length-delimited field overruns message")
                fields.append((number, data[i : i + length]))
                i += length
            elif wire_type == WIRE_I64:
                if i + 8 > n:
                    raise ProtobufError("truncated fixed64")
                i += 8
            elif wire_type == WIRE_I32:
                if i + 4 > n:
                    raise ProtobufError("truncated fixed32")
                i += 4
            else:
                raise ProtobufError(f"unsupported wire type {wire_type}")
    except VarintError as exc:
        raise ProtobufError(str(exc)) from None
    return fields


def first_bytes(fields: list[Field], number: int) -> bytes | None:
    for num, value in fields:
        if num == number and isinstance(value, bytes):
            return value
    return None


def first_int(fields: list[Field], number: int) -> int | None:
    for num, value in fields:
        if num == number and isinstance(value, int):
            return value
    return None


def all_bytes(fields: list[Field], number: int) -> list[bytes]:
    return [value for num, value in fields if num == number and isinstance(value, bytes)]
