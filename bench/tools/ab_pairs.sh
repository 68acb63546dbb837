#!/usr/bin/env bash
# Alternating A/B of one system script: N pairs of (baseline tree, this tree), both on one core, medians.
#   bench/tools/ab_pairs.sh BASELINE_TREE SCRIPT METRICS [PAIRS]
#   e.g. bench/tools/ab_pairs.sh /tmp/kosmesh-base kosmesh_wire.py rtt,streams,bulk,dial 6
set -euo pipefail
BASE=$(realpath "$1"); SCRIPT=$2; METRICS=$3; PAIRS=${4:-6}
HERE=$(realpath "$(dirname "$0")/../..")
PY="$HERE/.venv/bin/python"
OUT=$(mktemp)
run() {  # tree label
  local tree=$1 label=$2 ready srv
  ready=$(mktemp)
  (cd "$tree/bench/systems" && PYTHONPATH="$tree/src" exec taskset -c 0 "$PY" "$SCRIPT" server > "$ready" 2>/dev/null) &
  srv=$!
  for _ in $(seq 1 100); do grep -q READY "$ready" && break; sleep 0.1; done
  read -r _ host port rest < "$ready"
  (cd "$tree/bench/systems" && PYTHONPATH="$tree/src" BENCH_SERVER_PID=$srv taskset -c 0 "$PY" "$SCRIPT" \
      client "$host" "$port" $rest --duration 2 --metrics "$METRICS" --json 2>/dev/null | tail -1 | sed "s/^/$label /") >> "$OUT"
  kill "$srv" 2>/dev/null; wait "$srv" 2>/dev/null || true; rm -f "$ready"
}
for _ in $(seq 1 "$PAIRS"); do run "$BASE" base; run "$HERE" after; done
"$PY" - "$OUT" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, data = line.split(" ", 1)
    rows.setdefault(label, []).append(json.loads(data))
keys = ["rtt_per_s", "streams_per_s", "bulk_mb_s", "dial_ms", "cpu_us.rtt", "cpu_us.streams", "cpu_us.bulk",
        "extra.tasks_per_s_16_inflight", "extra.tasks_16_cpu_us"]
def get(d, k):
    head, _, rest = k.partition(".")
    v = d.get(head)
    return v.get(rest) if rest and isinstance(v, dict) else (None if rest else v)
for k in keys:
    meds = {l: statistics.median(x for r in rs if (x := get(r, k)) is not None) for l, rs in rows.items()
            if any(get(r, k) is not None for r in rs)}
    if len(meds) == 2:
        print(f"{k:32} base {meds['base']:10.1f}  after {meds['after']:10.1f}  ({meds['after'] / meds['base'] - 1:+.1%})")
PY
rm -f "$OUT"
