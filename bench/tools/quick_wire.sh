#!/usr/bin/env bash
# Quick A/B check while optimising: server pinned to CPU 0, client to CPU 1; prints the headline figures.
cd "$(dirname "$0")/../systems"
(taskset -c 0 ../../.venv/bin/python kosmesh_wire.py server > "${TMPDIR:-/tmp}/quick-wire.out" &) ; sleep 1.5; read _ h p pid < "${TMPDIR:-/tmp}/quick-wire.out"
taskset -c ${CLIENT_CPU:-1} ../../.venv/bin/python kosmesh_wire.py client $h $p $pid --duration 2 --metrics rtt,streams | python3 -c "import json,sys; d=json.load(sys.stdin); print('wire rtt', round(d['rtt_per_s']), 'streams', round(d['streams_per_s']))"
pkill -INT -f "kosmesh_wire.py server"; sleep 0.5
