"""Waiting in a test's own thread for another thread to get somewhere: by condition, never by time.

The verdict is always *condition*; the clock only bounds how long a broken
inbox (a lost wake-up, a thread that never parks) can hang the suite.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

#: How long a test may wait for something that should happen at once, before it fails.
HANG_GUARD_SECONDS = 60.0

#: Between two looks: leaves the GIL and the CPU to the thread being waited for.
_PACE_SECONDS = 1e-4


def spin_until(
    condition: Callable[[], bool], what: str, guard_seconds: float = HANG_GUARD_SECONDS
) -> None:
    """Return once *condition* holds; fail naming *what* if it never does."""
    give_up = time.monotonic() + guard_seconds
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"never happened: {what}")
        time.sleep(_PACE_SECONDS)
