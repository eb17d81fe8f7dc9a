"""`featurestream run` resumes from its snapshot: new events only, nothing twice."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from featurestream.settings import Settings
from producers import ClickTraffic, EventProducer
from streams.online.feast_store import TiledRedisOnlineStore
from streams.repo import apply_repo, open_store
from tests.support import copy_feature_repo, run_cli


def test_a_restarted_run_resumes_and_counts_every_event_once(
    local_stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, local_stack.online_redis_url)
    env = {
        **os.environ,
        "FEATURESTREAM_REPO_PATH": str(repo),
        "FEATURESTREAM_STATE_DIR": str(tmp_path / "state"),
        "FEATURESTREAM_BROKER_PORT": str(local_stack.broker_port),
        "FEATURESTREAM_REDIS_PORT": str(local_stack.redis_port),
        "FEATURESTREAM_METRICS_PORT": "0",
        "FEATURESTREAM_SNAPSHOT_INTERVAL_S": "0.5",
    }
    first_user = 70_000_000 + (uuid.uuid4().int % 1000) * 10
    traffic = ClickTraffic(users=5, seed=2, first_user=first_user)
    now_ms = time.time_ns() // 1_000_000
    clicks = traffic.clicks(now_ms - 20_000, rate_per_s=10, count=200)
    batches = [clicks[:120], clicks[120:]]

    log_dir = repo / "data" / "offline_log" / "user_click_stats"
    written: list[dict[Path, int]] = []
    for batch in batches:
        with EventProducer(local_stack.bootstrap_servers) as producer:
            for click in batch:
                producer.send(click)
        run_cli("run", "user_click_stats", "--stop-at-end", env=env, timeout=300)
        written.append({p: p.stat().st_mtime_ns for p in log_dir.rglob("part-*.parquet")})

    # Resumed, not rebuilt: the first run's files are untouched, the second adds files.
    assert written[0] and all(written[1].get(p) == m for p, m in written[0].items())
    assert len(written[1]) > len(written[0])

    assert any((tmp_path / "state" / "recovery").rglob("part-0.sqlite3"))
    log = ds.dataset(
        repo / "data" / "offline_log" / "user_click_stats", format="parquet", partitioning="hive"
    ).to_table(columns=["user_id", "event_id"])
    ours = [
        e
        for u, e in zip(
            log.column("user_id").to_pylist(), log.column("event_id").to_pylist(), strict=True
        )
        if first_user <= u < first_user + 5
    ]
    assert sorted(ours) == sorted(c.event_id for c in clicks)  # each event exactly once

    store = open_store(repo, local_stack.online_redis_url)
    read_ms = max(c.event_time for c in clicks) + 1_000
    monkeypatch.setattr(TiledRedisOnlineStore, "clock", staticmethod(lambda: read_ms))
    users = sorted({c.user_id for c in clicks})
    online = store.get_online_features(
        features=["user_click_stats:clicks_last_1h"], entity_rows=[{"user_id": u} for u in users]
    ).to_dict()
    # the second run resumed the first run's tile state: counts span both batches
    assert online["clicks_last_1h"] == [sum(c.user_id == u for c in clicks) for u in users]
