"""Feature services: batch, stream and on-demand features of a model in one Feast read."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from producers import EventProducer, TrafficConfig, TrafficGenerator
from streams.online.feast_store import TiledRedisOnlineStore
from streams.repo import apply_repo, open_store
from tests.support import copy_feature_repo, run_cli, run_engine_to_end, seeded_repo, stack_env


def test_recommender_and_fraud_services_serve_every_kind_of_feature(
    local_stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_user = 50_000_000 + (uuid.uuid4().int % 1000) * 100
    users = [first_user, first_user + 1, first_user + 2]
    repo, now_ms, records = seeded_repo(local_stack, tmp_path, first_user=first_user, seed=3)

    store = open_store(repo, local_stack.online_redis_url)
    read_ms = now_ms + 5_000
    monkeypatch.setattr(TiledRedisOnlineStore, "clock", staticmethod(lambda: read_ms))
    rows = [
        {"user_id": u, "item_id": 7, "request_time_ms": read_ms, "item_price": 30.0} for u in users
    ]
    rec = store.get_online_features(
        features=store.get_feature_service("recommender_v1"), entity_rows=rows
    ).to_dict()
    fraud = store.get_online_features(
        features=store.get_feature_service("fraud_v1"), entity_rows=rows
    ).to_dict()

    profiles = {
        r["user_id"]: r for r in pq.read_table(repo / "data/user_profile.parquet").to_pylist()
    }
    item = next(
        r
        for r in pq.read_table(repo / "data/item_features.parquet").to_pylist()
        if r["item_id"] == 7
    )
    for i, user in enumerate(users):
        clicks = [r for r in records["clicks"] if r["user_id"] == user]
        shown = [r for r in records["impressions"] if r["user_id"] == user]
        bought = [r for r in records["purchases"] if r["user_id"] == user]
        # batch
        assert rec["country"][i] == profiles[user]["country"]
        assert rec["segment"][i] == profiles[user]["segment"]
        assert rec["price"][i] == item["price"] and rec["category"][i] == item["category"]
        assert fraud["age"][i] == profiles[user]["age"]
        # stream
        assert rec["clicks_last_1h"][i] == len(clicks)
        assert fraud["purchase_count_24h"][i] == len(bought)
        # on demand, with their missing-value rules
        assert rec["ctr_1h"][i] == (len(clicks) / len(shown) if shown else None)
        last = max((r["event_time"] for r in clicks), default=None)
        assert rec["seconds_since_last_click"][i] == (
            None if last is None else (read_ms - last) / 1000.0
        )
        total = sum(r["amount"] for r in bought)
        assert fraud["spend_per_purchase_24h"][i] == (
            pytest.approx(total / len(bought)) if bought else None
        )
        mean = total / len(bought) if bought else None
        assert fraud["price_vs_user_avg"][i] == (pytest.approx(30.0 / mean) if mean else None)
    # the third user has no events at all: counts are 0, ratios are missing
    assert rec["clicks_last_1h"][2] == 0 and rec["ctr_1h"][2] is None

    listed = {
        (r["view"], r["feature"]): r
        for r in json.loads(run_cli("features", "--json", env=stack_env(local_stack, repo)).stdout)
    }
    clicks = listed[("user_click_stats", "clicks_last_5min")]
    assert (clicks["kind"], clicks["aggregation"], clicks["window"], clicks["source"]) == (
        "stream",
        "count",
        "5min",
        "kafka:clicks",
    )
    assert clicks["freshness"] != "-"  # the engine wrote it
    country = listed[("user_profile", "country")]
    assert country["kind"] == "batch" and country["tags"]["pii"] == "true"
    assert country["freshness"] != "-"  # materialized
    assert listed[("ctr_1h", "ctr_1h")]["kind"] == "on_demand"
    assert ("user_click_stats", "user_id") not in listed  # join keys are not features


def test_training_data_never_sees_values_valid_after_the_row_time(
    local_stack: Settings, tmp_path: Path
) -> None:
    import pandas as pd

    from featurestream.errors import ConfigError

    repo = copy_feature_repo(tmp_path)
    user = 60_000_000 + (uuid.uuid4().int % 1000) * 10
    now_ms = time.time_ns() // 1_000_000
    # The profile changes and the clicks start here; recent enough to be on time in
    # partitions other tests share.
    t_change = now_ms - 25_000
    (repo / "data").mkdir(exist_ok=True)
    pd.DataFrame(
        {
            "user_id": [user, user],
            "country": ["DE", "ZZ"],
            "segment": ["new", "vip"],
            "age": [30, 31],
            "signup_date": pd.to_datetime(["2020-01-01"] * 2, utc=True),
            "event_timestamp": pd.to_datetime(
                [t_change - 3_600_000, t_change], unit="ms", utc=True
            ),
        }
    ).to_parquet(repo / "data" / "user_profile.parquet")
    apply_repo(repo, local_stack.online_redis_url)
    codec = AvroCodec(load_contracts())
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for topic, count, step in (("clicks", 40, 500), ("impressions", 80, 250)):
            generator = TrafficGenerator(
                TrafficConfig(topic=topic, users=1, seed=5, first_user=user, jitter_ms=0), codec
            )
            for e in generator.batch([t_change + 1 + i * step for i in range(count)]):
                assert e.record is not None
                producer.send_record(topic, e.record)
    run_engine_to_end(local_stack, repo)

    store = open_store(repo, local_stack.online_redis_url)
    before, after = t_change - 1, t_change + 20_001  # all 40 clicks and 80 impressions by then
    features = [
        "user_profile:country",
        "user_click_stats:clicks_last_1h",
        "user_impression_stats:impressions_last_1h",
        "ctr_1h:ctr_1h",
    ]
    training = (
        store.get_historical_features(
            entity_df=pd.DataFrame(
                {
                    "user_id": [user, user],
                    "event_timestamp": pd.to_datetime([before, after], unit="ms", utc=True),
                }
            ),
            features=features,
        )
        .to_df()
        .sort_values("event_timestamp")
    )
    first, second = training.to_dict("records")
    assert (first["country"], first["clicks_last_1h"], first["impressions_last_1h"]) == ("DE", 0, 0)
    assert first["ctr_1h"] is None or first["ctr_1h"] != first["ctr_1h"]  # missing (None/NaN)
    assert (second["country"], second["clicks_last_1h"], second["impressions_last_1h"]) == (
        "ZZ",
        40,
        80,
    )
    assert second["ctr_1h"] == 0.5

    # bad input: one clear line each
    bad = [
        (pd.DataFrame({"user_id": [user]}), "event_timestamp"),
        (
            pd.DataFrame(
                {"user_id": [user], "event_timestamp": pd.to_datetime([after], unit="ms")}
            ),
            "timezone",
        ),
    ]
    for entity_df, needle in bad:
        with pytest.raises(ConfigError) as err:
            store.get_historical_features(entity_df=entity_df, features=features).to_df()
        assert needle in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(Exception, match="no_such_view"):
        store.get_historical_features(
            entity_df=pd.DataFrame(
                {"user_id": [user], "event_timestamp": pd.to_datetime([after], unit="ms", utc=True)}
            ),
            features=["no_such_view:x"],
        )
