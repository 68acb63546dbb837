"""Waiting for a condition instead of sleeping a guessed time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(check: Callable[[], T], timeout: float = 5.0) -> T:
    """Wait (yielding to I/O) until ``check()`` returns something truthy; return it."""
    async with asyncio.timeout(timeout):
        while not (value := check()):
            await asyncio.sleep(0.005)
        return value
