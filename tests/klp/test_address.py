"""KLP addresses: parse/format round trips, helpers, and clear errors on bad input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.klp import AddressError, KLPAddress
from kosmesh.klp.address import MAX_ADDRESS_LENGTH

PEER = PeerId.from_public_key(Ed25519PrivateKey(bytes(range(32))).public_key)
PEER_TEXT = PEER.to_base58()


@pytest.mark.parametrize(
    ("text", "authority", "path", "query", "fragment"),
    [
        (f"klp://{PEER_TEXT}/", PEER_TEXT, "/", None, None),
        (f"klp://{PEER_TEXT}/agents/genie", PEER_TEXT, "/agents/genie", None, None),
        ("klp://node.domain.kai/services/vector", "node.domain.kai", "/services/vector", None, None),
        ("klp://node.domain.kai/a/b?x=1&y=2#frag", "node.domain.kai", "/a/b", "x=1&y=2", "frag"),
        ("klp://node.domain.kai/?", "node.domain.kai", "/", "", None),
        ("klp://node.domain.kai/#", "node.domain.kai", "/", None, ""),
        ("klp://a-1.b2.kai/p?q?r#f#g", "a-1.b2.kai", "/p", "q?r", "f#g"),
        ("klp://node.domain.kai/agents/g%C3%A9nie", "node.domain.kai", "/agents/g%C3%A9nie", None, None),
        ("klp://node.domain.kai/agents/génie", "node.domain.kai", "/agents/génie", None, None),
    ],
)
def test_parse_and_format_round_trip(
    text: str, authority: str, path: str, query: str | None, fragment: str | None
) -> None:
    address = KLPAddress.parse(text)
    assert address == KLPAddress(authority, path, query, fragment)
    assert str(address) == text
    assert KLPAddress.parse(str(address)) == address


def test_missing_path_means_root() -> None:
    address = KLPAddress.parse(f"klp://{PEER_TEXT}")
    assert address.path == "/"
    assert str(address) == f"klp://{PEER_TEXT}/"
    assert KLPAddress.parse("klp://node.domain.kai?x").query == "x"


def test_helpers_for_peer_authorities() -> None:
    agent = KLPAddress.for_agent(PEER, "genie")
    assert str(agent) == f"klp://{PEER_TEXT}/agents/genie"
    assert agent.agent_name() == "genie"
    assert agent.service_name() is None
    assert agent.authority_peer_id() == PEER
    assert not agent.is_name()
    node = KLPAddress.for_node(PEER)
    assert str(node) == f"klp://{PEER_TEXT}/"
    assert node.agent_name() is None
    service = KLPAddress.for_service(PEER, "vector")
    assert service.service_name() == "vector"
    assert KLPAddress(PEER_TEXT, "/agents/a/b").agent_name() is None
    assert KLPAddress(PEER_TEXT, "/agents/").agent_name() is None


def test_name_authority_has_no_peer_id() -> None:
    address = KLPAddress.parse("klp://node.domain.kai/agents/genie")
    assert address.authority_peer_id() is None
    assert address.is_name()
    assert address.agent_name() == "genie"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("http://node.domain.kai/", "scheme must be 'klp'"),
        ("KLP://node.domain.kai/", "scheme must be 'klp'"),
        ("node.domain.kai/agents/x", "starts with 'klp://'"),
        ("klp:/node.domain.kai/", "starts with 'klp://'"),
        ("klp:///agents/x", "authority is empty"),
        ("klp://node.domain.kai/agents/ x", "whitespace or control"),
        ("klp://node.domain.kai/agents/\tx", "whitespace or control"),
        ("klp://node.domain.kai/agents/x\x00", "whitespace or control"),
        ("klp://node.domain.kai/a\u00a0b", "whitespace or control"),
        ("klp://node.domain.kai/a?b c", "whitespace or control"),
        ("klp://Node.Domain.kai/", "not a valid name"),
        ("klp://node..kai/", "not a valid name"),
        ("klp://-node.kai/", "not a valid name"),
        ("klp://node.kai:4001/", "not a valid name"),
        ("klp://user@node.kai/", "not a valid name"),
        ("klp://localhost/", "neither a peer id nor a domain name"),
        ("klp://12D3KooWnotapeerid/", "neither a peer id nor a domain name"),
        (f"klp://{PEER.to_cid()}/", "base58btc form"),
        ("klp://node.domain.kai/" + "a" * MAX_ADDRESS_LENGTH, "longer than 2048"),
    ],
)
def test_parse_errors_are_clear(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=message) as info:
        KLPAddress.parse(text)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"authority": PEER_TEXT, "path": "agents/x"}, "must start with '/'"),
        ({"authority": PEER_TEXT, "path": "/a?b"}, "must not contain '\\?' or '#'"),
        ({"authority": PEER_TEXT, "path": "/", "query": "a#b"}, "query must be text without '#'"),
        ({"authority": PEER_TEXT, "path": "/", "fragment": "a b"}, "whitespace"),
        ({"authority": "", "path": "/"}, "authority is empty"),
    ],
)
def test_constructor_validates(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(AddressError, match=message):
        KLPAddress(**kwargs)


@pytest.mark.parametrize("name", ["", "a/b", "a?b", "a#b", "a b"])
def test_agent_names_are_single_segments(name: str) -> None:
    with pytest.raises(AddressError):
        KLPAddress.for_agent(PEER, name)


def test_parse_rejects_non_text() -> None:
    with pytest.raises(AddressError):
        KLPAddress.parse(b"klp://node.domain.kai/")  # type: ignore[arg-type]


_label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_names = st.lists(_label, min_size=2, max_size=4).map(".".join)
_peers = st.sampled_from([PEER_TEXT, str(PeerId.from_public_key(Ed25519PrivateKey(b"\x07" * 32).public_key))])
_safe = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"),
        blacklist_characters="?#/",
    ),
    max_size=12,
)
_segments = st.lists(_safe, max_size=4).map(lambda parts: "/" + "/".join(parts))
_query = st.none() | st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"), blacklist_characters="#"
    ),
    max_size=12,
)
_fragment = st.none() | _safe


@given(authority=_names | _peers, path=_segments, query=_query, fragment=_fragment)
def test_round_trip_property(authority: str, path: str, query: str | None, fragment: str | None) -> None:
    address = KLPAddress(authority, path, query, fragment)
    text = str(address)
    assert KLPAddress.parse(text) == address
    assert str(KLPAddress.parse(text)) == text


_peerish = st.tuples(st.sampled_from(["1", "Q", "b", "12D3KooW", "Qm", "bafz"]), st.text(max_size=50)).map(
    lambda parts: "klp://" + "".join(parts)
)


@settings(max_examples=300)
@given(st.text(max_size=80) | st.text(max_size=60).map(lambda s: "klp://" + s) | _peerish)
def test_arbitrary_text_parses_or_raises_address_error(text: str) -> None:
    try:
        address = KLPAddress.parse(text)
    except AddressError:
        return
    assert KLPAddress.parse(str(address)) == address
