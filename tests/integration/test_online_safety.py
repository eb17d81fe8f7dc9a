"""The online store dropping or refusing tiles, against the real broker and a private
Redis per test: no read ever answers a lost tile as a present value.

* An evicting Redis (any ``maxmemory-policy`` but ``noeviction``) is refused by the
  engine unless allowed; when allowed, keys it evicts make the views unavailable
  (missing values, not 0) until the engine restored their tiles.
* A full ``noeviction`` Redis refuses writes: they are retried and reported, and
  once it has memory again every event is there.
* An emptied Redis is noticed by a running engine without a write, and its views
  are missing (never 0) until restored.

Each protection has its negative control.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import redis

from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from featurestream_app.engine import EngineRun, run_engine
from featurestream_app.stack import free_port
from producers import ClickTraffic, EventProducer
from streams.core import ViewSpec
from streams.core.reference import view_values
from streams.definitions import compile_registry
from streams.flow import FlowMetrics
from streams.offline.feast_store import log_root
from streams.online import (
    OnlineStore,
    ProgressKey,
    TilesRead,
    ViewReady,
    ViewRows,
    ViewState,
    connect_online_store,
)
from streams.online import base as online_base
from streams.online.redis import RedisOnlineStore
from streams.online.redis.reader import make_reader
from streams.repo import apply_repo, open_store
from tests.support import (
    FEATURESTREAM,
    copy_feature_repo,
    evict_tiles,
    redis_server,
    run_cli,
    wait_until,
)

VIEW = "user_click_stats"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = redis_server(port, tmp_path / "redis.log")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.stop()


def _env(settings: Settings, tmp_path: Path, repo: Path, url: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "FEATURESTREAM_BROKER_PORT": str(settings.broker_port),
        "FEATURESTREAM_REDIS_URL": url,
        "FEATURESTREAM_REPO_PATH": str(repo),
        "FEATURESTREAM_STATE_DIR": str(tmp_path / "state"),
        "FEATURESTREAM_METRICS_PORT": "0",
        "FEATURESTREAM_SNAPSHOT_INTERVAL_S": "0.5",
        **extra,
    }


def _clicks(first_user: int, users: int, count: int) -> list[Any]:
    """Clicks of the last 30 s (a seed of their own: event ids unlike other tests')."""
    now_ms = time.time_ns() // 1_000_000
    traffic = ClickTraffic(users=users, seed=uuid.uuid4().int % 2**32, first_user=first_user)
    return traffic.clicks(now_ms - 30_000, rate_per_s=count / 20, count=count)


def _produce(settings: Settings, clicks: list[Any]) -> dict[ProgressKey, int]:
    with EventProducer(settings.bootstrap_servers) as producer:
        for click in clicks:
            producer.send(click)
    return {ProgressKey(t, p): o + 1 for (t, p), o in producer.stats.last_offsets.items()}


def _view(repo: Path, url: str) -> ViewSpec:
    return next(v for v in compile_registry(open_store(repo, url)) if v.name == VIEW)


def _expected(clicks: list[Any], view: ViewSpec, users: list[int], read_ms: int) -> list[Any]:
    events = [asdict(c) for c in clicks]
    return [view_values([e for e in events if e["user_id"] == u], view, read_ms) for u in users]


def _served(store: OnlineStore, view: ViewSpec, users: list[int], read_ms: int) -> list[Any]:
    """What a reader of the Feast SDK gets (the plugin reads with ``only_ready``)."""
    (rows,) = store.read([(view, [str(u) for u in users])], read_ms, only_ready=True)
    return [values for values, _ in rows]


def _missing(view: ViewSpec) -> dict[str, Any]:
    return dict.fromkeys((a.name for a in view.aggregations), None)


def _readers_say_ready(url: str, view: ViewSpec, user: int) -> list[bool]:
    """The feature server's answer to "is the view served?" for a lookup of ``user`` from
    each of its readers."""

    async def ask() -> list[bool]:
        out = []
        for kind in ("pipelined", "redis-asyncio", "thread"):
            reader = make_reader(url, kind=kind, timeout_ms=2_000, max_in_flight=4)
            try:
                ready, _ = await reader.fetch([ViewReady(view), TilesRead(view, str(user))])
            finally:
                await reader.close()
            out.append(bool(ready))
        return out

    return asyncio.run(ask())


# ---------------------------------------------------------------- an evicting Redis
@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_an_evicting_redis_is_refused_unless_allowed(
    local_stack: Settings, tmp_path: Path, private_redis: str, policy: str
) -> None:
    admin = redis.Redis.from_url(private_redis)
    admin.config_set("maxmemory", 64 * 1024 * 1024)
    admin.config_set("maxmemory-policy", policy)
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, private_redis)
    env = _env(local_stack, tmp_path, repo, private_redis)
    refused = run_cli("run", VIEW, "--stop-at-end", env=env, ok=False, timeout=300)
    assert refused.returncode != 0
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"maxmemory-policy {policy}" in errors[0], refused.stderr
    assert "Traceback" not in refused.stderr
    # Negative control of the check: allowed, the same engine runs (and says why not).
    allowed = run_cli(
        "run",
        VIEW,
        "--stop-at-end",
        env={**env, "FEATURESTREAM_ALLOW_EVICTING_STORE": "true"},
        timeout=300,
    )
    assert f"maxmemory-policy {policy}" in allowed.stderr
    # noeviction: nothing to say.
    admin.config_set("maxmemory-policy", "noeviction")
    quiet = run_cli("run", VIEW, "--stop-at-end", env=env, timeout=300)
    assert "maxmemory-policy" not in quiet.stderr


