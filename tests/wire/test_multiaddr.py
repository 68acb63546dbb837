"""Multiaddr codec: spec vectors, round trips, and hostile input."""

from __future__ import annotations

import contextlib
import ipaddress
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kosmesh.identity import Ed25519PrivateKey, PeerId
from kosmesh.wire.multiaddr import MAX_BYTES, Multiaddr, MultiaddrError

QM = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
QM_HEX = "12209dff3b17d74cf4d38a50d8b6383e92d181a10395a5e73a726dcccbd21bf6f0b9"
ED_PEER = PeerId(bytes([0, 36, 8, 1, 18, 32]) + bytes(range(32)))


# -- spec vectors -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "hex_bytes"),
    [
        # multiformats/multiaddr README and test/multiaddr.feature
        ("/ip4/127.0.0.1/udp/1234", "047f000001910204d2"),
        ("/ip4/192.0.2.42/tcp/443", "04c000022a0601bb"),
        # libp2p addressing spec example, p2p value = length-prefixed multihash
        (f"/ip4/198.51.100.0/tcp/4001/p2p/{QM}", "04c6336400060fa1a50322" + QM_HEX),
        ("/ip6/2001:db8::1/tcp/8080", "2920010db8000000000000000000000001061f90"),
        ("/dns4/example.com/tcp/443/wss", "360b6578616d706c652e636f6d0601bbde03"),
        ("/dns/example.com/tcp/80/ws", "350b6578616d706c652e636f6d060050dd03"),
        ("/dns6/a.io/udp/1/quic-v1", "3704612e696f91020001cd03"),
        ("/dnsaddr/bootstrap.libp2p.io", "3813626f6f7473747261702e6c69627032702e696f"),
        (f"/p2p/{QM}/p2p-circuit", "a50322" + QM_HEX + "a202"),
    ],
)
def test_spec_vectors(text: str, hex_bytes: str) -> None:
    addr = Multiaddr.parse(text)
    assert addr.to_bytes().hex() == hex_bytes
    back = Multiaddr.from_bytes(bytes.fromhex(hex_bytes))
    assert back == addr
    assert str(back) == text


def test_components_and_accessors() -> None:
    addr = Multiaddr.parse(f"/ip4/1.2.3.4/tcp/4001/p2p/{QM}")
    assert addr.components == (("ip4", "1.2.3.4"), ("tcp", "4001"), ("p2p", QM))
    assert addr.peer_id == PeerId.from_string(QM)
    assert str(addr.without_peer_id()) == "/ip4/1.2.3.4/tcp/4001"
    assert addr.tcp_endpoint() == ("1.2.3.4", 4001)
    assert addr.without_peer_id().peer_id is None
    replaced = addr.with_peer_id(ED_PEER)
    assert str(replaced) == f"/ip4/1.2.3.4/tcp/4001/p2p/{ED_PEER}"
    assert replaced.without_peer_id().with_peer_id(ED_PEER) == replaced


def test_peer_id_forms() -> None:
    by_cid = Multiaddr.parse(f"/ip4/1.2.3.4/tcp/1/p2p/{ED_PEER.to_cid()}")
    by_b58 = Multiaddr.parse(f"/ip4/1.2.3.4/tcp/1/p2p/{ED_PEER}")
    legacy = Multiaddr.parse(f"/ip4/1.2.3.4/tcp/1/ipfs/{ED_PEER}")
    assert by_cid == by_b58 == legacy
    assert str(by_cid) == f"/ip4/1.2.3.4/tcp/1/p2p/{ED_PEER}"  # always printed as base58
    peer = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key)
    assert Multiaddr.parse("/").with_peer_id(peer).peer_id == peer


def test_relay_addresses() -> None:
    circuit = Multiaddr.parse(f"/ip4/1.2.3.4/tcp/1/p2p/{QM}/p2p-circuit/p2p/{ED_PEER}")
    assert circuit.peer_id == ED_PEER
    assert str(circuit.without_peer_id()) == f"/ip4/1.2.3.4/tcp/1/p2p/{QM}/p2p-circuit"
    assert circuit.without_peer_id().peer_id is None  # the relay is not the addressed peer
    with pytest.raises(MultiaddrError):
        circuit.tcp_endpoint()


