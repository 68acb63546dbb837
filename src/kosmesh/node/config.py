"""Node configuration: ``config.toml`` in the node's home, with defaults for every key.

TOML is read with the standard library; we write it from our own small template so a
fresh home is self-documenting. Secrets never live here (the key has its own file).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the CLI reads config without loading the stack
    from kosmesh.klp.budgets import RateLimits
    from kosmesh.storage import Retention
    from kosmesh.wire.host import HostLimits

ROLES = ("peer", "gateway", "archive", "validator")
CONFIG_FILE = "config.toml"
KEY_FILE = "identity.key"
DB_FILE = "node.db"
API_FILE = "api.json"  # written while the node runs: port, pid, token file
TOKEN_FILE = "api.token"
LOCK_FILE = "node.lock"  # held (flock) by the running node; holds its pid


class ConfigError(ValueError):
    """config.toml is unreadable or holds an invalid value."""


@dataclass(slots=True)
class KLPConfig:
    max_clock_skew_s: float = 120.0  # how old a message may be
    max_future_skew_s: float = 10.0  # how far ahead of our clock a message may be stamped
    min_trust_for_tasks: float = 0.0  # a task from a peer trusted less is refused, whatever it asks
    replay_capacity: int = 100_000  # message ids remembered against replays, in all...
    replay_per_peer: int = 50_000  # ...and for one peer
    max_message_bytes: int = 1024 * 1024
    queue_capacity: int = 10_000
    workers: int = 64
    default_ttl: int = 60
    task_timeout_s: float = 30.0
    # What one peer may send before it is answered deferred(retry_after); past that, its stream is reset.
    peer_messages_per_s: float = 2_000.0
    peer_message_burst: float = 4_000.0
    peer_bytes_per_s: float = 32 * 1024 * 1024
    peer_byte_burst: float = 64 * 1024 * 1024
    peer_cpu_per_s: float = 0.25  # CPU seconds a second one peer's messages may cost this node
    peer_cpu_burst: float = 0.5
    trusted_peer_multiplier: float = 10.0  # for peers trusted at 8 or more

    def rate_limits(self) -> RateLimits:
        from kosmesh.klp.budgets import RateLimits

        return RateLimits(
            messages_per_s=self.peer_messages_per_s,
            message_burst=self.peer_message_burst,
            bytes_per_s=self.peer_bytes_per_s,
            byte_burst=self.peer_byte_burst,
            cpu_per_s=self.peer_cpu_per_s,
            cpu_burst=self.peer_cpu_burst,
            trusted_multiplier=self.trusted_peer_multiplier,
        )


@dataclass(slots=True)
class WireConfig:
    keepalive_interval_s: float = 15.0  # a yamux ping this often on every connection
    idle_timeout_s: float = 60.0  # a peer silent this long (not even a pong) is dropped
    dial_timeout_s: float = 10.0  # a dial (TCP connect + handshake) that takes longer fails
    probe_timeout_s: float = 3.0  # after a task times out, a connection that cannot answer a ping this fast is dropped
    handshake_timeout_s: float = 10.0  # an accepted socket not secured and multiplexed by then is closed
    max_connections: int = 512  # secured connections, both directions, plus dials in progress
    reserved_outbound: int = 64  # of those, slots inbound peers can never take
    max_inbound_per_ip: int = 64  # inbound sockets per IPv4 address or IPv6 /64
    max_pending_inbound: int = 128  # sockets still in their handshake, in total...
    max_pending_inbound_per_ip: int = 16  # ...and per address
    accept_backlog: int = 128  # the kernel's accept queue
    max_streams: int = 1024  # per connection
    stream_open_rate: float = 1000.0  # inbound streams a connection may open a second...
    stream_open_burst: float = 256.0  # ...and at once; past it they are reset before any work
    max_write_buffer: int = 4 * 1024 * 1024  # unsent bytes a connection may queue (a stream: half)
    write_stall_timeout_s: float = 30.0  # a queue that makes no progress this long: reset or dropped
    max_buffered_in: int = 16 * 1024 * 1024  # unread received bytes per connection
    node_max_buffered_in: int = 128 * 1024 * 1024  # ...and on all connections together

    def host_limits(self) -> HostLimits:
        """The bounds the host and each of its connections enforce, as configured here."""
        from kosmesh.wire.connection import ConnectionLimits
        from kosmesh.wire.host import HostLimits

        connection = ConnectionLimits(
            keepalive_interval=self.keepalive_interval_s,
            idle_timeout=self.idle_timeout_s,
            handshake_timeout=self.handshake_timeout_s,
            max_streams=self.max_streams,
            stream_open_rate=self.stream_open_rate,
            stream_open_burst=self.stream_open_burst,
            max_write_buffer=self.max_write_buffer,
            max_stream_write_buffer=self.max_write_buffer // 2,
            write_stall_timeout=self.write_stall_timeout_s,
            max_buffered_in=self.max_buffered_in,
        )
        return HostLimits(
            max_connections=self.max_connections,
            reserved_outbound=self.reserved_outbound,
            max_inbound_per_ip=self.max_inbound_per_ip,
            max_pending_inbound=self.max_pending_inbound,
            max_pending_inbound_per_ip=self.max_pending_inbound_per_ip,
            accept_backlog=self.accept_backlog,
            dial_timeout=self.dial_timeout_s,
            max_buffered_in=self.node_max_buffered_in,
            connection=connection,
        )


@dataclass(slots=True)
class RedialConfig:
    min_s: float = 1.0  # first redial after a drop; doubles per failure up to max_s
    max_s: float = 60.0
    give_up_s: float = 600.0  # a non-seed peer failing this long is forgotten (seeds never are)


@dataclass(slots=True)
class StorageConfig:
    """How much history node.db keeps (see kosmesh.storage.Retention); pruned every retention_interval_s."""

    tasks_max_rows: int = 1_000_000
    tasks_max_age_days: float = 30.0
    messages_max_rows: int = 100_000
    messages_max_age_days: float = 7.0
    connections_max_rows: int = 100_000
    connections_max_age_days: float = 7.0
    peers_max_rows: int = 10_000
    retention_interval_s: float = 60.0

    def retention(self) -> Retention:
        from kosmesh.storage import DAY, Retention

        return Retention(
            tasks_max_rows=self.tasks_max_rows,
            tasks_max_age_s=self.tasks_max_age_days * DAY,
            messages_max_rows=self.messages_max_rows,
            messages_max_age_s=self.messages_max_age_days * DAY,
            connections_max_rows=self.connections_max_rows,
            connections_max_age_s=self.connections_max_age_days * DAY,
            peers_max_rows=self.peers_max_rows,
        )


@dataclass(slots=True)
class TrustConfig:
    default_score: float = 5.0
    peers: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class NodeConfig:
    role: str = "peer"
    listen: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/4001"])
    seeds: list[str] = field(default_factory=list)
    api_host: str = "127.0.0.1"
    api_port: int = 0
    klp: KLPConfig = field(default_factory=KLPConfig)
    wire: WireConfig = field(default_factory=WireConfig)
    redial: RedialConfig = field(default_factory=RedialConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)

    def validate(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if not 0 <= self.trust.default_score <= 10:
            raise ConfigError("trust.default_score must be between 0 and 10")
        for peer, score in self.trust.peers.items():
            if not 0 <= score <= 10:
                raise ConfigError(f"trust score for {peer} must be between 0 and 10")
        if self.klp.workers < 1 or self.klp.queue_capacity < 1:
            raise ConfigError("klp.workers and klp.queue_capacity must be positive")
        for name in ("peer_messages_per_s", "peer_message_burst", "peer_bytes_per_s", "peer_byte_burst",
                     "peer_cpu_per_s", "peer_cpu_burst"):  # fmt: skip
            if not getattr(self.klp, name) > 0:
                raise ConfigError(f"klp.{name} must be positive")
        if not self.klp.trusted_peer_multiplier >= 1:
            raise ConfigError("klp.trusted_peer_multiplier must be at least 1")
        if self.klp.max_clock_skew_s < 0 or self.klp.max_future_skew_s < 0:
            raise ConfigError("klp.max_clock_skew_s and klp.max_future_skew_s must not be negative")
        if not 0 <= self.klp.min_trust_for_tasks <= 10:
            raise ConfigError("klp.min_trust_for_tasks must be between 0 and 10")
        if not 1 <= self.klp.replay_per_peer <= self.klp.replay_capacity:
            raise ConfigError("klp.replay_per_peer must be between 1 and klp.replay_capacity")
        if not 0 < self.wire.keepalive_interval_s < self.wire.idle_timeout_s:
            raise ConfigError("wire.keepalive_interval_s must be positive and below wire.idle_timeout_s")
        if min(self.wire.dial_timeout_s, self.wire.probe_timeout_s, self.wire.handshake_timeout_s) <= 0:
            raise ConfigError("wire.dial_timeout_s, wire.probe_timeout_s and wire.handshake_timeout_s must be positive")
        if not 0 <= self.wire.reserved_outbound < self.wire.max_connections:
            raise ConfigError("wire.reserved_outbound must be at least 0 and below wire.max_connections")
        wire_caps = ("max_inbound_per_ip", "max_pending_inbound", "max_pending_inbound_per_ip", "accept_backlog",
                     "max_streams", "stream_open_rate", "stream_open_burst", "write_stall_timeout_s")  # fmt: skip
        for name in wire_caps:
            if not getattr(self.wire, name) > 0:
                raise ConfigError(f"wire.{name} must be positive")
        if self.wire.max_write_buffer < 2 or self.wire.max_buffered_in < 1:
            raise ConfigError("wire.max_write_buffer and wire.max_buffered_in must be positive")
        if self.wire.node_max_buffered_in < 64 * 1024:
            raise ConfigError("wire.node_max_buffered_in must be at least 65536 bytes")
        if not 0 < self.redial.min_s <= self.redial.max_s:
            raise ConfigError("redial.min_s must be positive and at most redial.max_s")
        if self.redial.give_up_s < 0:
            raise ConfigError("redial.give_up_s must not be negative")
        for name in ("tasks_max_rows", "messages_max_rows", "connections_max_rows", "peers_max_rows",
                     "tasks_max_age_days", "messages_max_age_days", "connections_max_age_days",
                     "retention_interval_s"):  # fmt: skip
            if not getattr(self.storage, name) > 0:
                raise ConfigError(f"storage.{name} must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_config(home: Path) -> NodeConfig:
    path = home / CONFIG_FILE
    if not path.exists():
        return NodeConfig()
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    cfg = NodeConfig()
    node = raw.get("node", {})
    try:
        cfg.role = str(node.get("role", cfg.role))
        cfg.listen = [str(a) for a in node.get("listen", cfg.listen)]
        cfg.seeds = [str(a) for a in node.get("seeds", cfg.seeds)]
        api = raw.get("api", {})
        cfg.api_host = str(api.get("host", cfg.api_host))
        cfg.api_port = int(api.get("port", cfg.api_port))
        for name in ("klp", "wire", "redial", "storage"):
            section = getattr(cfg, name)
            for key, value in raw.get(name, {}).items():
                if not hasattr(section, key):
                    raise ConfigError(f"unknown setting {name}.{key}")
                setattr(section, key, type(getattr(section, key))(value))
        trust = raw.get("trust", {})
        cfg.trust.default_score = float(trust.get("default_score", cfg.trust.default_score))
        cfg.trust.peers = {str(k): float(v) for k, v in trust.get("peers", {}).items()}
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid value in {path}: {exc}") from None
    cfg.validate()
    return cfg


def write_config(home: Path, cfg: NodeConfig) -> None:
    """Write ``config.toml`` (TOML strings are JSON-compatible, so json.dumps quotes them)."""
    q = json.dumps
    peers = "\n".join(f"{q(k)} = {v}" for k, v in sorted(cfg.trust.peers.items()))
    text = f"""# kosmesh node configuration. Edit and restart the node.
