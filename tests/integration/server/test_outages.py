"""The fast server when Redis is slow, down or restarted, when too many lookups are in
flight, and when the registry changes under it (a private Redis and repository)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from featurestream_app.stack import free_port
from streams.definitions import compile_registry
from streams.online import READY, Marker, ViewState
from streams.online.redis import RedisOnlineStore
from streams.online.redis.reader import PipelinedRedisReader
from streams.repo import apply_repo, open_store
from tests.integration.server.client import (
    call,
    columns,
    expect_error,
    fast_server,
    lookup,
    metric,
)
from tests.integration.server.conftest import Served
from tests.support import Background, copy_feature_repo, redis_server, wait_until


@pytest.fixture()
def outage(served: Served, tmp_path: Path) -> Iterator[tuple[str, Path, int, Background]]:
    """A fast server on a private redis-server and repo copy (refreshes its registry often)."""
    redis_port = free_port()
    private = redis_server(redis_port, tmp_path / "redis.log")
    url = f"redis://127.0.0.1:{redis_port}/0"
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, url)
    server, base = fast_server(
        tmp_path,
        repo,
        url,
        settings={"max_in_flight": 2, "redis_timeout_ms": 50, "registry_refresh_s": 0.5},
    )
    try:
        server.wait_http(f"{base}/ready")
        yield base, repo, redis_port, private
    finally:
        server.stop()
        private.stop()


def test_redis_outages_fail_fast_and_recover(
    outage: tuple[str, Path, int, Background], tmp_path: Path
) -> None:
    base, repo, redis_port, private = outage
    url = f"redis://127.0.0.1:{redis_port}/0"
    body = {
        "features": ["user_click_stats:clicks_last_1h", "user_profile:country"],
        "entities": {"user_id": [1, 2]},
    }
    # every user's newest event time differs: a reply given to the wrong lookup shows
    newest = {u: 1_700_000_000_000 + u * 1000 for u in range(1, 20)}
    for user, ms in newest.items():
        redis.Redis.from_url(url).hset(
            f"fst:featurestream_demo:user_click_stats:{user}", "_last_ms", ms
        )
    # as an engine that built the view leaves it
    view = next(v for v in compile_registry(open_store(repo, url)) if v.name == "user_click_stats")
    RedisOnlineStore(url).set_marker(ViewState.of(view), Marker(READY))

    def stamps(users: list[int], *, patient: bool = False) -> list[str]:
        deadline = time.monotonic() + 10
        while True:  # patient: the first answer that is not a 503 must be right
            answer = lookup(base, {**body, "entities": {"user_id": users}})
            if not (patient and answer.status == 503 and time.monotonic() < deadline):
                break
        assert answer.status == 200, answer.body
        return list(columns(answer.body)["clicks_last_1h"]["event_timestamps"])

    def expected(users: list[int]) -> list[str]:
        return [
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(newest[u] // 1000)) + "Z" for u in users
        ]

    assert stamps([1, 2]) == expected([1, 2])

    # hung (SIGSTOP): the deadline answers
    os.kill(private.proc.pid, signal.SIGSTOP)
    try:
        answer = lookup(base, body)
        expect_error(answer, 503, "online_store_unavailable", "did not answer within 50 ms")
        # fast: well within seconds, where the unbounded read below hangs (30 s)
        assert answer.seconds < 5.0 and answer.headers["retry-after"] == "1"
        ready = call(base, "/ready")
        assert ready.status == 503 and ready.seconds < 5.0
        assert call(base, "/health").status == 200

        # negative control: without a short deadline the same read hangs
        async def unbounded() -> None:
            reader = PipelinedRedisReader(f"redis://127.0.0.1:{redis_port}/0", timeout_ms=30_000)
            try:
                await asyncio.wait_for(reader.execute([("PING",)]), 1.0)
            finally:
                await reader.close()

        with pytest.raises(TimeoutError):
            asyncio.run(unbounded())
        for user in (3, 4, 5):  # lookups that give up while their commands are queued
            assert lookup(base, {**body, "entities": {"user_id": [user]}}).status == 503
    finally:
        os.kill(private.proc.pid, signal.SIGCONT)
    # the replies of the lookups that gave up are skipped, not handed to the next ones
    assert stamps([6, 7, 1], patient=True) == expected([6, 7, 1])

    # down (stopped): connection refused answers at once
    private.stop()
    answer = lookup(base, body)
    expect_error(answer, 503, "online_store_unavailable")
    assert answer.seconds < 5.0
    restarted = redis_server(redis_port, tmp_path / "redis-2.log")
    try:
        wait_until(lambda: lookup(base, body).status == 200, 10, "recovery after restart")
        assert call(base, "/ready").status == 200
    finally:
        restarted.stop()


def test_more_lookups_in_flight_than_allowed_are_503(
    outage: tuple[str, Path, int, Background], tmp_path: Path
) -> None:
    _, repo, redis_port, private = outage
    # Lookups waiting on a hung Redis hold the two slots (a slow body holds none:
    # test_slow_clients.py); a server of its own waits for Redis long enough.
    server, base = fast_server(
        tmp_path,
        repo,
        f"redis://127.0.0.1:{redis_port}/0",
        settings={"max_in_flight": 2, "redis_timeout_ms": 30_000},
    )
    body = {"features": ["user_click_stats:clicks_last_1h"], "entities": {"user_id": [1]}}
    try:
        server.wait_http(f"{base}/ready")
        os.kill(private.proc.pid, signal.SIGSTOP)
        try:
            with ThreadPoolExecutor(2) as pool:
                waiting = [pool.submit(lookup, base, body, timeout=60) for _ in range(2)]
                wait_until(
                    lambda: (
                        metric(call(base, "/metrics").body, "featurestream_serving_in_flight")
                        == 2.0
                    ),
                    10,
                    "two lookups in flight",
                )
                answer = lookup(base, body)
                expect_error(answer, 503, "overloaded", "max_in_flight=2")
                assert answer.headers["retry-after"] == "1"
                os.kill(private.proc.pid, signal.SIGCONT)
                assert [w.result().status for w in waiting] == [200, 200]
        finally:
            os.kill(private.proc.pid, signal.SIGCONT)
        assert lookup(base, body).status == 200  # the slots are free again
    finally:
        server.stop()


def test_a_changed_registry_is_served_without_restart(
    outage: tuple[str, Path, int, Background],
) -> None:
    base, repo, redis_port, _ = outage
    body = {"feature_service": "clicks_only_v1", "entities": {"user_id": [1]}}
    assert lookup(base, body).status == 404
    before = call(base, "/ready").body["registry"]
    (repo / "extra_service.py").write_text(
        "from feast import FeatureService\n"
        "from user_click_stats import user_click_stats\n"
        "clicks_only_v1 = FeatureService(name='clicks_only_v1', "
        "features=[user_click_stats[['clicks_last_1h']]])\n"
    )
    url = f"redis://127.0.0.1:{redis_port}/0"
    apply_repo(repo, url)
    wait_until(lambda: lookup(base, body).status == 200, 15, "the new feature service")
    # no engine has built the view in this store: no value yet, not a 0
    assert columns(lookup(base, body).body)["clicks_last_1h"]["statuses"] == ["NOT_FOUND"]
    view = next(v for v in compile_registry(open_store(repo, url)) if v.name == "user_click_stats")
    RedisOnlineStore(url).set_marker(ViewState.of(view), Marker(READY))  # as its engine leaves it
    assert columns(lookup(base, body).body)["clicks_last_1h"]["values"] == [0]
    assert call(base, "/ready").body["registry"] != before
