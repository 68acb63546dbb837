"""multistream-select 1.0: agreeing on the protocol a fresh stream or connection speaks.

Every message is ``uvarint(len) || utf8 text || "\\n"`` (the length counts the newline).
Both sides open with the ``/multistream/1.0.0`` header; the dialer then proposes protocols
one at a time and the listener either echoes one (agreement) or answers ``na``.

The dialer here is always pipelined ("lazy"): it sends the header and its first proposal in
one write, which saves a round trip on every new stream. The listener accepts that, plus
application data riding in the same chunk; whatever follows the agreement is handed back
through ``unconsumed()`` for the selected protocol to read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kosmesh.codec.frames import FrameError, LengthPrefixedReader
from kosmesh.codec.varint import encode_uvarint

PROTOCOL_ID = "/multistream/1.0.0"
MAX_MESSAGE = 1024  # bytes, counting the trailing newline
NA = "na"
LS = "ls"


class MultistreamError(ValueError):
    """The remote broke multistream-select, or no protocol could be agreed on."""


def encode_message(text: str) -> bytes:
    """Frame one message: length prefix, UTF-8 text, newline."""
    body = text.encode() + b"\n"
    if len(body) > MAX_MESSAGE:
        raise MultistreamError(f"message of {len(body)} bytes exceeds {MAX_MESSAGE}")
    return encode_uvarint(len(body)) + body


HEADER = encode_message(PROTOCOL_ID)
NA_MESSAGE = encode_message(NA)


def _check_protocol(protocol: str) -> None:
    if not isinstance(protocol, str) or not protocol:
        raise MultistreamError(f"invalid protocol id {protocol!r}")
    if "\n" in protocol or protocol in (NA, LS, PROTOCOL_ID):
        raise MultistreamError(f"invalid protocol id {protocol!r}")
    if len(protocol.encode()) + 1 > MAX_MESSAGE:
        raise MultistreamError("protocol id too long")


def _next_message(reader: LengthPrefixedReader) -> str | None:
    """The next complete message's text, or None until more bytes arrive."""
    try:
        frame = reader.next_frame()
    except FrameError as exc:
        raise MultistreamError(str(exc)) from None
    if frame is None:
        return None
    if not frame:
        raise MultistreamError("empty message")
    if frame[-1] != 0x0A:
        raise MultistreamError("message does not end in a newline")
    try:
        text = frame[:-1].decode()
    except UnicodeDecodeError:
        raise MultistreamError("message is not valid UTF-8") from None
    if "\n" in text:
        raise MultistreamError("message contains an embedded newline")
    return text


class MultistreamDialer:
    """Proposes ``protocols`` in order until the listener echoes one."""

    def __init__(self, protocols: Sequence[str]) -> None:
        protos = tuple(protocols)
        if not protos:
            raise MultistreamError("no protocols to propose")
        for protocol in protos:
            _check_protocol(protocol)
        self._protocols = protos
        self._index = 0
        self._reader = LengthPrefixedReader(MAX_MESSAGE)
        self._initiated = False
        self._header_seen = False
        self._failed: str | None = None
        self._rest = b""
        self.selected: str | None = None

    def initiate(self) -> bytes:
        """Header and first proposal, to be sent in a single write."""
        if self._initiated:
            raise MultistreamError("initiate() was already called")
        self._initiated = True
        return HEADER + encode_message(self._protocols[0])

    def receive_data(self, data: bytes) -> bytes:
        """Consume the listener's bytes; return what to send next (often nothing)."""
        if self._failed is not None:
            raise MultistreamError(self._failed)
        if not self._initiated:
            raise MultistreamError("initiate() must be called before receive_data()")
        if self.selected is not None:
            raise MultistreamError("negotiation finished; application data belongs to the protocol")
        reader = self._reader
        reader.feed(data)  # cannot fail: a reader error fails the negotiation first
        out = b""
        try:
            while (msg := _next_message(reader)) is not None:
                if not self._header_seen:
                    if msg != PROTOCOL_ID:
                        raise MultistreamError(f"expected the {PROTOCOL_ID} header, got {msg[:80]!r}")
                    self._header_seen = True
                    continue
                proposed = self._protocols[self._index]
                if msg == proposed:
                    self.selected = proposed
                    self._rest = reader.take_rest()
                    return out
                if msg != NA:
                    raise MultistreamError(f"unexpected reply {msg[:80]!r} to proposal {proposed!r}")
                self._index += 1
                if self._index == len(self._protocols):
                    raise MultistreamError(f"remote supports none of {list(self._protocols)!r}")
                out += encode_message(self._protocols[self._index])
        except MultistreamError as exc:
            self._failed = str(exc)
            raise
        return out

    def unconsumed(self) -> bytes:
        """Bytes that arrived after the listener's echo: the selected protocol's first data."""
        return self._rest


