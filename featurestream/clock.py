"""The clock: one injected source of "now", in epoch milliseconds.

Nothing deep in the code calls ``time.time()``: readers, writers, restores and
backfills take a :data:`Clock` (default :func:`wall_clock_ms`), so tests drive
time with :func:`fixed_clock` and a replay can pin a read time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock", "fixed_clock", "wall_clock_ms"]

Clock = Callable[[], int]
"""Returns the current time in epoch milliseconds (UTC)."""


def wall_clock_ms() -> int:
    """Now, in epoch milliseconds."""
    return time.time_ns() // 1_000_000


def fixed_clock(ms: int) -> Clock:
    """A clock that always answers ``ms`` (tests, pinned read times)."""

    def clock() -> int:
        return ms

    return clock
