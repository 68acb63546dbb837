"""Multiaddrs: self-describing network addresses, in text and binary form.

Only the protocols a libp2p TCP/QUIC/WebSocket/relay node meets are supported; anything
else is rejected rather than guessed at, because a binary multiaddr with an unknown code
cannot even be split into components. The binary form is
``(uvarint code, value)*`` where a value is fixed-size, absent, or uvarint-length-prefixed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, NamedTuple

from kosmesh.codec.varint import VarintError, decode_uvarint, encode_uvarint
from kosmesh.identity.peer_id import PeerId, PeerIdError

MAX_BYTES = 1024  # a multiaddr from the network longer than this is hostile, not useful
MAX_TEXT = 4096
MAX_COMPONENTS = 32
MAX_DNS_BYTES = 255


class MultiaddrError(ValueError):
    """Text or bytes that are not a multiaddr kosmesh understands."""


class _Proto(NamedTuple):
    name: str
    code: int
    size: int  # value size in bytes; 0 = no value; -1 = uvarint length-prefixed
    to_raw: Callable[[str], bytes] | None  # text value -> raw bytes (raises MultiaddrError)
    to_text: Callable[[bytes], str] | None  # raw bytes -> canonical text (raises MultiaddrError)


def _ip4_raw(text: str) -> bytes:
    try:
        return ipaddress.IPv4Address(text).packed
    except ValueError:
        raise MultiaddrError(f"invalid IPv4 address {text!r}") from None


def _ip4_text(raw: bytes) -> str:
    return str(ipaddress.IPv4Address(raw))


def _ip6_raw(text: str) -> bytes:
    if "%" in text:  # zones would need /ip6zone, which we do not support
        raise MultiaddrError(f"invalid IPv6 address {text!r}: zones are not supported")
    try:
        return ipaddress.IPv6Address(text).packed
    except ValueError:
        raise MultiaddrError(f"invalid IPv6 address {text!r}") from None


def _ip6_text(raw: bytes) -> str:
    addr = ipaddress.IPv6Address(raw)
    mapped = addr.ipv4_mapped
    # Print IPv4-mapped addresses the way go/js-multiaddr do, so logs match across peers.
    return f"::ffff:{mapped}" if mapped is not None else str(addr)


def _port_raw(text: str) -> bytes:
    if not (0 < len(text) <= 5 and text.isascii() and text.isdigit()):
        raise MultiaddrError(f"invalid port {text!r}")
    port = int(text)
    if port > 0xFFFF:
        raise MultiaddrError(f"port {port} out of range")
    return port.to_bytes(2, "big")


def _port_text(raw: bytes) -> str:
    return str(int.from_bytes(raw, "big"))


def _check_dns(name: str) -> None:
    if not name:
        raise MultiaddrError("empty DNS name")
    if "/" in name or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in name):
        raise MultiaddrError(f"invalid DNS name {name[:80]!r}")


def _dns_raw(text: str) -> bytes:
    _check_dns(text)
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) > MAX_DNS_BYTES:
        raise MultiaddrError("DNS name too long")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MultiaddrError("DNS name is not valid Unicode") from None
    return raw


def _dns_text(raw: bytes) -> str:
    if len(raw) > MAX_DNS_BYTES:
        raise MultiaddrError("DNS name too long")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MultiaddrError("DNS name is not valid UTF-8") from None
    _check_dns(name)
    return name


def _p2p_raw(text: str) -> bytes:
    try:
        return PeerId.from_string(text).to_bytes()
    except PeerIdError as exc:
        raise MultiaddrError(str(exc)) from None


def _p2p_text(raw: bytes) -> str:
    try:
        return PeerId(raw).to_base58()
    except PeerIdError as exc:
        raise MultiaddrError(str(exc)) from None


_PROTOCOLS = (
    _Proto("ip4", 4, 4, _ip4_raw, _ip4_text),
    _Proto("tcp", 6, 2, _port_raw, _port_text),
    _Proto("ip6", 41, 16, _ip6_raw, _ip6_text),
    _Proto("dns", 53, -1, _dns_raw, _dns_text),
    _Proto("dns4", 54, -1, _dns_raw, _dns_text),
    _Proto("dns6", 55, -1, _dns_raw, _dns_text),
    _Proto("dnsaddr", 56, -1, _dns_raw, _dns_text),
    _Proto("udp", 273, 2, _port_raw, _port_text),
    _Proto("p2p-circuit", 290, 0, None, None),
    _Proto("p2p", 421, -1, _p2p_raw, _p2p_text),
    _Proto("quic-v1", 461, 0, None, None),
    _Proto("ws", 477, 0, None, None),
    _Proto("wss", 478, 0, None, None),
)
_BY_NAME = {p.name: p for p in _PROTOCOLS}
_BY_NAME["ipfs"] = _BY_NAME["p2p"]  # the deprecated text alias; we always print /p2p/
_BY_CODE = {p.code: p for p in _PROTOCOLS}
_P2P = _BY_NAME["p2p"]
_TCP = _BY_NAME["tcp"]
_TCP_HOSTS = frozenset(("ip4", "ip6", "dns", "dns4", "dns6"))

# One component: protocol, raw value bytes (without length prefix), canonical text value.
_Part = tuple[_Proto, bytes, str | None]


def _encode_part(proto: _Proto, raw: bytes) -> bytes:
    head = encode_uvarint(proto.code)
    if proto.size == -1:
        return head + encode_uvarint(len(raw)) + raw
    return head + raw


def _short(text: str) -> str:
    return repr(text if len(text) <= 200 else text[:200] + "…")


class Multiaddr:
    """An immutable multiaddr; equality and hashing follow the binary form."""

    __slots__ = ("_bytes", "_parts", "_text")

    _bytes: bytes
    _parts: tuple[_Part, ...]
    _text: str

    def __init__(self, addr: str | bytes) -> None:
        """Accept either spelling; ``parse``/``from_bytes`` say which one you meant."""
        other = Multiaddr.parse(addr) if isinstance(addr, str) else Multiaddr.from_bytes(addr)
        self._set(other._parts, other._bytes, other._text)

    def _set(self, parts: tuple[_Part, ...], data: bytes, text: str) -> None:
        object.__setattr__(self, "_parts", parts)
        object.__setattr__(self, "_bytes", data)
        object.__setattr__(self, "_text", text)

    @classmethod
    def _build(cls, parts: tuple[_Part, ...], data: bytes | None = None) -> Multiaddr:
        if len(parts) > MAX_COMPONENTS:
            raise MultiaddrError(f"more than {MAX_COMPONENTS} components")
        if data is None:
            data = b"".join(_encode_part(p, raw) for p, raw, _ in parts)
            if len(data) > MAX_BYTES:
                raise MultiaddrError(f"multiaddr longer than {MAX_BYTES} bytes")
        text = "".join(f"/{p.name}" if value is None else f"/{p.name}/{value}" for p, _, value in parts)
        obj = object.__new__(cls)
        obj._set(parts, data, text or "/")
        return obj

    @classmethod
    def parse(cls, text: str) -> Multiaddr:
        """Parse ``/proto/value/...``; ``/`` alone is the empty multiaddr."""
        if not isinstance(text, str):
            raise MultiaddrError(f"expected a str, got {type(text).__name__}")
        if len(text) > MAX_TEXT:
            raise MultiaddrError(f"multiaddr text longer than {MAX_TEXT} characters")
        if not text.startswith("/"):
            raise MultiaddrError(f"multiaddr must start with '/': {_short(text)}")
        body = text[1:]
        if len(body) > 1 and body.endswith("/"):
            body = body[:-1]
        names = body.split("/") if body else []
        parts: list[_Part] = []
        i = 0
        while i < len(names):
            name = names[i]
            proto = _BY_NAME.get(name)
            if proto is None:
                if not name:
                    raise MultiaddrError(f"empty protocol name in {_short(text)}")
                raise MultiaddrError(f"unknown protocol {_short(name)} in {_short(text)}")
            if proto.to_raw is None or proto.to_text is None:
                parts.append((proto, b"", None))
                i += 1
                continue
            if i + 1 >= len(names):
                raise MultiaddrError(f"protocol {proto.name!r} needs a value in {_short(text)}")
            try:
                raw = proto.to_raw(names[i + 1])
                value = proto.to_text(raw)
            except MultiaddrError as exc:
                raise MultiaddrError(f"{exc} in {_short(text)}") from None
            parts.append((proto, raw, value))
            i += 2
            if len(parts) > MAX_COMPONENTS:
                raise MultiaddrError(f"more than {MAX_COMPONENTS} components in {_short(text)}")
        return cls._build(tuple(parts))

    @classmethod
    def from_bytes(cls, data: bytes) -> Multiaddr:
        """Decode the binary form; any malformation raises :class:`MultiaddrError`."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MultiaddrError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        n = len(data)
        if n > MAX_BYTES:
            raise MultiaddrError(f"multiaddr longer than {MAX_BYTES} bytes")
        parts: list[_Part] = []
        i = 0
        try:
            while i < n:
                if len(parts) >= MAX_COMPONENTS:
                    raise MultiaddrError(f"more than {MAX_COMPONENTS} components")
                got = decode_uvarint(data, i)
                if got is None:
                    raise MultiaddrError("truncated protocol code")
                code, i = got
                proto = _BY_CODE.get(code)
                if proto is None:
                    raise MultiaddrError(f"unknown protocol code {code} (0x{code:x})")
                size = proto.size
                if size == -1:
                    got = decode_uvarint(data, i)
                    if got is None:
                        raise MultiaddrError(f"truncated length of /{proto.name} value")
                    size, i = got
                if i + size > n:
                    raise MultiaddrError(f"truncated /{proto.name} value")
                raw = data[i : i + size]
                i += size
                value = proto.to_text(raw) if proto.to_text is not None else None
                parts.append((proto, raw, value))
        except VarintError as exc:
            raise MultiaddrError(f"malformed multiaddr: {exc}") from None
        return cls._build(tuple(parts), data)

    @classmethod
    def from_tcp(cls, host: str, port: int) -> Multiaddr:
        """``/ip4|ip6|dns/host/tcp/port``; for turning a socket address into something to advertise."""
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise MultiaddrError(f"invalid TCP port {port!r}")
        if not isinstance(host, str):
            raise MultiaddrError(f"expected a str host, got {type(host).__name__}")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ip = ipaddress.ip_address(bare)
        except ValueError:
            ip = None
        if isinstance(ip, ipaddress.IPv4Address):
            first: _Part = (_BY_NAME["ip4"], ip.packed, _ip4_text(ip.packed))
        elif isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id is not None:
                raise MultiaddrError(f"IPv6 zones are not supported: {host!r}")
            first = (_BY_NAME["ip6"], ip.packed, _ip6_text(ip.packed))
        else:
            raw = _dns_raw(host)
            first = (_BY_NAME["dns"], raw, host)
        raw_port = port.to_bytes(2, "big")
        return cls._build((first, (_TCP, raw_port, str(port))))

    def to_bytes(self) -> bytes:
        return self._bytes

    @property
    def components(self) -> tuple[tuple[str, str | None], ...]:
        """``(protocol name, canonical text value or None)`` for each component, in order."""
        return tuple((p.name, value) for p, _, value in self._parts)

    @property
    def peer_id(self) -> PeerId | None:
        """The peer this address reaches: the trailing ``/p2p/`` component, if there is one.

        A ``/p2p/`` before ``/p2p-circuit`` names the relay, not the addressed peer, so
        ``/p2p/R/p2p-circuit`` has no peer id.
        """
        if self._parts and self._parts[-1][0] is _P2P:
            return PeerId(self._parts[-1][1])
        return None

    def without_peer_id(self) -> Multiaddr:
        """Drop the trailing ``/p2p/`` component (may leave the empty multiaddr ``/``)."""
        if self._parts and self._parts[-1][0] is _P2P:
            return Multiaddr._build(self._parts[:-1])
        return self

    def with_peer_id(self, peer_id: PeerId) -> Multiaddr:
        """Replace the trailing ``/p2p/`` component, or append one."""
        part: _Part = (_P2P, peer_id.to_bytes(), peer_id.to_base58())
        return Multiaddr._build((*self.without_peer_id()._parts, part))

    def tcp_endpoint(self) -> tuple[str, int]:
        """``(host, port)`` to dial for ``/ip4|ip6|dns|dns4|dns6/H/tcp/N[/p2p/X]``."""
        parts = self._parts
        if (
            len(parts) in (2, 3)
            and parts[0][0].name in _TCP_HOSTS
            and parts[1][0] is _TCP
            and (len(parts) == 2 or parts[2][0] is _P2P)
        ):
            host = parts[0][2]
            assert host is not None
            return host, int.from_bytes(parts[1][1], "big")
        raise MultiaddrError(f"{self._text} is not a direct TCP address")

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"Multiaddr({self._text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Multiaddr) and other._bytes == self._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Multiaddr is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Multiaddr is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (Multiaddr.from_bytes, (self._bytes,))
