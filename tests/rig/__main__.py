"""``python -m tests.rig``: build the rig by hand, look for leftovers, sweep them.

    python -m tests.rig up --hosts 5 [--loss 10] [--delay-ms 50] [--fast-timers]   # nodes run until Ctrl-C
    python -m tests.rig check                                       # exit 1 if rig namespaces exist
    python -m tests.rig sweep                                       # remove what dead runs left
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from kosmesh.cli.process import NodeProcess, NodeProcessError
from tests.rig import faults
from tests.rig.netns import Rig, RigError, RigUnavailable, list_namespaces, sweep
from tests.rig.nodes import FAST_TIMERS, start_nodes

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Stop(Exception):
    """Raised by the signal handler: unwinds to the teardown from wherever the signal lands."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _up(args: argparse.Namespace) -> int:
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stop)
    rig = Rig(args.hosts)
    nodes: list[NodeProcess] = []
    delayers: list[faults.Delayer] = []
    with tempfile.TemporaryDirectory(prefix="kosmesh-rig-") as tmp:
        try:
            rig.up()
            print(f"rig {rig.suffix}: {args.hosts} hosts in {rig.setup_s:.3f} s")
            start_nodes(rig, Path(tmp), nodes, FAST_TIMERS if args.fast_timers else None)
            for host, node in zip(rig.hosts, nodes, strict=True):
                print(f"  h{host.index}  {host.namespace}  {node.addrs[0]}")
                print(f"      ip netns exec {host.namespace} kosmesh --home {node.home} status")
            if args.loss or args.delay_ms:
                faults.prepare(rig)
                for host in rig.hosts:
                    if args.loss:
                        faults.set_loss(rig, host, args.loss)
                    if args.delay_ms:
                        delayers.append(faults.Delayer(rig, host, args.delay_ms).start())
                print(f"faults: {args.loss}% loss, {args.delay_ms} ms delay on every host's way out")
            print("running; Ctrl-C tears everything down")
            while True:
                signal.pause()
        except _Stop:
            pass
        except (RigUnavailable, RigError, NodeProcessError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the teardown short
            for delayer in delayers:
                delayer.stop()
            for node in nodes:
                node.stop(timeout=5)
            rig.down()
            print(f"torn down in {rig.teardown_s:.3f} s; left behind: {rig.leftovers() or 'nothing'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rig", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="build N hosts, run a node in each, wait for Ctrl-C")
    up.add_argument("--hosts", type=int, default=5)
    up.add_argument("--loss", type=int, default=0, help="percent of packets dropped on each host's way out")
    up.add_argument("--delay-ms", type=float, default=0, help="delay added on each host's way out")
    up.add_argument("--fast-timers", action="store_true",
                    help="keepalive 0.5 s, idle timeout 2 s, redial within 1 s: a cut is noticed in seconds")
    sub.add_parser("check", help="list rig namespaces that exist now; exit 1 if any")
    sub.add_parser("sweep", help="delete namespaces of runs whose process is gone")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            return _up(args)
        if args.command == "check":
            found = list_namespaces()
            print("\n".join(found) if found else "no rig namespaces")
            return 1 if found else 0
        removed = sweep()
        print(f"removed {len(removed)} namespaces" + (": " + ", ".join(removed) if removed else ""))
        return 0
    except RigUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
