"""KLP addresses: ``klp://authority/path?query#fragment``.

The authority is either a peer id (base58btc, ``12D3KooW…``), which inlines the Ed25519 key that
signs for it, or a DNS-like name (``node.domain.kai``) that a signed name record will resolve later.
Addresses are parsed strictly and have exactly one spelling, because they are signed as text:
a decoder that normalised them would break the signatures of whoever wrote them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from kosmesh.identity.keys import Ed25519PublicKey
from kosmesh.identity.peer_id import PeerId

SCHEME = "klp"
SCHEME_PREFIX = "klp://"
MAX_ADDRESS_LENGTH = 2048
MAX_NAME_LENGTH = 253
AGENTS_PREFIX = "/agents/"
SERVICES_PREFIX = "/services/"

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")
_SEGMENT_FORBIDDEN = frozenset("/?#")


class AddressError(ValueError):
    """Text or fields that do not form a valid KLP address."""


def _check_text(what: str, value: str) -> None:
    # str.isprintable() rejects control, format and separator characters (and lone surrogates)
    # except the ASCII space, which we refuse separately.
    if not value.isprintable() or " " in value:
        raise AddressError(f"{what} must not contain whitespace or control characters")


@lru_cache(maxsize=4096)
def _peer_id_for(authority: str) -> PeerId | None:
    """The peer id an authority spells, or None for a name. Cached: parsing base58 is slow."""
    if "." in authority:
        return None
    try:
        return PeerId.from_string(authority)
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def signer_key_for(authority: str) -> Ed25519PublicKey | None:
    """The Ed25519 key that signs for ``authority``, if the authority inlines one (cached per peer)."""
    peer_id = _peer_id_for(authority)
    return None if peer_id is None else peer_id.extract_public_key()


def _check_authority(authority: str) -> None:
    if not authority:
        raise AddressError("authority is empty")
    _check_text("authority", authority)
    if "." in authority:
        if len(authority) > MAX_NAME_LENGTH or _NAME_RE.fullmatch(authority) is None:
            raise AddressError(
                f"authority {authority[:80]!r} is not a valid name: lowercase DNS labels "
                "(a-z, 0-9, '-') separated by dots, e.g. node.domain.kai"
            )
        return
    peer_id = _peer_id_for(authority)
    if peer_id is None:
        raise AddressError(
            f"authority {authority[:80]!r} is neither a peer id nor a domain name like node.domain.kai"
        )
    if peer_id.to_base58() != authority:
        raise AddressError("a peer id authority must use the base58btc form (12D3KooW…)")


def _check_segment(what: str, name: str) -> None:
    if not name:
        raise AddressError(f"{what} is empty")
    if _SEGMENT_FORBIDDEN.intersection(name):
        raise AddressError(f"{what} {name[:80]!r} must not contain '/', '?' or '#'")
    _check_text(what, name)


@dataclass(frozen=True)
class KLPAddress:
    """A validated KLP address. ``str()`` gives its one canonical spelling."""

    authority: str
    path: str = "/"
    query: str | None = None
    fragment: str | None = None
    _text: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        if not isinstance(self.authority, str) or not isinstance(self.path, str):
            raise AddressError("authority and path must be text")
        _check_authority(self.authority)
        if not self.path.startswith("/"):
            raise AddressError(f"path {self.path[:80]!r} must start with '/'")
        if "?" in self.path or "#" in self.path:
            raise AddressError("path must not contain '?' or '#'")
        _check_text("path", self.path)
        text = SCHEME_PREFIX + self.authority + self.path
        if self.query is not None:
            if not isinstance(self.query, str) or "#" in self.query:
                raise AddressError("query must be text without '#'")
            _check_text("query", self.query)
            text += "?" + self.query
        if self.fragment is not None:
            if not isinstance(self.fragment, str):
                raise AddressError("fragment must be text")
            _check_text("fragment", self.fragment)
            text += "#" + self.fragment
        if len(text) > MAX_ADDRESS_LENGTH:
            raise AddressError(f"address is longer than {MAX_ADDRESS_LENGTH} characters")
        object.__setattr__(self, "_text", text)

    @classmethod
    def parse(cls, text: str) -> KLPAddress:
        """Parse ``klp://authority/path?query#fragment``; a missing path means ``/``."""
        if not isinstance(text, str):
            raise AddressError("a KLP address is text")
        return _parse_cached(text)

    @classmethod
    def for_node(cls, peer_id: PeerId) -> KLPAddress:
        """The address of a node itself: ``klp://<peer id>/``."""
        return cls(peer_id.to_base58(), "/")

    @classmethod
    def for_agent(cls, peer_id: PeerId, name: str) -> KLPAddress:
        """The address of agent ``name`` hosted by ``peer_id``: ``klp://<peer id>/agents/<name>``."""
        _check_segment("agent name", name)
        return cls(peer_id.to_base58(), AGENTS_PREFIX + name)

    @classmethod
    def for_service(cls, peer_id: PeerId, name: str) -> KLPAddress:
        """The address of service ``name`` on ``peer_id``: ``klp://<peer id>/services/<name>``."""
        _check_segment("service name", name)
        return cls(peer_id.to_base58(), SERVICES_PREFIX + name)

    def authority_peer_id(self) -> PeerId | None:
        """The peer id in the authority, or None when the authority is a name."""
        return _peer_id_for(self.authority)

    def is_name(self) -> bool:
        """True when the authority is a name that must be resolved before it can be trusted."""
        return "." in self.authority

    def agent_name(self) -> str | None:
        """``<name>`` for a ``/agents/<name>`` path, else None."""
        return _last_segment(self.path, AGENTS_PREFIX)

    def service_name(self) -> str | None:
        """``<name>`` for a ``/services/<name>`` path, else None."""
        return _last_segment(self.path, SERVICES_PREFIX)

    def __str__(self) -> str:
        return self._text


def _last_segment(path: str, prefix: str) -> str | None:
    if not path.startswith(prefix):
        return None
    name = path[len(prefix) :]
    return name if name and "/" not in name else None


@lru_cache(maxsize=4096)
def _parse_cached(text: str) -> KLPAddress:
    if len(text) > MAX_ADDRESS_LENGTH:
        raise AddressError(f"address is longer than {MAX_ADDRESS_LENGTH} characters")
    if not text.startswith(SCHEME_PREFIX):
        scheme, sep, _ = text.partition("://")
        if sep:
            raise AddressError(f"scheme must be {SCHEME!r}, not {scheme[:20]!r}")
        raise AddressError(f"a KLP address starts with {SCHEME_PREFIX!r}")
    _check_text("address", text)
    rest = text[len(SCHEME_PREFIX) :]
    fragment: str | None = None
    query: str | None = None
    if "#" in rest:
        rest, fragment = rest.split("#", 1)
    if "?" in rest:
        rest, query = rest.split("?", 1)
    slash = rest.find("/")
    if slash < 0:
        authority, path = rest, "/"
    else:
        authority, path = rest[:slash], rest[slash:]
    return KLPAddress(authority, path, query, fragment)