class MultistreamListener:
    """Answers proposals: echoes the first one ``supports`` accepts, ``na`` to the rest.

    ``ls`` is answered with ``ls_protocols`` (as many as fit in one message), or with ``na``
    when none were given, since ``supports`` cannot enumerate.
    """

    def __init__(
        self,
        supports: Callable[[str], bool],
        max_attempts: int = 16,
        *,
        ls_protocols: Sequence[str] | None = None,
    ) -> None:
        if max_attempts < 1:
            raise MultistreamError("max_attempts must be at least 1")
        self._supports = supports
        self._max_attempts = max_attempts
        self._attempts = 0
        self._ls_reply = _ls_reply(ls_protocols) if ls_protocols is not None else NA_MESSAGE
        self._reader = LengthPrefixedReader(MAX_MESSAGE)
        self._header_sent = False
        self._header_seen = False
        self._failed: str | None = None
        self._rest = b""
        self.selected: str | None = None

    def initiate(self) -> bytes:
        """The listener's header; may be sent before the dialer's bytes arrive.

        If it is never called, the header is prepended to the first reply instead.
        """
        if self._header_sent:
            return b""
        self._header_sent = True
        return HEADER

    def receive_data(self, data: bytes) -> bytes:
        """Consume the dialer's bytes; return the replies to send."""
        if self._failed is not None:
            raise MultistreamError(self._failed)
        if self.selected is not None:
            raise MultistreamError("negotiation finished; application data belongs to the protocol")
        reader = self._reader
        reader.feed(data)  # cannot fail: a reader error fails the negotiation first
        out = self.initiate()
        try:
            while (msg := _next_message(reader)) is not None:
                if not self._header_seen:
                    if msg != PROTOCOL_ID:
                        raise MultistreamError(f"expected the {PROTOCOL_ID} header, got {msg[:80]!r}")
                    self._header_seen = True
                    continue
                self._attempts += 1
                if self._attempts > self._max_attempts:
                    raise MultistreamError(f"dialer made more than {self._max_attempts} proposals")
                if msg == LS:
                    out += self._ls_reply
                elif msg and msg not in (NA, PROTOCOL_ID) and self._supports(msg):
                    self.selected = msg
                    self._rest = reader.take_rest()
                    return out + encode_message(msg)
                else:
                    out += NA_MESSAGE
        except MultistreamError as exc:
            self._failed = str(exc)
            raise
        return out

    def unconsumed(self) -> bytes:
        """Bytes that followed the agreed proposal (a pipelined dialer's first data)."""
        return self._rest


def _ls_reply(protocols: Sequence[str]) -> bytes:
    """One message whose body is the framed protocol ids, as go-multistream reads it."""
    body = b""
    for protocol in protocols:
        _check_protocol(protocol)
        framed = encode_message(protocol)
        if len(body) + len(framed) + 1 > MAX_MESSAGE:
            break
        body += framed
    return encode_uvarint(len(body) + 1) + body + b"\n"
