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
