"""Fuzz target for the sans-I/O connection core (``kosmesh.wire.connection_core``).

Two modes, chosen by bit 1 of the option byte (bit 0: the core under test is the dialer):

* raw: the input is the remote's bytes from the first one on, cut into reads (bits 2-4 choose the
  cuts): the upgrade's parsers (multistream, Noise, multistream again) meet attacker bytes;
* script: a real upgrade first (fixed keys, so it replays), then the input is a script of remote
  yamux plaintext (encrypted by the real peer, so it gets past Noise to the core's stream rules),
  clock steps and local API calls (open, send, read, abandon, reset, cork), checking the books
  after every step.

Either way ``receive_data`` and ``handle_timer`` must never raise (remote faults become a
``ConnectionClosed`` event, always last), nothing overdue may be left after a timer, and the
bounds hold: unread bytes within ``max_buffered_in`` once checked, queued bytes within
``max_write_buffer`` plus one write, negotiating streams within their limit.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib

from kosmesh.identity import Ed25519PrivateKey
from kosmesh.wire import multistream, yamux
from kosmesh.wire.connection_core import ConnectionCore
from kosmesh.wire.connection_events import ConnectionClosed, ConnectionLimits, CoreEvent
from tests.fuzz.registry import fuzz_target

PROTOCOLS = ("/fuzz/a/1.0.0", "/fuzz/b/1.0.0")
LIMITS = ConnectionLimits(
    max_streams=16,
    max_negotiating_streams=4,
    stream_receive_window=256 * 1024,
    max_write_buffer=64 * 1024,
    max_stream_write_buffer=32 * 1024,
    max_buffered_in=384 * 1024,
    max_budget_resets=4,
    stream_open_rate=20.0,
    stream_open_burst=6.0,
    handshake_timeout=5.0,
    stream_negotiation_timeout=3.0,
    keepalive_interval=4.0,
    idle_timeout=10.0,
    write_stall_timeout=8.0,
)
MAX_WRITE = 255 * 256
_READ_SIZES = (1, 2, 3, 7, 12, 13, 64, 255, 1024)


def _fixed(label: str) -> bytes:
    return hashlib.sha256(b"kosmesh fuzz connection: " + label.encode()).digest()


_KEYS = {
    True: (Ed25519PrivateKey(_fixed("dialer identity")), _fixed("dialer static"), _fixed("dialer ephemeral")),
    False: (Ed25519PrivateKey(_fixed("listener identity")), _fixed("listener static"), _fixed("listener ephemeral")),
}


def _core(initiator: bool) -> ConnectionCore:
    identity, static, ephemeral = _KEYS[initiator]
    return ConnectionCore(
        identity=identity,
        initiator=initiator,
        limits=LIMITS,
        supports=frozenset(PROTOCOLS).__contains__,
        now=0.0,
        static_private=static,
        ephemeral_private=ephemeral,
    )


def _upgrade(under_test_dials: bool) -> tuple[ConnectionCore, ConnectionCore, bytes]:
    """A core and its real peer, upgraded; and every byte the peer sent on the way."""
    core, peer = _core(under_test_dials), _core(not under_test_dials)
    sent = bytearray()
    for _ in range(20):
        a, b = core.data_to_send(), peer.data_to_send()
        if not a and not b:
            break
        if b:
            sent += b
            core.receive_data(b, 0.0)
        if a:
            peer.receive_data(a, 0.0)
    assert core.phase == peer.phase == "open"
    return core, peer, bytes(sent)


@functools.cache
def _transcript(under_test_dials: bool) -> bytes:
    return _upgrade(under_test_dials)[2]


def _cuts(data: bytes, selector: int) -> list[bytes]:
    if not selector:
        return [data]
    pieces, pos, step = [], 0, selector
    while pos < len(data):
        size = _READ_SIZES[(pos * 7 + step) % len(_READ_SIZES)]
        pieces.append(data[pos : pos + size])
        pos += size
        step += selector
    return pieces


class _Script:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def _check_events(core: ConnectionCore, events: list[CoreEvent]) -> None:
    closed = [i for i, e in enumerate(events) if isinstance(e, ConnectionClosed)]
    assert closed in ([], [len(events) - 1]), "ConnectionClosed comes once, and last"
    if closed:
        assert core.phase == "closed"


def _check_books(core: ConnectionCore) -> None:
    if core.phase != "open":
        return
    session = core.session
    ids = session.stream_ids()
    assert core.buffered_in == sum(session.stream_unread(s) for s in ids) >= 0
    assert core.buffered_out == sum(session.pending_send(s) for s in ids) >= 0
    assert core.buffered_out <= LIMITS.max_write_buffer + MAX_WRITE
    assert 0 <= core.negotiating <= core.negotiation_deadlines
    assert 0 <= core.negotiating_in <= min(core.negotiating, LIMITS.max_negotiating_streams)
    core.data_to_send()


def _receive(core: ConnectionCore, data: bytes, now: float) -> None:
    """What the adapter does with a read: feed it, then enforce the inbound budget."""
    events = core.receive_data(data, now)
    _check_events(core, events)
    if core.inbound_check_due:
        _check_events(core, core.check_inbound(now))
        if core.phase == "open":
            assert core.buffered_in <= LIMITS.max_buffered_in


def _run_script(core: ConnectionCore, peer: ConnectionCore, script: _Script) -> None:
    encrypt = peer._encrypt
    assert encrypt is not None
    now = 0.0
    steps = 0
    while not script.done and core.phase == "open" and steps < 200:
        steps += 1
        op = script.byte() % 8
        ids = sorted(core.session.stream_ids())
        pick = script.byte()
        sid = ids[pick % len(ids)] if ids else 1
        if op == 0:  # remote yamux plaintext, up to 4 KiB
            size = script.byte() | (script.byte() & 0x0F) << 8
            _receive(core, encrypt(script.take(size)), now)
        elif op == 1:  # the clock moves
            now += script.byte() / 8
            _check_events(core, core.handle_timer(now))
            timer = core.get_timer()
            assert timer is None or timer > now, "a deadline was left overdue"
        elif op == 2:
            with contextlib.suppress(ConnectionError):  # out of stream slots: a documented refusal
                core.open_stream(PROTOCOLS[script.byte() % 2 :] or PROTOCOLS, now)
        elif op == 3:
            with contextlib.suppress(ConnectionError):  # closed for writing, queue full, unknown stream
                core.send_data(sid, b"w" * (script.byte() * 256))
        elif op == 4:
            core.consume(sid, min(core.session.stream_unread(sid), script.byte() * 1024))
        elif op == 5:
            (core.stop_reading, core.reset_stream, core.close_stream)[script.byte() % 3](sid)
        elif op == 6:
            if script.byte() & 1:
                core.pause_writing()
            else:
                _check_events(core, core.resume_writing())
        else:
            core.ping(now)
        _check_books(core)


def _seed(under_test_dials: bool, script: bytes) -> bytes:
    return bytes([0b10 | under_test_dials]) + script


def _frame(kind: int, flags: int, sid: int, payload: bytes = b"", length: int | None = None) -> bytes:
    size = len(payload) if length is None else length
    return yamux.encode_header(kind, flags, sid, size) + payload


def _plaintext(chunk: bytes) -> bytes:
    """Script op 0 with ``chunk`` as the remote's plaintext."""
    assert len(chunk) < 4096
    return bytes([0, 0, len(chunk) & 0xFF, len(chunk) >> 8]) + chunk