def test_canonical_text() -> None:
    assert str(Multiaddr.parse("/ip6/2001:0DB8:0:0::1/tcp/0080/")) == "/ip6/2001:db8::1/tcp/80"
    assert str(Multiaddr.parse("/ip6/::ffff:1.2.3.4/tcp/1")) == "/ip6/::ffff:1.2.3.4/tcp/1"
    assert str(Multiaddr.parse("/")) == "/"
    assert Multiaddr.from_bytes(b"") == Multiaddr.parse("/")
    assert Multiaddr("/ip4/1.2.3.4/tcp/1") == Multiaddr(bytes.fromhex("0401020304060001"))


def test_value_semantics() -> None:
    a = Multiaddr.parse("/ip4/1.2.3.4/tcp/1")
    b = Multiaddr.from_bytes(a.to_bytes())
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Multiaddr.parse("/ip4/1.2.3.4/tcp/2")
    assert repr(a) == "Multiaddr('/ip4/1.2.3.4/tcp/1')"
    assert pickle.loads(pickle.dumps(a)) == a
    with pytest.raises(AttributeError):
        a._bytes = b""


@pytest.mark.parametrize(
    ("host", "port", "text"),
    [
        ("10.0.0.1", 4001, "/ip4/10.0.0.1/tcp/4001"),
        ("::1", 0, "/ip6/::1/tcp/0"),
        ("[fe80::1]", 65535, "/ip6/fe80::1/tcp/65535"),
        ("example.com", 443, "/dns/example.com/tcp/443"),
    ],
)
def test_from_tcp(host: str, port: int, text: str) -> None:
    addr = Multiaddr.from_tcp(host, port)
    assert str(addr) == text
    assert addr.tcp_endpoint()[1] == port


@pytest.mark.parametrize(("host", "port"), [("1.2.3.4", -1), ("1.2.3.4", 65536), ("", 1), ("a/b", 1)])
def test_from_tcp_rejects(host: str, port: int) -> None:
    with pytest.raises(MultiaddrError):
        Multiaddr.from_tcp(host, port)


@pytest.mark.parametrize(
    "text",
    [
        "/ip4/1.2.3.4/udp/1",
        "/ip4/1.2.3.4/tcp/1/ws",
        "/dnsaddr/example.com/tcp/1",
        "/tcp/1",
        "/ip4/1.2.3.4",
        f"/p2p/{QM}",
    ],
)
def test_tcp_endpoint_rejects(text: str) -> None:
    with pytest.raises(MultiaddrError, match="not a direct TCP address"):
        Multiaddr.parse(text).tcp_endpoint()


def test_error_message_names_the_culprit() -> None:
    with pytest.raises(MultiaddrError) as info:
        Multiaddr.parse("/ip4/1.2.3.4/tcpp/1")
    assert str(info.value) == "unknown protocol 'tcpp' in '/ip4/1.2.3.4/tcpp/1'"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ip4/1.2.3.4",
        "//",
        "/ip4",
        "/ip4/1.2.3",
        "/ip4/01.2.3.4",
        "/ip4/1.2.3.4//tcp/1",
        "/ip6/fe80::1%eth0",
        "/ip6/1.2.3.4",
        "/tcp/65536",
        "/tcp/-1",
        "/tcp/+1",
        "/tcp/1_0",
        "/tcp/ 1",
        "/tcp/\u0661",  # ARABIC-INDIC DIGIT ONE: isdigit() but not ASCII
        "/udp/",
        "/dns/",
        "/dns/a b",
        "/dns4/" + "a" * 256,
        "/dns/\ud800",
        "/p2p/notapeer",
        "/p2p/Qm",
        "/ws/extra",
        "/quic/",
        "/unix/tmp",
        "/" + "ws/" * 40,
        "/ip4/1.2.3.4" * 1000,
    ],
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(MultiaddrError):
        Multiaddr.parse(text)


@pytest.mark.parametrize(
    "hex_bytes",
    [
        "04",  # truncated ip4
        "047f0000",
        "0601",  # truncated port
        "35",  # dns without length
        "3505616263",  # dns length overruns
        "3500",  # empty dns name
        "3502ffff",  # invalid UTF-8
        "35012f",  # '/' inside a name
        "a503",  # p2p without length
        "a5030400000000",  # p2p value is not a multihash we accept
        "ff",  # truncated code
        "ffffffffffffffffffff01",  # code varint too long
        "8000",  # non-minimal varint
        "00",  # unknown code 0
        "cc03",  # /quic (draft-29) is not supported
    ],
)
def test_from_bytes_rejects(hex_bytes: str) -> None:
    with pytest.raises(MultiaddrError):
        Multiaddr.from_bytes(bytes.fromhex(hex_bytes))


