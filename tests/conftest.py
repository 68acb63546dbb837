"""Shared fixtures: temporary homes, hypothesis profiles, node processes that always get reaped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def node_processes() -> Iterator[list[object]]:
    """Collects NodeProcess objects a test starts; every one is stopped afterwards."""
    started: list[object] = []
    yield started
    for proc in started:
        proc.kill()  # type: ignore[attr-defined]
