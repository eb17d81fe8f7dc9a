"""Synthetic, deterministic traffic for the demo, tests and benchmarks (pure, no I/O)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .events import Click

__all__ = ["ClickTraffic", "zipf_cdf"]

_PAGES = ("home", "search", "item", "cart", "category")


def zipf_cdf(n: int, exponent: float) -> np.ndarray:
    """Cumulative distribution of ranks 1..n under Zipf's law with ``exponent``."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights)
    out: np.ndarray = cdf / cdf[-1]
    return out


@dataclass(frozen=True)
class ClickTraffic:
    """Clicks from Zipf-distributed users on Zipf-distributed items.

    Attributes:
        users: Number of distinct users (ids ``first_user .. first_user + users - 1``).
        items: Number of distinct items.
        seed: Random seed: the same seed gives the same events.
        first_user: Id of the most active user.
        exponent: Zipf exponent of users and items.
    """

    users: int
    items: int = 10_000
    seed: int = 0
    first_user: int = 1
    exponent: float = 1.1

    def clicks(self, start_ms: int, rate_per_s: float, count: int) -> Iterator[Click]:
        """``count`` clicks with event times spaced at ``rate_per_s`` from ``start_ms``."""
        rng = np.random.default_rng(self.seed)
        ids = np.random.default_rng(self.seed + 1)
        user_cdf = zipf_cdf(self.users, self.exponent)
        item_cdf = zipf_cdf(self.items, self.exponent)
        step_ms = 1000.0 / rate_per_s
        batch = 4096
        done = 0
        while done < count:
            n = min(batch, count - done)
            users = np.searchsorted(user_cdf, rng.random(n)) + self.first_user
            items = np.searchsorted(item_cdf, rng.random(n)) + 1
            pages = rng.integers(0, len(_PAGES), n)
            for i in range(n):
                yield Click(
                    event_id=str(uuid.UUID(bytes=ids.bytes(16), version=4)),
                    user_id=int(users[i]),
                    item_id=int(items[i]),
                    page=_PAGES[pages[i]],
                    event_time=start_ms + int((done + i) * step_ms),
                )
            done += n
