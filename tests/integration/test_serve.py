"""`featurestream serve` over real HTTP returns the tile values Feast's SDK reads."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

from featurestream.settings import Settings
from featurestream_app.stack import free_port
from producers import ClickTraffic, EventProducer
from tests.support import FEATURESTREAM, run_engine_to_end, wait_until


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except OSError:
        return 0


def test_feature_server_answers_with_exact_windows(local_stack: Settings, repo: Path) -> None:
    now_ms = time.time_ns() // 1_000_000
    # The last 20 s: within the allowed lateness of whatever the shared topic holds.
    clicks = list(
        ClickTraffic(users=5, seed=3, first_user=9_000_001).clicks(
            now_ms - 20_000, rate_per_s=15, count=300
        )
    )
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for click in clicks:
            producer.send(click)
    run_engine_to_end(local_stack, repo)

    port = free_port()
    env = {
        **os.environ,
        "FEATURESTREAM_REPO_PATH": str(repo),
        "FEATURESTREAM_REDIS_PORT": str(local_stack.redis_port),
        "FEATURESTREAM_SERVE_ONLINE_TIMEOUT_MS": "5000",  # not what this test tests
    }
    server = subprocess.Popen(
        [*FEATURESTREAM, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_until(lambda: _get(f"http://127.0.0.1:{port}/health") == 200, 60, "feature server")
        users = sorted({c.user_id for c in clicks})
        body = json.dumps(
            {
                "features": [
                    "user_click_stats:clicks_last_5min",
                    "user_click_stats:clicks_last_1h",
                ],
                "entities": {"user_id": users},
            }
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/get-online-features",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    names = answer["metadata"]["feature_names"]
    values = {name: answer["results"][i]["values"] for i, name in enumerate(names)}
    expected = [sum(1 for c in clicks if c.user_id == u) for u in users]
    assert values["user_id"] == users
    assert values["clicks_last_5min"] == expected
    assert values["clicks_last_1h"] == expected
    assert all(s == "PRESENT" for s in answer["results"][1]["statuses"])
