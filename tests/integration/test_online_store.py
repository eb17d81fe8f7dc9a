"""The online-store suite against a real Redis (a private server: its evictions are
made for real, by memory limits).

The same suite runs against the port's in-memory store in
``tests/unit/test_online_store.py``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from featurestream_app.stack import free_port
from streams.online import OnlineStore
from streams.online.redis import RedisOnlineStore
from tests.online_store_behaviour import OnlineStoreBehaviour
from tests.support import redis_server, wait_until


class TestRedisOnlineStore(OnlineStoreBehaviour):
    @pytest.fixture(scope="class")
    def redis_url(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
        port = free_port()
        server = redis_server(port, Path(tmp_path_factory.mktemp("redis")) / "redis.log")
        try:
            yield f"redis://127.0.0.1:{port}/9"
        finally:
            server.stop()

    @pytest.fixture
    def store(self, redis_url: str) -> Iterator[RedisOnlineStore]:
        admin = redis.Redis.from_url(redis_url)
        admin.flushall()
        admin.config_set("maxmemory", 0)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_resetstat()  # evictions of an earlier test are not this one's
        store = RedisOnlineStore(redis_url, timeout_s=0.2)
        yield store
        store.close()
        admin.close()

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

    def evict_tiles(self, store: OnlineStore) -> None:
        assert isinstance(store, RedisOnlineStore)
        admin = store._client
        # Tile keys expire, the engine's records do not: a volatile policy at a limit
        # below what Redis uses evicts the tiles only.
        admin.config_set("maxmemory-policy", "volatile-random")
        admin.config_set("maxmemory", 1)
        with contextlib.suppress(redis.OutOfMemoryError):
            admin.set("filler", "x")  # a write makes Redis evict (then refuses: full)
        admin.config_set("maxmemory", 0)
        admin.config_set("maxmemory-policy", "noeviction")

    def fail_for_a_moment(self, store: OnlineStore) -> None:
        assert isinstance(store, RedisOnlineStore)
        url = store._client.get_connection_kwargs()
        admin = redis.Redis(host=url["host"], port=url["port"])
        # Every command of every client waits 600 ms: the store's 200 ms timeout fails
        # the first write attempts, a later retry goes through.
        admin.execute_command("CLIENT", "PAUSE", "600", "ALL")
        threading.Timer(1.0, admin.close).start()