def test_the_feature_server_refuses_an_evicting_redis_unless_allowed(
    tmp_path: Path, private_redis: str
) -> None:
    from tests.integration.server.client import call, fast_server, metric

    admin = redis.Redis.from_url(private_redis)
    admin.config_set("maxmemory", 64 * 1024 * 1024)
    admin.config_set("maxmemory-policy", "allkeys-lru")
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, private_redis)
    refused, _ = fast_server(tmp_path, repo, private_redis)
    try:
        wait_until(lambda: refused.proc.poll() is not None, 180, "the server to refuse")
        assert "maxmemory-policy allkeys-lru" in refused.tail()
    finally:
        refused.stop()
    # Negative control of the check: allowed, the same server serves (and says why not).
    allowed, base = fast_server(
        tmp_path,
        repo,
        private_redis,
        settings={"redis_timeout_ms": 5_000, "allow_evicting_store": True},
    )
    try:
        allowed.wait_http(f"{base}/ready", timeout_s=180)
        assert "maxmemory-policy allkeys-lru" in allowed.tail()
        text = call(base, "/metrics").body
        assert metric(text, "featurestream_online_store_evicting", policy="allkeys-lru") == 1.0
        assert metric(text, "featurestream_online_store_max_bytes") == 64 * 1024 * 1024
    finally:
        allowed.stop()


