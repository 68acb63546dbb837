"""Reconnecting on its own: the redial schedule, and real nodes on loopback that come back."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kosmesh import Node
from kosmesh.agents import Task
from kosmesh.discovery.redial import JITTER, Redialer, RedialPolicy
from kosmesh.discovery.redial_service import RedialService
from kosmesh.node.config import ConfigError, NodeConfig, RedialConfig, WireConfig, load_config, write_config
from tests.waiting import wait_for

SEED = "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWseed"
PEER = "12D3KooWpeer"
PEER_ADDR = f"/ip4/10.0.0.2/tcp/4001/p2p/{PEER}"


def redialer(node: Node) -> Redialer:
    return node.driver.get(RedialService).redialer


def schedule(min_s: float = 1.0, max_s: float = 8.0, give_up_s: float = 30.0) -> Redialer:
    return Redialer(RedialPolicy(min_s=min_s, max_s=max_s, give_up_s=give_up_s), rng=random.Random(7))


def test_seed_is_due_at_once_and_not_twice_while_dialing() -> None:
    r = schedule()
    r.keep_seed(SEED, 100.0, "12D3KooWseed")
    assert [t.key for t in r.due(100.0)] == ["12D3KooWseed"]
    assert r.due(100.0) == []  # in flight: not handed out again
    assert r.next_due() is None


def test_failures_back_off_to_the_cap_and_a_connection_resets_them() -> None:
    r = schedule(min_s=1.0, max_s=8.0)
    r.keep_seed(SEED, 0.0, "12D3KooWseed")
    now, gaps = 0.0, []
    for _ in range(6):
        (target,) = r.due(now)
        r.dial_failed(target.key, now)
        due = r.next_due()
        assert due is not None
        gaps.append(due - now)
        now = due
    bases = [2.0, 4.0, 8.0, 8.0, 8.0, 8.0]
    assert all(b * (1 - JITTER) <= g <= b * (1 + JITTER) for b, g in zip(bases, gaps, strict=True)), gaps
    (target,) = r.due(now)
    r.dial_succeeded(target.key, "12D3KooWseed", now)
    assert r.targets["12D3KooWseed"].failures == 0 and r.next_due() is None
    r.disconnected("12D3KooWseed", now + 1)
    due = r.next_due()
    assert due is not None and due - (now + 1) <= 1.0 * (1 + JITTER)  # back to the shortest delay


def test_seeds_are_kept_forever_and_other_peers_are_given_up() -> None:
    r = schedule(min_s=1.0, max_s=4.0, give_up_s=30.0)
    r.keep_seed(SEED, 0.0, "12D3KooWseed")
    r.keep_peer(PEER, [PEER_ADDR], 0.0, connected=False)
    now = 0.0
    while now < 100.0:
        for target in r.due(now):
            r.dial_failed(target.key, now)
        now += 0.5
    assert list(r.targets) == ["12D3KooWseed"]


def test_only_the_dialing_side_keeps_a_peer() -> None:
    r = schedule()
    r.connected(PEER, 0.0)  # an inbound connection: nothing to keep
    r.disconnected(PEER, 1.0)
    assert r.targets == {} and r.next_due() is None
    r.keep_peer(PEER, [PEER_ADDR], 2.0, connected=True)  # we dialed it
    assert r.next_due() is None
    r.disconnected(PEER, 3.0)
    assert [t.key for t in r.due(3.0 + 1.0 * (1 + JITTER))] == [PEER]


def test_a_seed_dialed_by_address_learns_its_peer_id() -> None:
    r = schedule()
    addr = "/ip4/10.0.0.1/tcp/4001"
    r.keep_seed(addr, 0.0)
    (target,) = r.due(0.0)
    r.keep_peer(PEER, [PEER_ADDR], 0.1, connected=True)  # the connection callback runs first
    r.dial_succeeded(target.key, PEER, 0.1)
    assert list(r.targets) == [PEER]
    kept = r.targets[PEER]
    assert kept.forever and kept.connected and not kept.dialing and kept.addrs == [addr, PEER_ADDR]


def test_the_schedule_is_bounded() -> None:
    r = schedule()
    r.max_targets = 3
    for i in range(10):
        r.keep_peer(f"peer{i}", [f"/ip4/10.0.0.{i}/tcp/1"] * 2 + [f"/ip4/10.1.0.{i}/tcp/{p}" for p in range(9)], 0.0,
                    connected=False)  # fmt: skip
    assert len(r.targets) == 3 and all(len(t.addrs) <= 4 for t in r.targets.values())


@given(st.lists(st.tuples(st.sampled_from(["fail", "drop", "up"]), st.floats(0.0, 50.0)), max_size=60))
def test_delays_stay_within_the_policy_whatever_happens(events: list[tuple[str, float]]) -> None:
    r = schedule(min_s=0.5, max_s=10.0, give_up_s=1e9)
    r.keep_seed(SEED, 0.0, "12D3KooWseed")
    now = 0.0
    for kind, step in events:
        now += step
        for target in r.due(now):
            if kind == "up":
                r.dial_succeeded(target.key, "12D3KooWseed", now)
            else:
                r.dial_failed(target.key, now)
        if kind == "drop":
            r.disconnected("12D3KooWseed", now)
        due = r.next_due()
        if due is not None:
            assert now - 1e-9 <= due <= now + 10.0 * (1 + JITTER)
        target = r.targets["12D3KooWseed"]
        assert target.connected or target.dialing or target.due_at is not None  # a seed is never dropped


def test_config_sections_round_trip_and_are_checked(tmp_path: Path) -> None:
    cfg = NodeConfig(wire=WireConfig(keepalive_interval_s=0.5, idle_timeout_s=2.0),
                     redial=RedialConfig(min_s=0.1, max_s=1.0, give_up_s=5.0))  # fmt: skip
    write_config(tmp_path, cfg)
    loaded = load_config(tmp_path)
    assert loaded.wire == cfg.wire and loaded.redial == cfg.redial
    (tmp_path / "config.toml").write_text("[wire]\nkeepalive_interval_s = 9\nidle_timeout_s = 3\n")
    try:
        load_config(tmp_path)
    except ConfigError as exc:
        assert "keepalive_interval_s" in str(exc)
    else:
        raise AssertionError("a keepalive longer than the idle timeout was accepted")


def fast_redial(seeds: list[str] | None = None) -> NodeConfig:
    cfg = NodeConfig(redial=RedialConfig(min_s=0.05, max_s=0.2, give_up_s=60.0))
    cfg.listen = ["/ip4/127.0.0.1/tcp/0"]
    cfg.seeds = seeds or []
    return cfg


async def test_node_redials_its_seed_after_the_seed_restarts(tmp_path: Path) -> None:
    seed = Node(tmp_path / "seed", listen=["/ip4/127.0.0.1/tcp/0"])
    await seed.start()
    try:
        addr = str(seed.host.listen_addrs[0])
        port = seed.host.listen_addrs[0].tcp_endpoint()[1]
        async with Node(tmp_path / "b", config=fast_redial([addr])) as b:
            await wait_for(lambda: b.host.connection_to(seed.peer_id))
            await seed.stop()
            await wait_for(lambda: b.host.connection_to(seed.peer_id) is None)
            await wait_for(lambda: redialer(b).targets[str(seed.peer_id)].failures >= 2)  # it keeps trying
            seed = Node(tmp_path / "seed", listen=[f"/ip4/127.0.0.1/tcp/{port}"])
            await seed.start()  # same home, same peer id, same port
            await wait_for(lambda: b.host.connection_to(seed.peer_id), timeout=10)
            reply = await b.send_task(f"klp://{seed.peer_id}/agents/echo", "back again")
            assert reply.result == "back again"
            assert [t["connected"] for t in b.status()["redial"]] == [True]
    finally:
        await seed.stop()


async def test_a_dialed_peer_is_redialed_and_the_dialed_side_does_not_dial_back(tmp_path: Path) -> None:
    a = Node(tmp_path / "a", config=fast_redial())
    b = Node(tmp_path / "b", config=fast_redial())
    async with a, b:
        await a.connect(str(b.host.listen_addrs[0]))
        await wait_for(lambda: b.host.connection_to(a.peer_id))
        assert str(a.peer_id) not in redialer(b).targets  # b was dialed: a does the redialing
        conn = a.host.connection_to(b.peer_id)
        assert conn is not None
        conn.abort("cut by the test")
        await wait_for(lambda: (c := a.host.connection_to(b.peer_id)) is not None and c is not conn)
        assert str(a.peer_id) not in redialer(b).targets


async def test_a_task_timeout_on_a_stalled_connection_drops_it_and_the_next_task_redials(tmp_path: Path) -> None:
    cfg = fast_redial()
    cfg.wire = WireConfig(probe_timeout_s=0.3)
    a = Node(tmp_path / "a", config=cfg)
    b = Node(tmp_path / "b", config=fast_redial())
    async with a, b:
        stalled = await a.connect(str(b.host.listen_addrs[0]))
        b_side = await wait_for(lambda: b.host.connection_to(a.peer_id))
        assert b_side._transport is not None
        b_side._transport.pause_reading()  # b stops reading: to a, the link has gone silent
        try:
            await a.send_task(f"klp://{b.peer_id}/agents/echo", "into the void", timeout=0.3)
        except Exception as exc:
            assert "no response within" in str(exc)
        else:
            raise AssertionError("a task over a stalled connection was answered")
        await wait_for(lambda: stalled.closed)  # the probe got no pong and dropped it
        assert "ping" in (stalled.close_reason or "")
        fresh = await wait_for(lambda: a.host.connection_to(b.peer_id))
        assert fresh is not stalled
        reply = await a.send_task(f"klp://{b.peer_id}/agents/echo", "through a fresh connection")
        assert reply.result == "through a fresh connection"


async def test_a_slow_agent_does_not_get_its_connection_dropped(tmp_path: Path) -> None:
    cfg = fast_redial()
    cfg.wire = WireConfig(probe_timeout_s=0.5)
    a = Node(tmp_path / "a", config=cfg)
    b = Node(tmp_path / "b", config=fast_redial())
    release = asyncio.Event()

    @b.agent("slow")
    async def slow(task: Task) -> Any:
        await release.wait()
        return task.data

    async with a, b:
        conn = await a.connect(str(b.host.listen_addrs[0]))
        try:
            await a.send_task(f"klp://{b.peer_id}/agents/slow", "wait", timeout=0.2)
        except Exception as exc:
            assert "no response within" in str(exc)
        await wait_for(lambda: not a._probing)  # the probe ran and got its pong
        release.set()
        assert not conn.closed and a.host.connection_to(b.peer_id) is conn
