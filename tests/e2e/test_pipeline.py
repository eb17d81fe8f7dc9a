"""The whole path in containers: CLI up/apply, producer, `featurestream run` process, Feast read."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from producers import ClickTraffic, EventProducer
from streams.core.reference import view_values
from streams.definitions import compile_registry
from streams.online.feast_store import TiledRedisOnlineStore
from streams.repo import open_store
from tests.e2e.conftest import Endpoints
from tests.support import copy_feature_repo, run_cli

MIN = 60_000


def _cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, timeout=timeout, ok=False)


def test_online_features_from_containers_equal_counts_from_produced_events(
    containers: Endpoints, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = copy_feature_repo(tmp_path)
    env = {
        **os.environ,
        "FEATURESTREAM_KAFKA_BOOTSTRAP": containers.kafka_bootstrap,
        "FEATURESTREAM_REDIS_URL": containers.redis_url,
        "FEATURESTREAM_STATE_DIR": str(tmp_path / "state"),
        "FEATURESTREAM_REPO_PATH": str(repo),
        "FEATURESTREAM_METRICS_PORT": "0",  # no /metrics server in a test
    }
    started = _cli(env, "up")
    assert started.returncode == 0, started.stderr
    assert "external" in started.stdout  # nothing was started: the containers are used
    applied = _cli(env, "apply")
    assert applied.returncode == 0, applied.stderr

    now_ms = time.time_ns() // 1_000_000
    clicks = list(
        ClickTraffic(users=25, items=40, seed=11, first_user=500).clicks(
            now_ms - 20 * MIN, rate_per_s=1.5, count=1500
        )
    )
    with EventProducer(containers.kafka_bootstrap) as producer:
        for click in clicks:
            producer.send(click)
    assert producer.stats.delivered == len(clicks)

    ran = _cli(env, "run", "--stop-at-end", timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]

    store = open_store(repo, containers.redis_url)
    view = next(v for v in compile_registry(store) if v.name == "user_click_stats")
    users = sorted({c.user_id for c in clicks})
    last = max(c.event_time for c in clicks)
    features = [f"user_click_stats:{a.name}" for a in view.aggregations]
    mismatches = []
    for read_ms in (last, last + 4 * MIN, last + 30 * MIN):
        monkeypatch.setattr(TiledRedisOnlineStore, "clock", staticmethod(lambda t=read_ms: t))
        online = store.get_online_features(
            features=features, entity_rows=[{"user_id": u} for u in users]
        ).to_dict()
        for i, user in enumerate(users):
            expected = view_values(
                [c.to_record() for c in clicks if c.user_id == user], view, read_ms
            )
            got = {a.name: online[a.name][i] for a in view.aggregations}
            if got != expected:
                mismatches.append((user, read_ms, got, expected))
    assert mismatches == []
    assert sum(online["clicks_last_1h"]) == len(clicks)  # all within the hour at last+30min