def test_from_bytes_size_caps() -> None:
    with pytest.raises(MultiaddrError):
        Multiaddr.from_bytes(b"\xdd\x03" * (MAX_BYTES // 2 + 1))
    with pytest.raises(MultiaddrError):
        Multiaddr.from_bytes(b"\xdd\x03" * 33)  # too many components
    with pytest.raises(MultiaddrError):
        Multiaddr.from_bytes("/ip4/1.2.3.4")  # type: ignore[arg-type]


# -- properties ---------------------------------------------------------------------------
_ports = st.integers(0, 65535).map(str)
_ip4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
_ip6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
_dns = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x2FFF, exclude_characters="/\x7f"),
    min_size=1,
    max_size=40,
)
_peer = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda b: PeerId(bytes([0, 36, 8, 1, 18, 32]) + b)),
    st.binary(min_size=32, max_size=32).map(lambda b: PeerId(bytes([0x12, 32]) + b)),
)
_component = st.one_of(
    _ip4.map(lambda v: f"/ip4/{v}"),
    _ip6.map(lambda v: f"/ip6/{v}"),
    _ports.map(lambda v: f"/tcp/{v}"),
    _ports.map(lambda v: f"/udp/{v}"),
    st.tuples(st.sampled_from(["dns", "dns4", "dns6", "dnsaddr"]), _dns).map(lambda t: f"/{t[0]}/{t[1]}"),
    st.tuples(_peer, st.booleans()).map(lambda t: f"/p2p/{t[0].to_cid() if t[1] else t[0]}"),
    st.sampled_from(["/quic-v1", "/ws", "/wss", "/p2p-circuit"]),
)
_addr_text = st.lists(_component, min_size=1, max_size=8).map("".join)


@given(_addr_text)
def test_text_bytes_round_trip(text: str) -> None:
    addr = Multiaddr.parse(text)
    again = Multiaddr.from_bytes(addr.to_bytes())
    assert again == addr
    assert str(again) == str(addr)
    assert again.components == addr.components
    assert Multiaddr.parse(str(addr)) == addr
    assert len(addr.components) == text.count("/") - len(_valued(text))


def _valued(text: str) -> list[str]:
    """Component names in ``text`` that carry a value (for counting components)."""
    names = text.split("/")[1:]
    out, i = [], 0
    while i < len(names):
        if names[i] in ("quic-v1", "ws", "wss", "p2p-circuit"):
            i += 1
        else:
            out.append(names[i])
            i += 2
    return out


@given(_addr_text, _peer)
def test_peer_id_editing(text: str, peer: PeerId) -> None:
    addr = Multiaddr.parse(text)
    with_peer = addr.with_peer_id(peer)
    assert with_peer.peer_id == peer
    assert with_peer.with_peer_id(peer) == with_peer
    assert with_peer.without_peer_id() == addr.without_peer_id()


@given(st.binary(max_size=200))
def test_random_bytes_only_raise_multiaddr_error(data: bytes) -> None:
    try:
        addr = Multiaddr.from_bytes(data)
    except MultiaddrError:
        return
    assert addr.to_bytes() == data
    assert Multiaddr.parse(str(addr)) == addr


@given(_addr_text, st.data())
def test_truncated_and_mutated_bytes(text: str, data: st.DataObject) -> None:
    raw = Multiaddr.parse(text).to_bytes()
    cut = data.draw(st.integers(0, len(raw)))
    flip = data.draw(st.integers(0, max(len(raw) - 1, 0)))
    bit = data.draw(st.integers(0, 7))
    mutated = bytearray(raw)
    mutated[flip] ^= 1 << bit
    for candidate in (raw[:cut], bytes(mutated)):
        try:
            addr = Multiaddr.from_bytes(candidate)
        except MultiaddrError:
            continue
        assert addr.to_bytes() == candidate


@given(st.text(max_size=80))
def test_random_text_only_raises_multiaddr_error(text: str) -> None:
    with contextlib.suppress(MultiaddrError):
        Multiaddr.parse(text)


@given(
    st.lists(
        st.one_of(
            st.sampled_from(["ip4", "ip6", "tcp", "udp", "dns", "p2p", "ws", "p2p-circuit", "ipfs", ""]),
            st.text(max_size=12),
        ),
        max_size=8,
    )
)
def test_random_component_soup_only_raises_multiaddr_error(names: list[str]) -> None:
    text = "/" + "/".join(names)
    try:
        addr = Multiaddr.parse(text)
    except MultiaddrError:
        return
    assert Multiaddr.from_bytes(addr.to_bytes()) == addr
