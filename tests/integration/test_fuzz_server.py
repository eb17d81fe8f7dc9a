"""Schemathesis fuzzes the feature server from its OpenAPI document: no 5xx, ever."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from featurestream.settings import Settings
from featurestream_app.seed import seed_data
from featurestream_app.stack import cli_env, free_port
from producers import ClickTraffic, EventProducer
from streams.repo import apply_repo, open_store
from tests.support import FEATURESTREAM, copy_feature_repo, run_engine_to_end, wait_until


def _up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def api_schema(local_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    repo = copy_feature_repo(tmp_path_factory.mktemp("fuzz"))
    seed_data(repo / "data", first_user=1, users=20, items=20, seed=1)
    apply_repo(repo, local_stack.online_redis_url)
    store = open_store(repo, local_stack.online_redis_url)
    store.materialize_incremental(end_date=datetime.now(tz=UTC))
    now_ms = time.time_ns() // 1_000_000
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for click in ClickTraffic(users=20, seed=1).clicks(now_ms - 10_000, 20, 200):
            producer.send(click)
    run_engine_to_end(local_stack, repo)
    port = free_port()
    env = cli_env(
        local_stack,
        FEATURESTREAM_REPO_PATH=str(repo),
        FEATURESTREAM_SERVE_ONLINE_TIMEOUT_MS="5000",  # not what this test tests
    )
    server = subprocess.Popen(
        [
            *FEATURESTREAM,
            "serve",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        start_new_session=True,
    )
    try:
        wait_until(lambda: _up(port), 90, "feature server")
        yield schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_the_api_never_answers_5xx(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/get-online-features", "/features", "/ready"}
    calls = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            response = case.call()
            calls.append((case.path, response.status_code))
            assert response.status_code < 500, (case.method, case.path, case.body, response.text)

        fuzz()
    assert sum(path == "/get-online-features" for path, _ in calls) >= 100
