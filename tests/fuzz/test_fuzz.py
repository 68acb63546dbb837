"""The fuzz targets in ``make test``: briefly under Hypothesis, plus every kept input replayed.

Each target gets random bytes and mutations of its own valid seeds (bytes flipped, set to boundary
values, inserted, deleted, duplicated, truncated), so the quick run also gets past the first checks.
Every file in ``tests/fuzz/corpus/<target>/`` (seeds, and crashers ``make fuzz`` found) is replayed,
so a crasher stays a regression test. The bounds keep all of this under ~25 s on a 2-core machine;
``make fuzz`` is where the long runs happen.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kosmesh.identity import CorruptKeyFileError, load_key
from kosmesh.klp import MAX_MESSAGE_BYTES, EnvelopeError, MessageType, build_message, encode_message
from tests.fuzz.inputs import ALICE, ALICE_AGENT, BOB_NODE, NOW_MS
from tests.fuzz.run import CORPUS_ROOT, INSTALL_HINT, REPO_ROOT, SEED_PREFIX
from tests.fuzz.targets import TARGETS

NAMES = sorted(TARGETS)
# Per target and strategy. Measured on the shared 2-core machine: the whole module (48 Hypothesis
# tests, the corpus replay, the runner checks) in ~16 s. KOSMESH_FUZZ_EXAMPLES=N runs longer without atheris.
EXAMPLES = int(os.environ.get("KOSMESH_FUZZ_EXAMPLES", "250"))
BRIEF = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every stage issue 3 names must have a target; new protocols add theirs (and seeds) as they land.
REQUIRED = {
    "varint",
    "protobuf",
    "multiaddr_bytes",
    "multiaddr_text",
    "multistream_listener",
    "multistream_dialer",
    "noise_responder_msg1",
    "noise_initiator_msg2",
    "noise_responder_msg3",
    "noise_handshake_payload",
    "noise_transport",
    "yamux_session",
    "identify",
    "ping",
    "klp_framing",
    "length_prefixed_frames",
    "klp_envelope",
    "klp_pipeline",
    "klp_payload_inflation",
    "klp_address",
    "base58",
    "peer_id",
    "did_key",
}


@functools.cache
def seeds_of(name: str) -> tuple[bytes, ...]:
    return tuple(TARGETS[name].seeds().values())


_INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0xFF)


def _mutate(seed: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Apply ``(kind, position, bytes)`` edits the way a byte-level fuzzer would."""
    data = bytearray(seed)
    for kind, position, blob in edits:
        at = position % (len(data) + 1)
        if kind == 0 and data:  # flip bits of one byte
            data[at % len(data)] ^= blob[0] or 1
        elif kind == 1 and data:  # a boundary value
            data[at % len(data)] = _INTERESTING[blob[0] % len(_INTERESTING)]
        elif kind == 2:  # insert
            data[at:at] = blob
        elif kind == 3:  # delete a few bytes
            del data[at : at + 1 + blob[0] % 8]
        elif kind == 4:  # duplicate a chunk in place (repeated fields, frames, messages)
            data[at:at] = data[at : at + 1 + blob[0] % 64]
        else:  # truncate
            del data[at:]
    return bytes(data)


_edits = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)), min_size=1, max_size=4
)


@pytest.mark.parametrize("name", NAMES)
@BRIEF
@given(data=st.binary(max_size=600))
def test_random_bytes(name: str, data: bytes) -> None:
    assert TARGETS[name].run(data) in (True, False)


@pytest.mark.parametrize("name", NAMES)
@BRIEF
@given(choice=st.data(), edits=_edits)
def test_mutated_seeds(name: str, choice: st.DataObject, edits: list[tuple[int, int, bytes]]) -> None:
    seed = choice.draw(st.sampled_from(seeds_of(name)), label="seed")
    assert TARGETS[name].run(_mutate(seed, edits)) in (True, False)


def _kept_inputs() -> list[Path]:
    return sorted(path for name in NAMES if (CORPUS_ROOT / name).is_dir() for path in (CORPUS_ROOT / name).iterdir())


