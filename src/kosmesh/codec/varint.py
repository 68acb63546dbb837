"""Unsigned LEB128 varints (multiformats unsigned-varint), bounded for hostile input."""

MAX_VARINT_BYTES = 9  # the multiformats spec caps varints at 9 bytes (63 bits)


class VarintError(ValueError):
    """Malformed or oversized varint."""


def encode_uvarint(value: int) -> bytes:
    if value < 0:
        raise ValueError("uvarint must be non-negative")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_uvarint(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """Decode a varint at ``offset``; return ``(value, new_offset)`` or ``None`` if incomplete.

    Raises :class:`VarintError` for a varint longer than 9 bytes or non-minimal encodings.
    """
    value = 0
    shift = 0
    end = len(data)
    i = offset
    while i < end:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if byte == 0 and i - offset > 1:
                raise VarintError("non-minimal varint")
            return value, i
        shift += 7
        if i - offset >= MAX_VARINT_BYTES:
            raise VarintError("varint too long")
    return None
