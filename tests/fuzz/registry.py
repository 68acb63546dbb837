"""The registry of fuzz targets: ``@fuzz_target(seeds)`` adds a function to :data:`TARGETS`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

FuzzFunction = Callable[[bytes], bool]
SeedFunction = Callable[[], dict[str, bytes]]


@dataclass(frozen=True)
class FuzzTarget:
    """One registered target: the function, its seed inputs, and a line saying what it covers."""

    name: str
    run: FuzzFunction
    seeds: SeedFunction
    about: str


TARGETS: dict[str, FuzzTarget] = {}


def fuzz_target(seeds: SeedFunction) -> Callable[[FuzzFunction], FuzzFunction]:
    """Register the decorated function under its own name, with the function that makes its seeds."""

    def register(run: FuzzFunction) -> FuzzFunction:
        if run.__name__ in TARGETS:
            raise RuntimeError(f"fuzz target {run.__name__} registered twice")
        about = (run.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        TARGETS[run.__name__] = FuzzTarget(run.__name__, run, seeds, " ".join(about.split()))
        return run

    return register
