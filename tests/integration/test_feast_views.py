"""Batch and on-demand views keep working next to stream views, online and offline."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from featurestream.settings import Settings
from producers import ClickTraffic, EventProducer
from streams.online.feast_store import TiledRedisOnlineStore
from streams.repo import apply_repo, open_store
from tests.support import copy_feature_repo, run_engine_to_end

EXTRA_VIEWS = """
from datetime import timedelta
from typing import Any

from feast import FeatureView, Field, FileSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

from entities import user
from user_click_stats import user_click_stats

user_age = FeatureView(
    name="user_age",
    entities=[user],
    ttl=timedelta(days=3650),
    schema=[Field(name="age", dtype=Int64)],
    source=FileSource(name="user_age_src", path="data/user_age.parquet",
                      timestamp_field="event_timestamp"),
)


@on_demand_feature_view(
    sources=[user_click_stats, user_age],
    schema=[Field(name="clicks_per_year", dtype=Float64)],
    mode="python",
)
def clicks_per_year(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"clicks_per_year": [c / a for c, a in zip(inputs["clicks_last_1h"], inputs["age"])]}
"""


def test_batch_and_on_demand_views_through_featurestream_stores(
    local_stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = copy_feature_repo(tmp_path)
    (repo / "extra_views.py").write_text(EXTRA_VIEWS)
    first_user = 40_000_000 + (uuid.uuid4().int % 1000) * 10
    users = [first_user + i for i in range(3)]
    (repo / "data").mkdir(exist_ok=True)
    pd.DataFrame(
        {
            "user_id": users,
            "age": [20, 40, 50],
            "event_timestamp": pd.to_datetime(["2020-01-01"] * 3, utc=True),
        }
    ).to_parquet(repo / "data" / "user_age.parquet")
    apply_repo(repo, local_stack.online_redis_url)
    store = open_store(repo, local_stack.online_redis_url)
    store.materialize_incremental(
        end_date=pd.Timestamp.now(tz="UTC").to_pydatetime(), feature_views=["user_age"]
    )

    now_ms = time.time_ns() // 1_000_000
    clicks = list(
        ClickTraffic(users=3, seed=5, first_user=first_user).clicks(
            now_ms - 20_000, rate_per_s=10, count=200
        )
    )
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for click in clicks:
            producer.send(click)
    run_engine_to_end(local_stack, repo)

    counts = {u: sum(1 for c in clicks if c.user_id == u) for u in users}
    read_ms = max(c.event_time for c in clicks) + 1_000
    monkeypatch.setattr(TiledRedisOnlineStore, "clock", staticmethod(lambda: read_ms))
    features = [
        "user_click_stats:clicks_last_1h",
        "user_age:age",
        "clicks_per_year:clicks_per_year",
    ]
    online = store.get_online_features(
        features=features, entity_rows=[{"user_id": u} for u in users]
    ).to_dict()
    assert online["age"] == [20, 40, 50]  # batch view, delegated to Feast's Redis store
    assert online["clicks_last_1h"] == [counts[u] for u in users]  # merged tiles
    assert online["clicks_per_year"] == [
        counts[u] / a for u, a in zip(users, [20, 40, 50], strict=True)
    ]

    training = (
        store.get_historical_features(
            entity_df=pd.DataFrame(
                {
                    "user_id": users,
                    "event_timestamp": pd.to_datetime([read_ms] * 3, unit="ms", utc=True),
                }
            ),
            features=features,
        )
        .to_df()
        .sort_values("user_id")
    )
    assert training["age"].tolist() == [20, 40, 50]
    assert training["clicks_last_1h"].tolist() == [counts[u] for u in users]
    assert training["clicks_per_year"].tolist() == online["clicks_per_year"]


def test_plain_feast_materialize_incremental_loads_the_batch_views(
    local_stack: Settings, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from featurestream_app.seed import seed_data

    repo = copy_feature_repo(tmp_path)
    first_user = 41_000_000 + (uuid.uuid4().int % 1000) * 10
    seed_data(repo / "data", first_user=first_user, users=5, items=20, seed=1)
    apply_repo(repo, local_stack.online_redis_url)
    feast_cli = Path(sys.executable).parent / "feast"
    result = subprocess.run(
        [
            str(feast_cli),
            "-c",
            str(repo),
            "materialize-incremental",
            pd.Timestamp.now(tz="UTC").isoformat(),
        ],
        env={**os.environ, "FEATURESTREAM_REDIS_URL": local_stack.online_redis_url},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # Stream views are kept by the engine: Feast's command skips them instead of failing.
    profiles = pq.read_table(repo / "data" / "user_profile.parquet").to_pylist()
    items = pq.read_table(repo / "data" / "item_features.parquet").to_pylist()
    store = open_store(repo, local_stack.online_redis_url)
    online = store.get_online_features(
        features=["user_profile:country", "user_profile:segment", "item_features:price"],
        entity_rows=[{"user_id": p["user_id"], "item_id": items[0]["item_id"]} for p in profiles],
    ).to_dict()
    assert online["country"] == [p["country"] for p in profiles]
    assert online["segment"] == [p["segment"] for p in profiles]
    assert online["price"] == [items[0]["price"]] * len(profiles)
    # Training data keeps every entity row, also one no batch view knows (Feast's file
    # store alone drops it).
    unknown = first_user + 999
    frame = store.get_historical_features(
        entity_df=pd.DataFrame(
            {
                "user_id": [profiles[0]["user_id"], unknown, profiles[1]["user_id"]],
                "event_timestamp": pd.Timestamp.now(tz="UTC"),
            }
        ),
        features=["user_profile:country", "user_click_stats:clicks_last_1h"],
    ).to_df()
    by_user = dict(zip(frame["user_id"], frame["country"], strict=True))
    assert len(frame) == 3
    assert by_user[profiles[0]["user_id"]] == profiles[0]["country"]
    assert pd.isna(by_user[unknown])
    assert frame["clicks_last_1h"].tolist() == [0, 0, 0]
