"""Waiting for a condition instead of sleeping a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(check: Callable[[], T], timeout: float = 5.0) -> T:
    """Wait (yielding to I/O) until ``check()`` returns something truthy; return it."""
    async with asyncio.timeout(timeout):
        while not (value := check()):
            await asyncio.sleep(0.005)
        return value


def wait_until(check: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``check`` (blocking, for conditions seen through other processes) until it returns
    something truthy; fail saying ``what`` was awaited after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting until {what}")
        time.sleep(0.1)
    return value
