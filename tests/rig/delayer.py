"""Delay every packet of an NFQUEUE by a fixed time: netem's delay, for a kernel without netem.

Run inside a rig host's namespace (``tests.rig.faults.Delayer`` does). Each queued packet is
kept (``retain``) and accepted once its time is due; packets leave in arrival order, so the
delay adds latency without reordering. Prints ``ready`` once bound; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import select
import signal
import sys
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, required=True)
    args = parser.parse_args(argv)
    from netfilterqueue import NetfilterQueue  # imported here: only rig hosts need it

    delay = args.delay_ms / 1000.0
    held: collections.deque[tuple[float, Any]] = collections.deque()

    def hold(packet: Any) -> None:
        packet.retain()
        held.append((time.monotonic() + delay, packet))

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    queue = NetfilterQueue()
    queue.bind(args.queue, hold, max_len=10000)
    fd = queue.get_fd()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        while not stopping:
            now = time.monotonic()
            while held and held[0][0] <= now:
                held.popleft()[1].accept()
            timeout = max(0.0, held[0][0] - now) if held else 0.2
            try:
                readable, _, _ = select.select([fd], [], [], timeout)
            except InterruptedError:
                continue
            if readable:
                queue.run(block=False)
    finally:
        for _, packet in held:
            packet.accept()  # nothing is lost when the delayer stops
        queue.unbind()
    return 0


if __name__ == "__main__":
    sys.exit(main())
