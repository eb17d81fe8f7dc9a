"""Redis restarting empty mid-stream: the engine restores the online tiles from the
offline log and resumes, so every read is exact again; with the restore switched off
(negative control) the values of entities without new events are lost."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from featurestream.settings import Settings
from featurestream_app.stack import cli_env, free_port
from producers import ClickTraffic, EventProducer
from streams.core.reference import view_values
from streams.definitions import compile_registry
from streams.online import OnlineStore, ProgressKey, ViewState, connect_online_store
from streams.repo import apply_repo, open_store
from tests.support import FEATURESTREAM, copy_feature_repo, redis_server, wait_until


def _produce(settings: Settings, clicks: list[Any]) -> dict[ProgressKey, int]:
    with EventProducer(settings.bootstrap_servers) as producer:
        for click in clicks:
            producer.send(click)
    return {ProgressKey(t, p): o + 1 for (t, p), o in producer.stats.last_offsets.items()}


def _caught_up(store: OnlineStore, state: ViewState, ends: dict[ProgressKey, int]) -> bool:
    try:
        progress = store.progress(state)
    except Exception:  # Redis restarting
        return False
    return all(progress.get(k, 0) >= end for k, end in ends.items())


@pytest.mark.parametrize("restore", [True, False])
def test_tiles_lost_with_redis_are_restored(
    local_stack: Settings, tmp_path: Path, restore: bool
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis = redis_server(port, tmp_path / "redis.log", "--dir", str(tmp_path))
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, url)
    view = next(v for v in compile_registry(open_store(repo, url)) if v.name == "user_click_stats")
    first_user = 90_000_000 + (uuid.uuid4().int % 1000) * 10
    now_ms = time.time_ns() // 1_000_000
    before = ClickTraffic(users=8, seed=3, first_user=first_user).clicks(
        now_ms - 20_000, rate_per_s=20, count=300
    )
    # After the restart only some users click again.
    after = [
        c
        for c in ClickTraffic(users=8, seed=4, first_user=first_user).clicks(
            now_ms - 4_000, rate_per_s=20, count=120
        )
        if c.user_id < first_user + 3
    ]
    ends = _produce(local_stack, before)
    env = cli_env(
        local_stack,
        FEATURESTREAM_REPO_PATH=str(repo),
        FEATURESTREAM_STATE_DIR=str(tmp_path / "state"),
        FEATURESTREAM_REDIS_URL=url,
        FEATURESTREAM_METRICS_PORT="0",
        FEATURESTREAM_SNAPSHOT_INTERVAL_S="0.5",
        FEATURESTREAM_RESTORE_ONLINE=str(restore).lower(),
    )
    log = tmp_path / "engine.log"
    with log.open("wb") as out:
        engine = subprocess.Popen(
            [*FEATURESTREAM, "run"],
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    store = connect_online_store(url, timeout_s=1.0)
    try:
        wait_until(lambda: _caught_up(store, ViewState.of(view), ends), 120, "the engine")
        time.sleep(1.5)  # a few snapshots (and offline log flushes) after the events
        redis.stop()
        redis = redis_server(
            port, tmp_path / "redis.log", "--dir", str(tmp_path)
        )  # empty: it keeps nothing on disk
        assert not store.entities(view, 1)
        ends_after = _produce(local_stack, after)
        wait_until(lambda: _caught_up(store, ViewState.of(view), ends_after), 120, "the engine")
        time.sleep(1.0)
        # Still running, with the restore on or off (off: it carries on, unrestored).
        assert engine.poll() is None, log.read_text()[-3000:]

        read_ms = max(c.event_time for c in before + after) + 1_000
        users = sorted({c.user_id for c in before})
        keys = [str(u) for u in users]
        (rows,) = store.read([(view, keys)], read_ms)
        events = [dataclasses.asdict(c) for c in before + after]
        wrong = [
            u
            for u, (values, _) in zip(users, rows, strict=True)
            if values != view_values([e for e in events if e["user_id"] == u], view, read_ms)
        ]
        if restore:
            assert wrong == [], [(u, rows[users.index(u)][0]) for u in wrong[:2]]
        else:
            # Negative control: users without new events lost their values.
            quiet = {u for u in users if u >= first_user + 3}
            assert quiet and quiet <= set(wrong)
    finally:
        os.killpg(engine.pid, signal.SIGTERM)
        engine.wait(timeout=30)
        redis.stop()