def _connection_core_seeds() -> dict[str, bytes]:
    hello = multistream.HEADER + multistream.encode_message(PROTOCOLS[0])
    lazy = _frame(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, 1) + _frame(yamux.TYPE_DATA, 0, 1, hello + b"data" * 100)
    flood = b"".join(
        _frame(yamux.TYPE_WINDOW_UPDATE, yamux.FLAG_SYN, sid) + _frame(yamux.TYPE_DATA, yamux.FLAG_FIN, sid, hello)
        for sid in range(1, 20, 2)
    )
    return {
        "listener-meets-a-dialer": bytes([0b00]) + _transcript(False),
        "dialer-meets-a-listener": bytes([0b01]) + _transcript(True),
        "listener-meets-a-dialer-in-small-reads": bytes([0b11100]) + _transcript(False),
        "lazy-proposal-then-read-and-timeouts": _seed(False, _plaintext(lazy) + b"\x04\x00\x03" + b"\x01\x00\x10" * 4),
        "stream-open-flood": _seed(False, _plaintext(flood) + b"\x01\x00\x10"),
        "dialer-opens-sends-and-corks": _seed(
            True,
            b"\x02\x00\x00" + b"\x03\x00\xff" * 6 + b"\x06\x00\x01" + b"\x03\x00\x10\x06\x00\x00" + b"\x01\x00\x50",
        ),
    }


@fuzz_target(_connection_core_seeds)
def connection_core(data: bytes) -> bool:
    """The connection core (upgrade, stream negotiation, deadlines, send and receive bounds): remote
    bytes from the first one, or a script of remote frames, clock steps and local calls after a real
    upgrade; never raises on remote input, leaves nothing overdue, keeps its books and bounds."""
    opt, body = (data[0], data[1:]) if data else (0, b"")
    under_test_dials = bool(opt & 1)
    if not opt & 0b10:
        core = _core(under_test_dials)
        now = 0.0
        for chunk in _cuts(body, (opt >> 2) & 0b111):
            _receive(core, chunk, now)
            now += 0.25
            _check_events(core, core.handle_timer(now))
            core.data_to_send()
        return core.phase == "open"
    core, peer, _ = _upgrade(under_test_dials)
    _run_script(core, peer, _Script(body))
    return core.phase == "open"
