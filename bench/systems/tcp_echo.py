"""Raw asyncio TCP echo with no security at all: the floor under every secure stack here.

The same ``asyncio.Protocol`` echo as ``tls_echo.py`` without TLS. No secure channel can
beat it on this loop and machine, so a target above it (a round-trip rate no plaintext
echo reaches) is out of reach for any asyncio stack that encrypts. Only ``rtt`` is
measured: bulk, streams and dials of a plaintext socket say nothing about a secure stack.

READY line: ``READY <host> <port>``.
"""

from __future__ import annotations

import asyncio

from _common import (
    ClientArgs,
    Result,
    announce_ready,
    describe,
    emit,
    install_stop_handlers,
    parse_cli,
)
from tls_echo import HOST, _measure_rtt, _ServerProtocol


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    install_stop_handlers(lambda: loop.call_soon_threadsafe(stop.set))
    server = await loop.create_server(_ServerProtocol, HOST, 0, backlog=1024)
    announce_ready(HOST, server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()


async def _client(args: ClientArgs) -> Result:
    result = Result(system="tcp")
    result.notes.append("plaintext TCP, asyncio.Protocol: a floor for comparison, not a candidate")
    if "rtt" in args.metrics:
        try:
            await asyncio.wait_for(_measure_rtt(args, None, result), timeout=max(30.0, args.duration * 10))
        except Exception as exc:
            result.errors["rtt"] = describe(exc)
    return result


def main() -> None:
    mode, args = parse_cli()
    if mode == "server":
        asyncio.run(_serve())
        return
    assert args is not None
    emit(asyncio.run(_client(args)))


if __name__ == "__main__":
    main()
