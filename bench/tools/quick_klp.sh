#!/usr/bin/env bash
# Quick A/B check while optimising: server pinned to CPU 0, client to CPU 1; prints the headline figures.
cd "$(dirname "$0")/../systems"
(taskset -c 0 ../../.venv/bin/python kosmesh_klp.py server > "${TMPDIR:-/tmp}/quick-klp.out" &) ; sleep 2; read _ h p pid < "${TMPDIR:-/tmp}/quick-klp.out"
taskset -c 1 ../../.venv/bin/python kosmesh_klp.py client $h $p $pid --duration 3 --metrics rtt | python3 -c "import json,sys; d=json.load(sys.stdin); print('seq', round(d['rtt_per_s']), 'inflight16', round(d['extra']['tasks_per_s_16_inflight']), 'p50ms', round(d['extra']['tasks_16_p50_ms'],2))"
pkill -INT -f "kosmesh_klp.py server"; sleep 1