@pytest.mark.parametrize("detect", [True, False])
def test_evicted_tiles_read_as_missing_until_the_engine_restored_them(
    local_stack: Settings,
    tmp_path: Path,
    private_redis: str,
    monkeypatch: pytest.MonkeyPatch,
    detect: bool,
) -> None:
    if not detect:  # negative control: the store's eviction count is not looked at
        monkeypatch.setattr(online_base, "evicted_since", lambda mark, stats: None)
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, private_redis)
    view = _view(repo, private_redis)
    first_user = 91_000_000 + (uuid.uuid4().int % 1000) * 100
    clicks = _clicks(first_user, users=20, count=400)
    _produce(local_stack, clicks)
    env = _env(local_stack, tmp_path, repo, private_redis)
    run_cli("run", VIEW, "--stop-at-end", env=env, timeout=300)

    users = sorted({c.user_id for c in clicks})
    read_ms = max(c.event_time for c in clicks) + 1_000
    expected = _expected(clicks, view, users, read_ms)
    store = RedisOnlineStore(private_redis)
    assert _served(store, view, users, read_ms) == expected
    assert _readers_say_ready(private_redis, view, users[0]) == [True, True, True]

    assert evict_tiles(private_redis) >= len(users)
    assert store.markers([ViewState.of(view)])[0] is not None  # only the tiles went
    served = _served(store, view, users, read_ms)
    if not detect:
        # What featurestream answered before it compared eviction counts: zeros and
        # nulls as if these users had never clicked.
        assert all(s != e for s, e in zip(served, expected, strict=True))
        assert all(s["clicks_last_1h"] in (0, None) for s in served)
        assert _readers_say_ready(private_redis, view, users[0]) == [True, True, True]
        return
    assert served == [_missing(view)] * len(users)
    assert _readers_say_ready(private_redis, view, users[0]) == [False, False, False]

    # The next engine run finds the view evicted and restores it from the offline log.
    rerun = run_cli("run", VIEW, "--stop-at-end", env=env, timeout=300)
    assert "evicted" in rerun.stderr
    assert _served(store, view, users, read_ms) == expected
    assert _readers_say_ready(private_redis, view, users[0]) == [True, True, True]


# ---------------------------------------------------------------- a full Redis
@pytest.mark.parametrize("retried", [True, False])
def test_a_full_redis_refuses_writes_that_are_retried_not_skipped(
    local_stack: Settings,
    tmp_path: Path,
    private_redis: str,
    monkeypatch: pytest.MonkeyPatch,
    retried: bool,
) -> None:
    from featurestream.errors import OnlineStoreFull
    from streams.online import WriteResult

    if not retried:  # negative control: a refused write is skipped (what a silent store does)
        write = RedisOnlineStore.write

        def skipping(self: RedisOnlineStore, *args: Any, **kwargs: Any) -> WriteResult:
            try:
                return write(self, *args, **kwargs)
            except OnlineStoreFull:
                return WriteResult(0)

        monkeypatch.setattr(RedisOnlineStore, "write", skipping)
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, private_redis)
    view = _view(repo, private_redis)
    first_user = 92_000_000 + (uuid.uuid4().int % 1000) * 1000
    clicks = _clicks(first_user, users=3000, count=6000)
    _produce(local_stack, clicks)
    admin = redis.Redis.from_url(private_redis)
    # Room for the engine's records, not for its tiles (3,000 users' hashes).
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + 200_000)

    settings = Settings(
        broker_port=local_stack.broker_port,
        redis_url=private_redis,
        repo_path=repo,
        state_dir=tmp_path / "state",
        metrics_port=0,
    )
    store = open_store(repo, private_redis)
    metrics = FlowMetrics()
    run = EngineRun(
        settings,
        (view,),
        log_root(store.config),
        stop_at_end=True,
        codec=AvroCodec(load_contracts()),
        metrics=metrics,
        recovery=False,
    )
    outcome: list[Any] = []

    def engine() -> None:
        try:
            outcome.append(run_engine(run, processes=1, names=(VIEW,)))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=engine, daemon=True)
    thread.start()

    def refusals() -> int:  # Redis's own count of the writes it refused
        return int(admin.info("errorstats").get("errorstat_OOM", {}).get("count", 0))

    wait_until(lambda: refusals() > 0 or not thread.is_alive(), 120, "a refusal")
    assert refusals() > 0, outcome
    admin.config_set("maxmemory", 0)  # the operator gives it memory
    thread.join(timeout=300)
    assert outcome == [0]
    users = sorted({c.user_id for c in clicks})
    read_ms = max(c.event_time for c in clicks) + 1_000
    served = _served(RedisOnlineStore(private_redis), view, users, read_ms)
    wrong = [
        u
        for u, s, e in zip(users, served, _expected(clicks, view, users, read_ms), strict=True)
        if s != e
    ]
    if retried:
        assert wrong == []
        assert metrics.writes_refused_full > 0  # reported
        assert metrics.write_retries >= metrics.writes_refused_full
    else:
        assert wrong, "the negative control lost nothing: the store was never full"


