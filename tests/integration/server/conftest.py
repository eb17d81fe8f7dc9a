"""The server tests share one local stack and one served repository (package scope):
batch data materialized, stream events run through the engine, Feast's own server
(serving.feast_server) and the fast server (serving.run_server) on it, Feast's answers
being the oracle of the response JSON."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from featurestream.settings import Settings
from featurestream_app.stack import free_port
from tests.integration.server.client import fast_server
from tests.support import (
    Background,
    running_stack,
    seeded_repo,
)

FIRST_USER = 70_000_000 + (uuid.uuid4().int % 1000) * 100
USERS = [FIRST_USER, FIRST_USER + 1]  # the users with events
UNKNOWN = FIRST_USER + 99  # no events, no profile
ODFV_FULL = {
    "recommender_v1": ["ctr_1h__ctr_1h", "seconds_since_last_click__seconds_since_last_click"],
    "fraud_v1": [
        "spend_per_purchase_24h__spend_per_purchase_24h",
        "price_vs_user_avg__price_vs_user_avg",
    ],
}

FEAST_SERVER = """
import sys
from pathlib import Path
from serving.feast_server import serve_feast
serve_feast(Path(sys.argv[1]), sys.argv[2], host="127.0.0.1", port=int(sys.argv[3]), workers=1)
"""


@pytest.fixture(scope="package")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One local stack for every server test module of this package."""
    yield from running_stack(tmp_path_factory)


@dataclass
class Served:
    repo: Path
    stack: Settings
    now_ms: int
    records: dict[str, list[dict[str, Any]]]
    fast: str
    feast: str
    tmp: Path


@pytest.fixture(scope="package")
def served(local_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fast_server")
    repo, now_ms, records = seeded_repo(local_stack, tmp, first_user=FIRST_USER, seed=7)

    feast_port, fast_port = free_port(), free_port()
    url = local_stack.online_redis_url
    feast = Background(
        [sys.executable, "-c", FEAST_SERVER, str(repo), url, str(feast_port)], tmp / "feast.log"
    )
    fast, fast_url = fast_server(tmp, repo, url, port=fast_port)
    try:
        feast.wait_http(f"http://127.0.0.1:{feast_port}/health")
        fast.wait_http(f"{fast_url}/ready")
        yield Served(
            repo, local_stack, now_ms, records, fast_url, f"http://127.0.0.1:{feast_port}", tmp
        )
    finally:
        fast.stop()
        feast.stop()


def entities_of(served: Served) -> dict[str, list[Any]]:
    u0, u1 = USERS
    return {
        "user_id": [u0, u1, UNKNOWN, u0],
        "item_id": [7, 7, 8, 9],
        "request_time_ms": [served.now_ms + 5_000] * 4,
        "item_price": [30.0, 12.5, 3.0, 30],
    }
