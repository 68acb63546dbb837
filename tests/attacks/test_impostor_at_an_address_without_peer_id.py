"""Addresses without /p2p/: whoever answers first is pinned to the address, and shown as such.

Before, a seed or `connect` without /p2p/ accepted whoever answered, silently, every time, so a
machine that took over the address took over the peer. Now the first answer is pinned (with a
warning), `kosmesh peers` shows the pin, and another key at that address is refused.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kosmesh import Node
from kosmesh.cli.process import NodeProcess
from kosmesh.discovery.redial_service import RedialService
from kosmesh.node.config import NodeConfig, RedialConfig
from kosmesh.node.node import NodeError
from tests.cli.commands import kosmesh
from tests.waiting import wait_for


def without_peer_id(node: Node) -> str:
    return str(node.host.listen_addrs[0].without_peer_id())


async def test_connect_without_peer_id_pins_the_first_answer_and_refuses_another_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    b = Node(tmp_path / "b", listen=["/ip4/127.0.0.1/tcp/0"])
    await b.start()
    addr = without_peer_id(b)
    try:
        async with Node(tmp_path / "a", listen=["/ip4/127.0.0.1/tcp/0"]) as a:
            with caplog.at_level(logging.WARNING):
                conn = await a.connect(addr)
            assert conn.remote_peer_id == b.peer_id
            assert "no /p2p/" in caplog.text and str(b.peer_id) in caplog.text
            (row,) = [p for p in await a.peers() if p["peer_id"] == str(b.peer_id)]
            assert row["pinned_address"] == addr
            await conn.close()

            await b.stop()  # another machine takes over the address, with another key
            impostor = Node(tmp_path / "impostor", listen=[addr])
            async with impostor:
                with pytest.raises(NodeError, match=f"pinned to {b.peer_id}"):
                    await a.connect(addr)
                assert a.host.connection_to(impostor.peer_id) is None
            b = Node(tmp_path / "b", listen=[addr])
            await b.start()  # the real one is back: accepted again
            assert (await a.connect(addr)).remote_peer_id == b.peer_id
    finally:
        await b.stop()


async def test_pins_survive_a_restart(tmp_path: Path) -> None:
    async with Node(tmp_path / "b", listen=["/ip4/127.0.0.1/tcp/0"]) as b:
        addr = without_peer_id(b)
        async with Node(tmp_path / "a", listen=["/ip4/127.0.0.1/tcp/0"]) as a:
            await a.connect(addr)
        async with Node(tmp_path / "a", listen=["/ip4/127.0.0.1/tcp/0"]) as a:
            assert a.peer_book.pins == {addr: str(b.peer_id)}


async def test_a_seed_without_peer_id_is_pinned_and_an_impostor_there_is_never_accepted(tmp_path: Path) -> None:
    seed = Node(tmp_path / "seed", listen=["/ip4/127.0.0.1/tcp/0"])
    await seed.start()
    addr = without_peer_id(seed)
    cfg = NodeConfig(redial=RedialConfig(min_s=0.05, max_s=0.2))
    cfg.listen, cfg.seeds = ["/ip4/127.0.0.1/tcp/0"], [addr]
    try:
        async with Node(tmp_path / "b", config=cfg) as b:
            await wait_for(lambda: b.host.connection_to(seed.peer_id))
            assert b.peer_book.pins == {addr: str(seed.peer_id)}
            await seed.stop()
            async with Node(tmp_path / "impostor", listen=[addr]) as impostor:
                redial = b.driver.get(RedialService).redialer
                await wait_for(lambda: redial.targets[str(seed.peer_id)].failures >= 3, timeout=10)
                assert b.host.connection_to(impostor.peer_id) is None
            seed = Node(tmp_path / "seed", listen=[addr])
            await seed.start()
            await wait_for(lambda: b.host.connection_to(seed.peer_id), timeout=10)
    finally:
        await seed.stop()


@pytest.mark.multiprocess
def test_the_cli_warns_when_it_pins_and_peers_shows_the_pin(tmp_path: Path) -> None:
    a, b = NodeProcess(tmp_path / "a"), NodeProcess(tmp_path / "b")
    try:
        a.start()
        b.start()
        addr = b.addrs[0].split("/p2p/")[0]
        done = kosmesh(a.home, "connect", addr)
        assert done.returncode == 0, done.stderr
        assert "warning: no /p2p/" in done.stderr and addr in done.stderr
        (entry,) = [p for p in json.loads(kosmesh(a.home, "peers", "--json").stdout) if p["peer_id"] == b.peer_id]
        assert entry["pinned_address"] == addr
        table = kosmesh(a.home, "peers").stdout
        assert "pinned (first use)" in table and "another key answering there is refused" in table
    finally:
        a.stop()
        b.stop()
