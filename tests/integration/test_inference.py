"""The example inference service end to end: trained on the offline log through
get_historical_features, served over HTTP with the same features read online."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from featurestream_app.seed import seed_data
from featurestream_app.stack import cli_env, free_port
from producers import EventProducer, TrafficConfig, TrafficGenerator
from streams.repo import open_store
from tests.support import FEATURESTREAM, run_engine_to_end, wait_until


def _post(port: int, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_model_is_trained_on_the_log_and_served_with_the_same_features(
    local_stack: Settings, repo: Path, tmp_path: Path
) -> None:
    first_user = 80_000_000 + (uuid.uuid4().int % 1000) * 100
    seed_data(repo / "data", first_user=first_user, users=50, items=40, seed=2)
    store = open_store(repo, local_stack.online_redis_url)
    store.materialize(
        start_date=pd.Timestamp("2023-12-01", tz="UTC").to_pydatetime(),
        end_date=pd.Timestamp.now(tz="UTC").to_pydatetime(),
        feature_views=["user_profile", "item_features"],
    )
    now_ms = time.time_ns() // 1_000_000
    codec = AvroCodec(load_contracts())
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for topic, count in (("clicks", 600), ("impressions", 900)):
            generator = TrafficGenerator(
                TrafficConfig(topic=topic, users=50, items=40, seed=4, first_user=first_user),
                codec,
            )
            for e in generator.batch([now_ms - 20_000 + i * 20_000 // count for i in range(count)]):
                assert e.record is not None
                producer.send_record(topic, e.record)
    run_engine_to_end(local_stack, repo)

    env = cli_env(
        local_stack,
        FEATURESTREAM_REPO_PATH=str(repo),
    )
    model = tmp_path / "model.json"
    trained = subprocess.run(
        [*FEATURESTREAM, "train-model", "--out", str(model)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads(model.read_text())["metrics"]
    assert metrics["rows"] == 2 * 600  # a positive and a negative row per applied click
    assert 0.5 < metrics["holdout_auc"] <= 1.0

    port = free_port()
    server = subprocess.Popen(
        [
            *FEATURESTREAM,
            "serve-model",
            "--port",
            str(port),
            "--model",
            str(model),
        ],
        env=env,
        start_new_session=True,
    )
    try:
        wait_until(lambda: _up(port), 90, "model server")
        user = first_user
        at = now_ms + 5_000
        status, answer = _post(
            port, {"user_id": user, "item_id": 3, "item_price": 12.5, "request_time_ms": at}
        )
        assert status == 200, answer
        assert 0.0 < answer["score"] < 1.0
        training = (
            store.get_historical_features(
                entity_df=pd.DataFrame(
                    {
                        "user_id": [user],
                        "item_id": [3],
                        "request_time_ms": [at],
                        "item_price": [12.5],
                        "event_timestamp": pd.to_datetime([at], unit="ms", utc=True),
                    }
                ),
                features=store.get_feature_service("recommender_v1"),
            )
            .to_df()
            .iloc[0]
        )
        served = answer["features"]
        assert served["clicks_last_1h"] > 0
        for name, value in served.items():
            assert value == training[name], name  # what it was trained on, exactly

        status, answer = _post(port, {"user_id": "someone", "item_id": 3})
        assert status == 422 and "user_id must be an integer" in answer["error"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
