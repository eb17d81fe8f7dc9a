"""The online-store suite against the port's in-memory store (the unit tests' backend).

The same suite runs against Redis in ``tests/integration/test_online_store.py``.
"""

from __future__ import annotations

import pytest

from streams.online import OnlineStore
from streams.online.memory import MemoryOnlineStore
from tests.online_store_behaviour import T0, OnlineStoreBehaviour


class _Clock:
    def __init__(self) -> None:
        self.now_ms = T0

    def __call__(self) -> int:
        return self.now_ms


class TestMemoryOnlineStore(OnlineStoreBehaviour):
    @pytest.fixture
    def store(self) -> MemoryOnlineStore:
        return MemoryOnlineStore(clock=_Clock())

    @pytest.fixture
    def unavailable(self) -> MemoryOnlineStore:
        store = MemoryOnlineStore(clock=_Clock())
        store.fail_next(10**6)
        return store

    def pass_time(self, store: OnlineStore, ms: int) -> None:
        assert isinstance(store, MemoryOnlineStore)
        clock = store._clock
        assert isinstance(clock, _Clock)
        clock.now_ms += ms

    def fail_for_a_moment(self, store: OnlineStore) -> None:
        assert isinstance(store, MemoryOnlineStore)
        store.fail_next(2)

    def lose_everything(self, store: OnlineStore) -> None:
        assert isinstance(store, MemoryOnlineStore)
        store.lose_everything()

    def evict_tiles(self, store: OnlineStore) -> None:
        assert isinstance(store, MemoryOnlineStore)
        store.evict_tiles()


def test_readers_ask_the_eviction_count_again_once_it_is_older_than_its_bound() -> None:
    import asyncio

    from streams.online import StoreStats
    from streams.online.redis.reader import EVICTION_STATS_MAX_AGE_S, _RecentStats

    now = [100.0]
    asked: list[float] = []

    async def fetch() -> StoreStats:
        asked.append(now[0])
        return StoreStats(keys=len(asked), used_bytes=None, evicted_keys=len(asked))

    recent = _RecentStats(fetch, clock=lambda: now[0])

    async def reads() -> list[int | None]:
        out = []
        for step in (0.0, EVICTION_STATS_MAX_AGE_S / 2, EVICTION_STATS_MAX_AGE_S / 2 + 1e-6, 0.0):
            now[0] += step
            out.append((await recent()).evicted_keys)
        return out

    # asked at 100, reused within the bound, asked again past it, then reused
    assert asyncio.run(reads()) == [1, 1, 2, 2]
    assert asked == pytest.approx([100.0, 100.0 + EVICTION_STATS_MAX_AGE_S + 1e-6])