[node]
role = {q(cfg.role)}   # peer | gateway | archive | validator
listen = {q(cfg.listen)}
seeds = {q(cfg.seeds)}

[api]
host = {q(cfg.api_host)}   # the control API only ever binds to loopback
port = {cfg.api_port}      # 0 picks a free port; the running node writes it to api.json

[klp]
max_clock_skew_s = {cfg.klp.max_clock_skew_s}     # refuse messages older than this
max_future_skew_s = {cfg.klp.max_future_skew_s}     # ...or stamped this far ahead of our clock
min_trust_for_tasks = {cfg.klp.min_trust_for_tasks}   # 0-10: tasks from peers trusted less are refused
replay_capacity = {cfg.klp.replay_capacity}    # message ids remembered against replays, in all
replay_per_peer = {cfg.klp.replay_per_peer}     # ...and at most this many for one peer
max_message_bytes = {cfg.klp.max_message_bytes}
queue_capacity = {cfg.klp.queue_capacity}
workers = {cfg.klp.workers}
default_ttl = {cfg.klp.default_ttl}
task_timeout_s = {cfg.klp.task_timeout_s}
peer_messages_per_s = {cfg.klp.peer_messages_per_s}   # per peer; over it: deferred(retry_after)
peer_message_burst = {cfg.klp.peer_message_burst}
peer_bytes_per_s = {cfg.klp.peer_bytes_per_s}
peer_byte_burst = {cfg.klp.peer_byte_burst}
peer_cpu_per_s = {cfg.klp.peer_cpu_per_s}   # CPU seconds a second one peer may cost this node
peer_cpu_burst = {cfg.klp.peer_cpu_burst}
trusted_peer_multiplier = {cfg.klp.trusted_peer_multiplier}   # peers trusted at 8+ get this much more

