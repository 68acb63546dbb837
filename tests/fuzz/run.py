"""Run the fuzz targets under atheris (libFuzzer with Python coverage), each in its own process.

    python -m tests.fuzz.run [--seconds N] [--target NAME ...] [--jobs J] [--list] [--write-seeds]

Each target starts from its corpus folder ``tests/fuzz/corpus/<target>/`` (seeds and kept crashers),
copied to a temporary working corpus so the inputs libFuzzer generates do not flood the repository.
A crasher, timeout or out-of-memory input is written into that corpus folder as ``crash-<sha1>``
(``timeout-…``, ``oom-…``), where ``tests/fuzz/test_fuzz.py`` replays it on every test run: it is a
regression test from the moment it is found, and stays one once the bug is fixed.

One process per target, because libFuzzer stops at the first crash and owns the process (it exits
rather than returns), and so that each target is instrumented and limited on its own.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

CORPUS_ROOT = Path(__file__).resolve().parent / "corpus"
REPO_ROOT = Path(__file__).resolve().parents[2]
SEED_PREFIX = "seed-"
INSTALL_HINT = "pip install -e '.[fuzz]' (or `make fuzz`, which installs it into .venv)"

# libFuzzer's own words for how a run ended, most specific first.
_OUTCOMES = (
    ("Uncaught Python exception", "crash"),
    ("ERROR: libFuzzer: timeout", "timeout"),
    ("ERROR: libFuzzer: out-of-memory", "out of memory"),
    ("ERROR: libFuzzer: deadly signal", "crash"),
)
_EXECUTED = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_DONE = re.compile(r"Done (\d+) runs in")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass(frozen=True)
class Outcome:
    """How one target's run went, for the summary."""

    target: str
    seconds: float
    executions: int | None
    result: str  # "ok", "crash", "timeout", "out of memory", "hung" or "error"
    artifact: Path | None
    log_tail: str


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child is not None:
        return _child(args.child, args.libfuzzer_args)
    from tests.fuzz.targets import TARGETS  # the parent needs names and seeds only, not instrumentation

    if args.list:
        width = max(map(len, TARGETS))
        for name, target in TARGETS.items():
            print(f"{name:<{width}}  {target.about}")
        return 0
    if args.write_seeds:
        _write_seeds(args.corpus_root)
        return 0
    unknown = sorted(set(args.target or ()) - set(TARGETS))
    if unknown:
        print(f"unknown fuzz target(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    if args.seconds < 1:
        print("--seconds must be at least 1", file=sys.stderr)
        return 2
    try:
        importlib.import_module("atheris")
    except ImportError as exc:
        print(f"atheris is not installed ({exc}).\nInstall it with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    names = args.target or list(TARGETS)
    missing = [name for name in names if not (args.corpus_root / name).is_dir()]
    if missing:
        print(f"no corpus folder for {', '.join(missing)}: run python -m tests.fuzz.run --write-seeds", file=sys.stderr)
        return 2
    total = args.seconds * len(names) / args.jobs
    print(f"fuzzing {len(names)} target(s) for {args.seconds} s each, {args.jobs} at a time (~{total / 60:.1f} min)")
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = list(pool.map(lambda name: _fuzz_one(name, args), names))
    return _report(outcomes, time.monotonic() - started)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=30, help="fuzzing time per target (default 30)")
    parser.add_argument("--target", action="append", metavar="NAME", help="fuzz only this target (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at the same time (default 1)")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take (default 10)")
    parser.add_argument("--rss-limit-mb", type=int, default=1024, help="memory limit per target (default 1024)")
    parser.add_argument("--corpus-root", type=Path, default=CORPUS_ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--list", action="store_true", help="list the targets and what each covers")
    parser.add_argument("--write-seeds", action="store_true", help="(re)write every target's seed files")
    parser.add_argument("--child", metavar="NAME", help=argparse.SUPPRESS)
    parser.add_argument("libfuzzer_args", nargs="*", help=argparse.SUPPRESS)
    return parser


def _write_seeds(corpus_root: Path) -> None:
    """Write ``seed-<label>`` files from each target's seed function; stale seed files go, crashers stay."""
    from tests.fuzz.targets import TARGETS

    for name, target in TARGETS.items():
        folder = corpus_root / name
        folder.mkdir(parents=True, exist_ok=True)
        seeds = target.seeds()
        for stale in folder.glob(SEED_PREFIX + "*"):
            if stale.name[len(SEED_PREFIX) :] not in seeds:
                stale.unlink()
        for label, data in seeds.items():
            (folder / (SEED_PREFIX + label)).write_bytes(data)
        print(f"{name}: {len(seeds)} seed(s) in {folder}")


def _fuzz_one(name: str, args: argparse.Namespace) -> Outcome:
    corpus = args.corpus_root.resolve() / name
    with tempfile.TemporaryDirectory(prefix=f"kosmesh-fuzz-{name}-") as scratch:
        work = Path(scratch) / "corpus"
        shutil.copytree(corpus, work)
        log = Path(scratch) / "log"
        command = [
            sys.executable,
            "-m",
            "tests.fuzz.run",
            "--child",
            name,
            "--",
            f"-max_total_time={args.seconds}",
            f"-timeout={args.timeout}",
            f"-rss_limit_mb={args.rss_limit_mb}",
            f"-artifact_prefix={corpus}{os.sep}",
            "-print_final_stats=1",
            str(work),
        ]
        started = time.monotonic()
        with log.open("wb") as out:
            try:
                code = subprocess.run(
                    command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=args.seconds + 120
                ).returncode
            except subprocess.TimeoutExpired:
                code = None
        seconds = time.monotonic() - started
        text = log.read_text(errors="replace")
    result = "hung" if code is None else "ok" if code == 0 else "error"
    if code:
        result = next((kind for marker, kind in _OUTCOMES if marker in text), "error")
    executed = _EXECUTED.search(text) or _DONE.search(text)
    artifact = _ARTIFACT.search(text)
    tail = "\n".join(text.rstrip().splitlines()[-25:])
    return Outcome(
        name,
        seconds,
        int(executed.group(1)) if executed else None,
        result,
        Path(artifact.group(1)) if artifact else None,
        tail,
    )


def _report(outcomes: list[Outcome], seconds: float) -> int:
    width = max(len("target"), *(len(o.target) for o in outcomes))
    print(f"\n{'target':<{width}}  {'seconds':>7}  {'executions':>10}  {'exec/s':>7}  result")
    for o in outcomes:
        executions = f"{o.executions:,}" if o.executions is not None else "?"
        rate = f"{o.executions / o.seconds:,.0f}" if o.executions is not None and o.seconds else "?"
        print(f"{o.target:<{width}}  {o.seconds:7.1f}  {executions:>10}  {rate:>7}  {o.result}")
    print(f"total: {seconds / 60:.1f} min")
    bad = [o for o in outcomes if o.result != "ok"]
    for o in bad:
        print(f"\n--- {o.target}: {o.result} ---\n{o.log_tail}")
        if o.artifact is not None:
            print(
                f"\nThe input is kept as {_shown(o.artifact)}. Keep it: tests/fuzz/test_fuzz.py replays every file\n"
                f"in that folder, so it is already a regression test. Reproduce with:\n"
                f'  python -c "from tests.fuzz.targets import TARGETS; from pathlib import Path; '
                f"TARGETS['{o.target}'].run(Path('{_shown(o.artifact)}').read_bytes())\"\n"
                f"then fix the bug and commit the file with the fix."
            )
    if bad:
        print(f"\n{len(bad)} of {len(outcomes)} target(s) failed.")
        return 1
    print(f"\nall {len(outcomes)} target(s) ran clean.")
    return 0


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _child(name: str, libfuzzer_args: Sequence[str]) -> int:
    """Inside the target's own process: instrument kosmesh, then hand the target to libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["kosmesh"]):
        from tests.fuzz.targets import TARGETS

    run = TARGETS[name].run

    def test_one_input(data: bytes) -> None:
        run(data)

    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one_input)
    atheris.Fuzz()  # exits the process itself
    return 0  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
