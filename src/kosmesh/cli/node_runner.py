"""``kosmesh node run``: a node process that runs until SIGINT/SIGTERM, then stops cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys

from kosmesh.api.control import ControlAPI
from kosmesh.node.node import Node


async def run_node(node: Node, *, announce: bool = True) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    api = ControlAPI(node, on_shutdown=stop.set)
    try:
        await api.start()
        if announce:
            for addr in node.host.listen_addrs:
                print(f"listening {addr}", flush=True)
            print(f"api http://127.0.0.1:{api.port}", flush=True)
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await api.stop()
        await node.stop()
        if announce:
            print("stopped", file=sys.stderr, flush=True)
