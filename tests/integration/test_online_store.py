"""The online-store suite against a real Redis (the local stack's, one database per test).

The same suite runs against the port's in-memory store in
``tests/unit/test_online_store.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from featurestream.settings import Settings
from featurestream_app.stack import free_port
from streams.online import OnlineStore
from streams.online.redis import RedisOnlineStore
from tests.online_store_behaviour import OnlineStoreBehaviour
from tests.support import wait_until


class TestRedisOnlineStore(OnlineStoreBehaviour):
    @pytest.fixture
    def store(self, local_stack: Settings) -> Iterator[RedisOnlineStore]:
        url = local_stack.online_redis_url.rsplit("/", 1)[0] + "/9"
        redis.Redis.from_url(url).flushdb()
        store = RedisOnlineStore(url, timeout_s=0.2)
        yield store
        store.close()

    @pytest.fixture
    def unavailable(self) -> RedisOnlineStore:
        return RedisOnlineStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)

    def pass_time(self, store: OnlineStore, ms: int) -> None:
        # Redis expires keys by its own clock: wait until the time has passed there.
        deadline = time.monotonic() + ms / 1000
        wait_until(lambda: time.monotonic() >= deadline, 10 + ms / 1000, f"{ms} ms to pass")

    def lose_everything(self, store: OnlineStore) -> None:
        assert isinstance(store, RedisOnlineStore)
        store._client.flushdb()

    def fail_for_a_moment(self, store: OnlineStore) -> None:
        assert isinstance(store, RedisOnlineStore)
        url = store._client.get_connection_kwargs()
        admin = redis.Redis(host=url["host"], port=url["port"])
        # Every command of every client waits 600 ms: the store's 200 ms timeout fails
        # the first write attempts, a later retry goes through.
        admin.execute_command("CLIENT", "PAUSE", "600", "ALL")
        threading.Timer(1.0, admin.close).start()
