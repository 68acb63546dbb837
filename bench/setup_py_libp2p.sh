#!/usr/bin/env bash
# Create /work/main/.venv-libp2p with py-libp2p 0.8.1 for the benchmark baseline.
# Idempotent: does nothing if `libp2p` 0.8.1 is already importable there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LIBP2P_VENV:-$ROOT/.venv-libp2p}"
PY="${PYTHON:-python3.11}"
WANT="0.8.1"

have_it() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$WANT" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
import libp2p  # noqa: F401
sys.exit(0 if version("libp2p") == sys.argv[1] else 1)
PY
}

if have_it; then
    echo "py-libp2p $WANT already installed in $VENV"
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "libp2p==$WANT"

if have_it; then
    echo "py-libp2p $WANT installed in $VENV"
else
    echo "py-libp2p $WANT install failed in $VENV" >&2
    exit 1
fi
