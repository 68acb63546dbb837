"""Send signed tasks from one rig node, with retries, and print one JSON summary line.

Runs inside the sending node's namespace, because a node's control API listens on that
namespace's loopback. Each task goes through the node's control API (``POST /v1/task``),
exactly as ``kosmesh task send`` does; a task that times out or fails is sent again, up to
``--retries`` more times. Targets are used round robin; ``--concurrency`` senders share them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kosmesh.cli.client import ClientError, NodeClient


def send_with_retries(client: NodeClient, target: str, data: Any, timeout: float, retries: int) -> dict[str, Any]:
    """One task: the last reply (or error) and how many attempts it took."""
    last_error = ""
    for attempt in range(1, retries + 2):
        try:
            reply = client.call("POST", "/v1/task", {"address": target, "data": data, "timeout": timeout}, timeout + 10)
        except ClientError as exc:
            last_error = str(exc)
            continue
        if reply.get("status") == "processed" and reply.get("result") == data:
            return {"ok": True, "attempts": attempt, "rtt_ms": reply.get("rtt_ms"), "id": reply.get("message_id")}
        last_error = f"{reply.get('status')}: {reply.get('reason')}"
    return {"ok": False, "attempts": retries + 1, "error": last_error}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--target", action="append", required=True, help="klp address (repeatable)")
    parser.add_argument("--count", type=int, default=10, help="tasks per sender")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per attempt")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--ids", action="store_true", help="list the answered task ids per target")
    args = parser.parse_args(argv)
    client = NodeClient(args.home)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def sender(worker: int) -> None:
        for i in range(args.count):
            target = args.target[(worker + i) % len(args.target)]
            outcome = send_with_retries(client, target, f"task {worker}/{i}", args.timeout, args.retries)
            with lock:
                results.append(dict(outcome, target=target))

    started = time.monotonic()
    threads = [threading.Thread(target=sender, args=(w,)) for w in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rtts = [r["rtt_ms"] for r in results if r["ok"] and isinstance(r.get("rtt_ms"), (int, float))]
    summary = {
        "sent": len(results),
        "completed": sum(1 for r in results if r["ok"]),
        "retried": sum(1 for r in results if r["attempts"] > 1),
        "attempts": sum(r["attempts"] for r in results),
        "rtt_ms_min": min(rtts) if rtts else None,
        "rtt_ms_p50": statistics.median(rtts) if rtts else None,
        "rtt_ms_max": max(rtts) if rtts else None,
        "errors": sorted({r["error"] for r in results if not r["ok"]}),
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    if args.ids:
        summary["ids"] = {t: [r["id"] for r in results if r["ok"] and r["target"] == t] for t in args.target}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
