# kOS Mesh. Quick start: `make demo`, `make test`. Everything installs itself into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
JS_STAMP := interop/js/node_modules/.installed
RIG_STAMP := $(VENV)/.rig-deps
RIG_APT := iproute2 nftables iptables libnetfilter-queue-dev

.PHONY: install demo test test-fast lint bench fuzz soak interop-deps rig-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "kosmesh needs Python 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

# The js-libp2p peer used by the interop tests (Node.js + npm; installed from Debian if missing).
interop-deps: $(JS_STAMP)

$(JS_STAMP): interop/js/package.json interop/js/package-lock.json
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	npm ci --prefix interop/js --no-audit --no-fund --loglevel=error
	touch $@

# The multi-host rig (tests/rig): namespaces, nftables/iptables faults, the NFQUEUE delayer.
# Best effort: without root or apt the rig's tests skip and say why.
rig-deps: $(RIG_STAMP)

$(RIG_STAMP): $(STAMP)
	-@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  dpkg -s $(RIG_APT) >/dev/null 2>&1 || apt-get install -y -qq $(RIG_APT) >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq $(RIG_APT)); \
	fi
	-$(BIN)/pip install -q --disable-pip-version-check netfilterqueue==1.1.0 && touch $@

demo: install
	$(BIN)/kosmesh demo

test: install interop-deps rig-deps
	$(BIN)/pytest -q -p no:cacheprovider

test-fast: install
	$(BIN)/pytest -q -x -m "not interop and not multiprocess"

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: install
	bash bench/setup_py_libp2p.sh
	$(BIN)/python bench/harness.py

# Every fuzz target (tests/fuzz) under atheris for FUZZ_SECONDS each; make test runs them briefly.
# A crasher lands in tests/fuzz/corpus/<target>/ and is replayed by make test from then on.
FUZZ_SECONDS ?= 30

fuzz: install
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,fuzz]'
	$(BIN)/python -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

# Sustained load across the rig with faults (root). E.g. make soak SOAK_ARGS="--minutes 10 --rate 20 --loss 10"
SOAK_ARGS ?= --minutes 2

soak: install rig-deps
	$(BIN)/python -m tests.rig.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .venv-libp2p interop/js/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