@pytest.mark.parametrize("path", _kept_inputs(), ids=lambda path: f"{path.parent.name}/{path.name}")
def test_kept_input_replays(path: Path) -> None:
    """Seeds and every crasher ever found: each must run through its target without a finding."""
    result = TARGETS[path.parent.name].run(path.read_bytes())
    if path.name.startswith(SEED_PREFIX):
        assert result, f"{path} is no longer accepted as a valid input"


@pytest.mark.parametrize("name", NAMES)
def test_target_has_its_seeds_on_disk(name: str) -> None:
    """A target cannot be added (or its encodings changed) without valid seeds in its corpus folder."""
    folder = CORPUS_ROOT / name
    hint = "run: python -m tests.fuzz.run --write-seeds"
    assert folder.is_dir(), f"no corpus folder {folder}; {hint}"
    seeds = TARGETS[name].seeds()
    assert seeds, f"{name} has no seed inputs"
    on_disk = {path.name[len(SEED_PREFIX) :]: path.read_bytes() for path in folder.glob(SEED_PREFIX + "*")}
    assert on_disk == seeds, f"the seed files of {name} differ from what its seed function makes; {hint}"
    rejected = [label for label, data in seeds.items() if not TARGETS[name].run(data)]
    assert not rejected, f"seeds of {name} that are not valid inputs: {rejected}"


def test_every_stage_has_a_target_and_every_corpus_folder_a_target() -> None:
    assert TARGETS.keys() >= REQUIRED, f"missing targets: {sorted(REQUIRED - TARGETS.keys())}"
    orphans = sorted(path.name for path in CORPUS_ROOT.iterdir() if path.name not in TARGETS)
    assert not orphans, f"corpus folders without a target: {orphans}"
    assert all(target.about for target in TARGETS.values()), "every target says what it covers"


def _run_module(*args: str, extra_path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(extra_path), env.get("PYTHONPATH"))))
    return subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )


def test_runner_without_atheris_says_how_to_install_it(tmp_path: Path) -> None:
    (tmp_path / "atheris.py").write_text("raise ImportError('simulated: no atheris here')\n")
    done = _run_module("--seconds", "1", "--target", "varint", extra_path=tmp_path)
    assert done.returncode == 2
    assert INSTALL_HINT in done.stderr and "Traceback" not in done.stderr + done.stdout


def test_runner_lists_targets_and_refuses_unknown_ones() -> None:
    listed = _run_module("--list")
    assert listed.returncode == 0
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(TARGETS)
    unknown = _run_module("--target", "no_such_target")
    assert unknown.returncode == 2 and "no_such_target" in unknown.stderr


# -- what the fuzzers found, stated as contracts (their inputs are replayed from the corpus too) ------


def test_key_file_with_a_huge_integer_is_corrupt_not_a_crash(tmp_path: Path) -> None:
    """corpus/keystore/crash-1c32…: JSON integers past 4300 digits raise a plain ValueError in Python 3.11."""
    path = tmp_path / "node.key"
    path.write_bytes(b'{"format": "kosmesh-node-key", "version": ' + b"1" * 5000 + b"}")
    path.chmod(0o600)
    with pytest.raises(CorruptKeyFileError):
        load_key(path)


def test_a_response_too_large_for_any_decoder_is_refused_when_built() -> None:
    """corpus/klp_payload_inflation/crash-f971…: a gzip payload inflating to 2 MB, echoed by make_response.

    (Found by klp_pipeline as a 16 MB echo; kept in the format of the target that owns payload growth.)
    """

    def build(size: int) -> bytes:
        message = build_message(
            ALICE,
            type=MessageType.TASK_RESPONSE,
            source=ALICE_AGENT,
            target=BOB_NODE,
            data=b"x" * size,
            timestamp_ms=NOW_MS,
            nonce=bytes(8),
        )
        return encode_message(message)

    assert len(build(MAX_MESSAGE_BYTES - 1024)) <= MAX_MESSAGE_BYTES
    with pytest.raises(EnvelopeError) as refused:
        build(MAX_MESSAGE_BYTES)
    assert refused.value.reason == "message_too_large"