[wire]
keepalive_interval_s = {cfg.wire.keepalive_interval_s}   # ping every connection this often
idle_timeout_s = {cfg.wire.idle_timeout_s}          # drop a peer silent this long
dial_timeout_s = {cfg.wire.dial_timeout_s}          # give up a dial after this long
probe_timeout_s = {cfg.wire.probe_timeout_s}         # after a task timeout: no pong this fast, redial
handshake_timeout_s = {cfg.wire.handshake_timeout_s}     # close a socket not secured by then
# Sockets a remote can make the node hold: at most max_connections + max_pending_inbound + 32.
max_connections = {cfg.wire.max_connections}          # secured connections and dials in progress
reserved_outbound = {cfg.wire.reserved_outbound}         # slots kept for our own dials
max_inbound_per_ip = {cfg.wire.max_inbound_per_ip}        # per IPv4 address or IPv6 /64
max_pending_inbound = {cfg.wire.max_pending_inbound}      # handshakes in progress, in total
max_pending_inbound_per_ip = {cfg.wire.max_pending_inbound_per_ip} # ...and per address
accept_backlog = {cfg.wire.accept_backlog}           # the kernel's accept queue
# Memory a remote can make the node hold: writes wait for drain, and these caps hold whatever it does.
max_streams = {cfg.wire.max_streams}             # per connection
stream_open_rate = {cfg.wire.stream_open_rate}     # inbound streams per second a connection may open...
stream_open_burst = {cfg.wire.stream_open_burst}     # ...and at once; more are reset before any work
max_write_buffer = {cfg.wire.max_write_buffer}   # unsent bytes per connection (per stream: half)
write_stall_timeout_s = {cfg.wire.write_stall_timeout_s}  # a send queue stuck this long: reset, or dropped
max_buffered_in = {cfg.wire.max_buffered_in}    # unread received bytes per connection...
node_max_buffered_in = {cfg.wire.node_max_buffered_in}  # ...and on all connections together

[redial]   # seeds and peers we dialed are redialed when their connection drops
min_s = {cfg.redial.min_s}
max_s = {cfg.redial.max_s}
give_up_s = {cfg.redial.give_up_s}   # forget a non-seed peer after failing this long

[storage]   # history kept in node.db; the oldest rows go first
tasks_max_rows = {cfg.storage.tasks_max_rows}
tasks_max_age_days = {cfg.storage.tasks_max_age_days}
messages_max_rows = {cfg.storage.messages_max_rows}
messages_max_age_days = {cfg.storage.messages_max_age_days}
connections_max_rows = {cfg.storage.connections_max_rows}
connections_max_age_days = {cfg.storage.connections_max_age_days}
peers_max_rows = {cfg.storage.peers_max_rows}   # least recently seen peers are forgotten first
retention_interval_s = {cfg.storage.retention_interval_s}

[trust]
default_score = {cfg.trust.default_score}   # 0-10, for peers with no other record

[trust.peers]   # "<peer id>" = score
{peers}
"""
    tmp = home / (CONFIG_FILE + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, home / CONFIG_FILE)