# ---------------------------------------------------------------- an emptied Redis
def _start_engine(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*FEATURESTREAM, "run", VIEW],
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def _caught_up(store: OnlineStore, view: ViewSpec, ends: dict[ProgressKey, int]) -> bool:
    try:
        progress = store.progress(ViewState.of(view))
    except Exception:  # Redis restarting
        return False
    return all(progress.get(k, 0) >= end for k, end in ends.items())


@pytest.mark.parametrize("variant", ["protected", "evicted", "no-watch", "ignore-markers"])
def test_an_emptied_redis_is_noticed_without_a_write_and_never_read_as_zero(
    local_stack: Settings,
    tmp_path: Path,
    private_redis: str,
    monkeypatch: pytest.MonkeyPatch,
    variant: str,
) -> None:
    if variant == "ignore-markers":  # negative control: readers serve whatever is there

        def everything(self: RedisOnlineStore, requests: Any) -> list[ViewRows]:
            return [ViewRows(True, rows) for rows in self.read_tiles(requests)]

        monkeypatch.setattr(RedisOnlineStore, "read_views", everything)
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, private_redis)
    view = _view(repo, private_redis)
    first_user = 93_000_000 + (uuid.uuid4().int % 1000) * 100
    clicks = _clicks(first_user, users=10, count=300)
    ends = _produce(local_stack, clicks)
    # no-watch (negative control): the engine looks at its markers only when it writes
    interval = "3600" if variant == "no-watch" else "0.5"
    # A machine that asks for Rust backtraces: the flow's stop is reported in one line,
    # unless FEATURESTREAM_RUST_BACKTRACE asks for it too (as in "evicted": the control).
    backtrace = "1" if variant == "evicted" else "0"
    env = _env(
        local_stack,
        tmp_path,
        repo,
        private_redis,
        FEATURESTREAM_ONLINE_CHECK_INTERVAL_S=interval,
        RUST_BACKTRACE="1",
        FEATURESTREAM_RUST_BACKTRACE=backtrace,
    )
    log = tmp_path / "engine.log"
    engine = _start_engine(env, log)
    store = connect_online_store(private_redis, timeout_s=1.0)
    users = sorted({c.user_id for c in clicks})
    read_ms = max(c.event_time for c in clicks) + 1_000
    expected = _expected(clicks, view, users, read_ms)
    try:
        wait_until(lambda: _caught_up(store, view, ends), 120, "the engine")
        time.sleep(1.5)  # the offline log is flushed with the snapshots
        assert _served(store, view, users, read_ms) == expected
        if variant == "evicted":  # Redis evicts the tiles to free memory, running on
            assert evict_tiles(private_redis) >= len(users)
        else:  # Redis lost everything
            redis.Redis.from_url(private_redis).flushall()
        # No event arrives. Every read until the values are back is missing or exact.
        reads: list[list[Any]] = []
        deadline = time.monotonic() + (10 if variant == "no-watch" else 120)
        while time.monotonic() < deadline:
            served = _served(store, view, users, read_ms)
            reads.append(served)
            if served == expected:
                break
            time.sleep(0.05)
        assert engine.poll() is None, log.read_text()[-3000:]
        wrong = [r for r in reads if r not in (expected, [_missing(view)] * len(users))]
        if variant == "ignore-markers":
            assert wrong, "reads of the emptied store were not wrong without the markers"
            return
        assert wrong == []
        if variant == "no-watch":
            assert reads[-1] != expected  # nothing restored without a write
        else:
            assert reads[-1] == expected  # restored with no event arriving
            cause = "evicted" if variant == "evicted" else "restarted empty"
            text = log.read_text()
            assert cause in text
            assert ("stack backtrace:" in text) == (backtrace == "1"), text[-3000:]
    finally:
        os.killpg(engine.pid, signal.SIGTERM)
        engine.wait(timeout=30)
