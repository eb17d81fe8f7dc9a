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
from tests.support import FEATURESTREAM, run_engine_to_end, stack_env, wait_until


def _worker(url: str) -> str | None:
    """The worker that answered ``GET url`` (its pid opens the request id), None: none."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.headers["x-request-id"]).split("-")[0]
    except OSError:
        return None


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


def test_serve_says_where_it_listens_once_it_answers(
    local_stack: Settings, repo: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.stderr"
    with open(log, "wb") as stderr:
        server = subprocess.Popen(
            [*FEATURESTREAM, "serve", "--port", str(port), "--workers", "2"],
            env=stack_env(local_stack, repo),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    workers: set[str] = set()

    def both_workers_answered() -> bool:
        worker = _worker(f"{url}/health")
        workers.update([worker] if worker else [])
        return len(workers) == 2

    try:
        wait_until(lambda: log.read_text() != "", 60, f"a first line (log: {log})")
        assert log.read_text().splitlines()[0] == (
            f"starting 2 workers on {url}: loading the feature registry"
        )
        wait_until(lambda: "listening on" in log.read_text(), 120, f"listening on (log: {log})")
        # the line comes once the server answers: no retry here
        assert _get(f"{url}/health") == 200
        wait_until(both_workers_answered, 120, "both workers answering")
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    lines = log.read_text().splitlines()
    # one line for the server, not one per worker
    assert [line for line in lines if "listening" in line] == [f"listening on {url} (2 workers)"], (
        lines
    )
