"""The fast feature server (serving.run_server) over real HTTP on real ports.

Backends: the module's local stack (embedded broker + redis-server, see conftest),
a copy of feature_repo with batch data materialized and stream events run through
the engine, Feast's own server (serving.feast_server) on the same repo and Redis
as the oracle of the response JSON, and, for outages, a private redis-server this
module starts and stops itself.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import redis

from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from featurestream_app.stack import free_port, redis_server_argv
from producers import EventProducer, TrafficConfig, TrafficGenerator
from serving.catalog import Catalog
from serving.lookup import bind
from serving.plan import plan_for
from serving.registry import StoreRegistry
from serving.request import parse_request
from streams.core import StoredTiles
from streams.definitions import compile_view
from streams.online import connect_online_store
from streams.online.redis.reader import PipelinedRedisReader, make_reader
from streams.repo import apply_repo, open_store
from tests.support import copy_feature_repo, run_engine_to_end, wait_until

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
FAST_SERVER = """
import json, sys
from pathlib import Path
from serving import ServerSettings, parse_api_keys, run_server
cfg = json.loads(sys.argv[1])
settings = dict(cfg.get("settings", {}))
if "api_keys" in cfg:
    settings["api_keys"] = parse_api_keys(json.dumps(cfg["api_keys"]))
run_server(
    Path(cfg["repo"]), cfg["redis_url"], host="127.0.0.1", port=cfg["port"],
    workers=cfg.get("workers", 1), settings=ServerSettings(**settings),
    ssl_keyfile=Path(cfg["key"]) if cfg.get("key") else None,
    ssl_certfile=Path(cfg["cert"]) if cfg.get("cert") else None,
    log_level="warning",
)
"""


# ---------------------------------------------------------------- helpers
@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    seconds: float


def _call(
    base: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    method: str | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 10,
) -> Answer:
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path,
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        method=method or ("POST" if data is not None else "GET"),
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            status, raw, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as err:
        status, raw, got = err.code, err.read(), err.headers
    seconds = time.monotonic() - started
    lowered = {k.lower(): v for k, v in got.items()}
    parsed = json.loads(raw) if "json" in lowered.get("content-type", "") else raw.decode()
    return Answer(int(status), lowered, parsed, seconds)


def _lookup(base: str, body: Any, **kw: Any) -> Answer:
    return _call(base, "/get-online-features", body, **kw)


class _Process:
    """A server subprocess of this module, stopped by its own process group."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait_http(self, url: str, timeout_s: float = 120) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, f"server exited:\n{self.tail()}"
            try:
                with urllib.request.urlopen(url, timeout=2, context=_INSECURE) as response:
                    return int(response.status) == 200
            except OSError:
                return False

        wait_until(up, timeout_s, f"{url} (log: {self.log})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


_INSECURE = ssl.create_default_context()
_INSECURE.check_hostname = False
_INSECURE.verify_mode = ssl.CERT_NONE


def _fast_server(
    tmp: Path, repo: Path, redis_url: str, *, port: int | None = None, **config: Any
) -> tuple[_Process, str]:
    port = port or free_port()
    cfg = {"repo": str(repo), "redis_url": redis_url, "port": port, **config}
    server = _Process(
        [sys.executable, "-c", FAST_SERVER, json.dumps(cfg)], tmp / f"fast-{port}.log"
    )
    scheme = "https" if cfg.get("cert") else "http"
    return server, f"{scheme}://127.0.0.1:{port}"


def _cli(settings: Settings, repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "FEATURESTREAM_REPO_PATH": str(repo),
        "FEATURESTREAM_REDIS_PORT": str(settings.redis_port),
        "FEATURESTREAM_BROKER_PORT": str(settings.broker_port),
    }
    result = subprocess.run(
        [sys.executable, "-m", "featurestream_app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _columns(answer: dict[str, Any]) -> dict[str, Any]:
    names = answer["metadata"]["feature_names"]
    assert len(names) == len(set(names)) == len(answer["results"])
    return dict(zip(names, answer["results"], strict=True))


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
    match = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


# ---------------------------------------------------------------- the served repo
@dataclass
class Served:
    repo: Path
    stack: Settings
    now_ms: int
    records: dict[str, list[dict[str, Any]]]
    fast: str
    feast: str
    tmp: Path


@pytest.fixture(scope="module")
def served(local_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fast_server")
    repo = copy_feature_repo(tmp)
    _cli(
        local_stack,
        repo,
        "seed-data",
        "--users",
        "10",
        "--first-user",
        str(FIRST_USER),
        "--items",
        "50",
    )
    apply_repo(repo, local_stack.online_redis_url)
    _cli(local_stack, repo, "materialize")
    now_ms = time.time_ns() // 1_000_000
    codec = AvroCodec(load_contracts())
    records: dict[str, list[dict[str, Any]]] = {}
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for topic, count in (("clicks", 60), ("impressions", 150), ("purchases", 12)):
            generator = TrafficGenerator(
                TrafficConfig(
                    topic=topic, users=2, items=50, seed=7, first_user=FIRST_USER, jitter_ms=0
                ),
                codec,
            )
            # Recent enough to be on time, old enough to sit well inside every window
            # for the minutes the comparisons take (values do not move between reads).
            emitted = generator.batch([now_ms - 20_000 + i * 100 for i in range(count)])
            records[topic] = [e.record for e in emitted if e.record is not None]
            for record in records[topic]:
                producer.send_record(topic, record)
    run_engine_to_end(local_stack, repo)

    feast_port, fast_port = free_port(), free_port()
    url = local_stack.online_redis_url
    feast = _Process(
        [sys.executable, "-c", FEAST_SERVER, str(repo), url, str(feast_port)], tmp / "feast.log"
    )
    fast, fast_url = _fast_server(tmp, repo, url, port=fast_port)
    try:
        feast.wait_http(f"http://127.0.0.1:{feast_port}/health")
        fast.wait_http(f"{fast_url}/ready")
        yield Served(
            repo, local_stack, now_ms, records, fast_url, f"http://127.0.0.1:{feast_port}", tmp
        )
    finally:
        fast.stop()
        feast.stop()


def _entities(served: Served) -> dict[str, list[Any]]:
    u0, u1 = USERS
    return {
        "user_id": [u0, u1, UNKNOWN, u0],
        "item_id": [7, 7, 8, 9],
        "request_time_ms": [served.now_ms + 5_000] * 4,
        "item_price": [30.0, 12.5, 3.0, 30],
    }


# ---------------------------------------------------------------- 1. compatibility
def _assert_same_as_feast(ours: Answer, feast: Answer, extra: list[str]) -> None:
    assert (ours.status, feast.status) == (200, 200), (ours.body, feast.body)
    o, f = ours.body, feast.body
    assert set(o) == set(f) == {"metadata", "results"}
    assert {k: v for k, v in o["metadata"].items() if k != "feature_names"} == {
        k: v for k, v in f["metadata"].items() if k != "feature_names"
    }
    names_o, names_f = o["metadata"]["feature_names"], f["metadata"]["feature_names"]
    keys = [n for n in names_f if n in ("user_id", "item_id")]
    # join keys first, in the order given; Feast orders features inside a view by a
    # set (it changes between processes), so features are compared by name
    assert names_o[: len(keys)] == names_f[: len(keys)] == keys
    assert sorted(names_o) == sorted(names_f + extra)
    ours_cols, feast_cols = _columns(o), _columns(f)
    assert {n: ours_cols[n] for n in names_f} == feast_cols


@pytest.mark.parametrize("full_feature_names", [False, True])
@pytest.mark.parametrize("service", ["recommender_v1", "fraud_v1"])
def test_feature_services_answer_as_feast_serve(
    served: Served, service: str, full_feature_names: bool
) -> None:
    body = {
        "feature_service": service,
        "entities": _entities(served),
        "full_feature_names": full_feature_names,
    }
    ours, feast = _lookup(served.fast, body), _lookup(served.feast, body)
    # Feast 0.67 drops python-mode on-demand outputs under full names (their UDFs
    # return short names); this server returns them.
    extra = ODFV_FULL[service] if full_feature_names else []
    _assert_same_as_feast(ours, feast, extra)
    if full_feature_names:
        short = _columns(_lookup(served.fast, {**body, "full_feature_names": False}).body)
        for name in extra:
            assert _columns(ours.body)[name] == short[name.split("__")[1]]


@pytest.mark.parametrize(
    "features",
    [
        [
            "user_click_stats:clicks_last_5min",
            "user_profile:age",
            "ctr_1h:ctr_1h",
            "item_features:price",
            "user_click_stats:clicks_last_1h",
            "user_purchase_stats:purchase_amount_mean_24h",
            "user_profile:signup_date",
        ],
        ["user_purchase_stats:purchase_amount_max_24h", "price_vs_user_avg:price_vs_user_avg"],
    ],
)
def test_feature_lists_answer_as_feast_serve(served: Served, features: list[str]) -> None:
    body = {
        "features": features,
        "entities": _entities(served),
        "include_feature_view_version_metadata": True,
    }
    _assert_same_as_feast(_lookup(served.fast, body), _lookup(served.feast, body), [])


def test_values_match_the_events_and_the_tile_store(served: Served) -> None:
    u0, u1 = USERS
    answer = _lookup(
        served.fast, {"feature_service": "recommender_v1", "entities": _entities(served)}
    )
    cols = _columns(answer.body)
    clicks = [sum(1 for r in served.records["clicks"] if r["user_id"] == u) for u in USERS]
    assert cols["clicks_last_1h"]["values"] == [clicks[0], clicks[1], 0, clicks[0]]
    assert cols["clicks_last_1h"]["statuses"] == ["PRESENT"] * 4
    newest = max(r["event_time"] for r in served.records["clicks"] if r["user_id"] == u0)
    assert cols["clicks_last_1h"]["event_timestamps"][0] == time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(newest // 1000)
    ) + (f".{newest % 1000:03d}Z" if newest % 1000 else "Z")
    items = {
        r["item_id"]: r
        for r in pq.read_table(served.repo / "data/item_features.parquet").to_pylist()
    }
    assert cols["price"]["values"] == [items[i]["price"] for i in (7, 7, 8, 9)]
    # the same windows as the engine's tile store reads (one implementation of the merge)
    store = open_store(served.repo, served.stack.online_redis_url)
    view = store.get_stream_feature_view("user_click_stats")
    spec = compile_view(store.project, view, [f.name for f in view.entity_columns])
    (rows,) = connect_online_store(served.stack.online_redis_url).read(
        [(spec, [str(u) for u in (u0, u1, UNKNOWN)])], time.time_ns() // 1_000_000
    )
    for name in ("clicks_last_5min", "clicks_last_1h", "distinct_items_1h"):
        assert cols[name]["values"][:3] == [values[name] for values, _ in rows]


def test_every_redis_reader_returns_the_same_replies(served: Served) -> None:
    snapshot = StoreRegistry(open_store(served.repo, served.stack.online_redis_url)).load()
    assert snapshot is not None
    catalog = Catalog(snapshot)
    body = {"feature_service": "fraud_v1", "entities": _entities(served)}
    request = parse_request(json.dumps(body).encode(), max_entities=10)
    plan = plan_for(catalog, features=(), feature_service="fraud_v1", full_feature_names=False)
    reads = bind(plan, request, catalog).reads

    async def fetch(kind: str) -> list[Any]:
        reader = make_reader(
            served.stack.online_redis_url, kind=kind, timeout_ms=1000, max_in_flight=4
        )
        try:
            await reader.ping()
            return await reader.fetch(reads)
        finally:
            await reader.close()

    replies = {kind: asyncio.run(fetch(kind)) for kind in ("pipelined", "redis-asyncio", "thread")}
    assert replies["pipelined"] == replies["redis-asyncio"] == replies["thread"]
    assert any(isinstance(r, StoredTiles) for r in replies["pipelined"])  # tiles were read


def test_pipelined_reader_keeps_replies_aligned_when_lookups_give_up(served: Served) -> None:
    url = served.stack.online_redis_url
    prefix = f"fast-test:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(url)
    client.mset({f"{prefix}:{i}": i for i in range(301)})
    # db 5 (SELECT after connecting) holds other values
    redis.Redis.from_url(url.rsplit("/", 1)[0] + "/5").set(f"{prefix}:0", "db5")

    async def run() -> list[Any]:
        reader = PipelinedRedisReader(url, timeout_ms=2000)
        other_db = PipelinedRedisReader(url.rsplit("/", 1)[0] + "/5", timeout_ms=2000)
        try:
            await reader.ping()  # connected: every lookup below writes at once
            tasks = [
                asyncio.create_task(
                    reader.execute([("GET", f"{prefix}:{i}"), ("GET", f"{prefix}:{i + 1}")])
                )
                for i in range(300)
            ]
            await asyncio.sleep(0)  # every lookup has written its commands
            for task in tasks[::7]:
                task.cancel()  # they give up; their replies must be skipped
            results = await asyncio.gather(*tasks, return_exceptions=True)
            results.append(await reader.execute([("GET", f"{prefix}:300")]))
            results.append(await other_db.execute([("GET", f"{prefix}:0")]))
            return results
        finally:
            await reader.close()
            await other_db.close()

    results = asyncio.run(run())
    for i, result in enumerate(results[:300]):
        if i % 7 == 0:
            assert isinstance(result, asyncio.CancelledError)
        else:
            assert result == [str(i).encode(), str(i + 1).encode()]
    assert results[300] == [b"300"]
    assert results[301] == [b"db5"]


# ---------------------------------------------------------------- 2. errors
def _error(answer: Answer, status: int, code: str, *needles: str) -> None:
    assert answer.status == status, answer.body
    error = answer.body["error"]
    assert error["code"] == code
    assert error["request_id"] == answer.headers["x-request-id"]
    for needle in needles:
        assert needle in error["message"], error["message"]
    assert "Traceback" not in json.dumps(answer.body)


def test_unknown_names_are_404_with_near_matches(served: Served) -> None:
    answer = _lookup(
        served.fast,
        {"features": ["user_click_stats:clicks_last_5m"], "entities": {"user_id": [1]}},
        headers={"X-Request-ID": "req-near-1"},
    )
    _error(
        answer,
        404,
        "not_found",
        "'user_click_stats:clicks_last_5m'",
        "did you mean user_click_stats:clicks_last_5min",
    )
    assert answer.headers["x-request-id"] == "req-near-1"
    answer = _lookup(
        served.fast, {"feature_service": "recommender_v2", "entities": {"user_id": [1]}}
    )
    _error(answer, 404, "not_found", "'recommender_v2'", "did you mean recommender_v1")
    answer = _lookup(
        served.fast, {"features": ["user_clicks:clicks_last_1h"], "entities": {"user_id": [1]}}
    )
    _error(answer, 404, "not_found", "did you mean user_click_stats:clicks_last_1h")


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        (
            b'{"features": ["user_click_stats:clicks_last_1h"], "entities": {"user_id": [1]',
            ["not valid JSON"],
        ),
        (
            {"features": "user_click_stats:clicks_last_1h", "entities": {"user_id": [1]}},
            ["features must be a list"],
        ),
        (
            {"features": ["user_click_stats:clicks_last_1h"], "entities": {"user_id": ["abc"]}},
            ['entities.user_id[0] = "abc"', "integer"],
        ),
        (
            {
                "features": ["user_click_stats:clicks_last_1h"],
                "entities": {"user_id": [1, 2], "item_id": [1]},
            },
            ["same length", "user_id: 2, item_id: 1"],
        ),
        (
            {"feature_service": "fraud_v1", "entities": {"user_id": [1], "request_time_ms": [1]}},
            ["'item_price'", "price_vs_user_avg"],
        ),
        (
            {
                "feature_service": "recommender_v1",
                "entities": {"user_id": [1], "request_time_ms": [1], "item_price": [1.0]},
            },
            ["missing join key(s) 'item_id'"],
        ),
    ],
)
def test_bad_requests_are_422_naming_the_field(
    served: Served, body: Any, needles: list[str]
) -> None:
    _error(_lookup(served.fast, body), 422, "invalid_request", *needles)


def test_too_large_requests_are_413(served: Served) -> None:
    many = {
        "features": ["user_click_stats:clicks_last_1h"],
        "entities": {"user_id": list(range(1001))},
    }
    _error(_lookup(served.fast, many), 413, "too_large", "1001 values", "at most 1000")
    padded = json.dumps(
        {"features": ["user_click_stats:clicks_last_1h"] * 40_000, "entities": {"user_id": [1]}}
    )
    assert len(padded) > 1_000_000
    _error(_lookup(served.fast, padded.encode()), 413, "too_large", "at most 1000000")
    # no Content-Length (chunked): the limit holds while the body streams in
    host, port = served.fast.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    chunks = (padded[i : i + 65536].encode() for i in range(0, len(padded), 65536))
    conn.request(
        "POST",
        "/get-online-features",
        body=chunks,
        encode_chunked=True,
        headers={"Content-Type": "application/json"},
    )
    response = conn.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["error"]["code"] == "too_large"
    conn.close()


def test_wrong_method_and_path(served: Served) -> None:
    answer = _call(served.fast, "/get-online-features")
    _error(answer, 405, "method_not_allowed", "takes POST")
    assert answer.headers["allow"] == "POST"
    _error(_call(served.fast, "/nope"), 404, "not_found", "no route GET /nope")


# ---------------------------------------------------------------- extensions
def test_max_staleness_and_freshness(served: Served) -> None:
    u0, _ = USERS
    body = {
        "features": ["user_click_stats:clicks_last_1h", "user_profile:country"],
        "entities": {"user_id": [u0, UNKNOWN]},
        "include_freshness": True,
    }
    before = time.time_ns() // 1_000_000
    fresh = _lookup(served.fast, {**body, "max_staleness_ms": 3_600_000})
    after = time.time_ns() // 1_000_000
    stale = _lookup(served.fast, {**body, "max_staleness_ms": 1})
    newest = max(r["event_time"] for r in served.records["clicks"] if r["user_id"] == u0)
    cols = _columns(fresh.body)
    assert cols["clicks_last_1h"]["statuses"] == ["PRESENT", "PRESENT"]
    age = fresh.body["metadata"]["freshness"]["user_click_stats"]["newest_event_age_ms"]
    assert before - newest <= age[0] <= after - newest and age[1] is None
    cols = _columns(stale.body)
    assert cols["clicks_last_1h"]["values"][0] is None
    assert cols["clicks_last_1h"]["statuses"] == ["OUTSIDE_MAX_AGE", "PRESENT"]  # no events: 0
    assert cols["country"]["statuses"] == ["PRESENT", "PRESENT"]  # batch values are not stream


# ---------------------------------------------------------------- 4. other endpoints
def test_health_ready_features_and_metrics(served: Served) -> None:
    assert _call(served.fast, "/health").body == {"status": "ok"}
    ready = _call(served.fast, "/ready")
    assert ready.status == 200 and ready.body["project"] == "featurestream_demo"

    listing = _call(served.fast, "/features").body
    rows = {r["name"]: r for r in listing["features"]}
    clicks = rows["user_click_stats:clicks_last_5min"]
    assert (clicks["kind"], clicks["aggregation"], clicks["window"], clicks["entity"]) == (
        "stream",
        "count",
        "5min",
        "user_id",
    )
    assert (clicks["owner"], clicks["tags"], clicks["type"]) == (
        "features@featurestream.dev",
        {"team": "recsys"},
        "Int64",
    )
    assert rows["user_profile:country"]["kind"] == "batch"
    assert rows["user_profile:country"]["tags"]["pii"] == "true"
    assert rows["ctr_1h:ctr_1h"]["kind"] == "on_demand"
    assert "user_click_stats:user_id" not in rows
    services = {s["name"]: s for s in listing["feature_services"]}
    assert "user_click_stats:clicks_last_5min" in services["recommender_v1"]["features"]

    text = _call(served.fast, "/metrics").body
    path = "/get-online-features"
    ok = _metric(text, "featurestream_serving_requests_total", path=path, status="200")
    missing = _metric(text, "featurestream_serving_errors_total", code="not_found")
    body = {"feature_service": "recommender_v1", "entities": _entities(served)}
    for _ in range(3):
        assert _lookup(served.fast, body).status == 200
    assert (
        _lookup(served.fast, {"feature_service": "nope", "entities": {"user_id": [1]}}).status
        == 404
    )
    text = _call(served.fast, "/metrics").body
    assert _metric(text, "featurestream_serving_requests_total", path=path, status="200") == ok + 3
    assert _metric(text, "featurestream_serving_errors_total", code="not_found") == missing + 1
    assert (
        _metric(text, "featurestream_serving_request_duration_seconds_count", path=path) >= ok + 4
    )
    assert _metric(text, "featurestream_serving_in_flight") == 0.0
    assert (
        'featurestream_serving_request_duration_seconds_bucket{le="0.005",path="/get-online-features"}'
        in text
    )


# ---------------------------------------------------------------- 2b. Redis outages
def _redis(port: int, log: Path) -> _Process:
    server = _Process(redis_server_argv(port), log)
    wait_until(lambda: _port_open(port), 20, f"redis-server on {port}")
    return server


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture()
def outage(served: Served, tmp_path: Path) -> Iterator[tuple[str, Path, int, _Process]]:
    """A fast server on a private redis-server and repo copy (refreshes its registry often)."""
    redis_port = free_port()
    redis_server = _redis(redis_port, tmp_path / "redis.log")
    url = f"redis://127.0.0.1:{redis_port}/0"
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, url)
    server, base = _fast_server(
        tmp_path,
        repo,
        url,
        settings={"max_in_flight": 2, "redis_timeout_ms": 50, "registry_refresh_s": 0.5},
    )
    try:
        server.wait_http(f"{base}/ready")
        yield base, repo, redis_port, redis_server
    finally:
        server.stop()
        redis_server.stop()


def test_redis_outages_fail_fast_and_recover(
    outage: tuple[str, Path, int, _Process], tmp_path: Path
) -> None:
    base, _, redis_port, redis_server = outage
    body = {
        "features": ["user_click_stats:clicks_last_1h", "user_profile:country"],
        "entities": {"user_id": [1, 2]},
    }
    # every user's newest event time differs: a reply given to the wrong lookup shows
    newest = {u: 1_700_000_000_000 + u * 1000 for u in range(1, 20)}
    for user, ms in newest.items():
        redis.Redis.from_url(f"redis://127.0.0.1:{redis_port}/0").hset(
            f"fst:featurestream_demo:user_click_stats:{user}", "_last_ms", ms
        )

    def stamps(users: list[int], *, patient: bool = False) -> list[str]:
        deadline = time.monotonic() + 10
        while True:  # patient: the first answer that is not a 503 must be right
            answer = _lookup(base, {**body, "entities": {"user_id": users}})
            if not (patient and answer.status == 503 and time.monotonic() < deadline):
                break
        assert answer.status == 200, answer.body
        return list(_columns(answer.body)["clicks_last_1h"]["event_timestamps"])

    def expected(users: list[int]) -> list[str]:
        return [
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(newest[u] // 1000)) + "Z" for u in users
        ]

    assert stamps([1, 2]) == expected([1, 2])

    # hung (SIGSTOP): the deadline answers
    os.kill(redis_server.proc.pid, signal.SIGSTOP)
    try:
        answer = _lookup(base, body)
        _error(answer, 503, "online_store_unavailable", "did not answer within 50 ms")
        assert answer.seconds < 1.0 and answer.headers["retry-after"] == "1"
        ready = _call(base, "/ready")
        assert ready.status == 503 and ready.seconds < 1.0
        assert _call(base, "/health").status == 200

        # negative control: without a short deadline the same read hangs
        async def unbounded() -> None:
            reader = PipelinedRedisReader(f"redis://127.0.0.1:{redis_port}/0", timeout_ms=30_000)
            try:
                await asyncio.wait_for(reader.execute([("PING",)]), 1.0)
            finally:
                await reader.close()

        with pytest.raises(TimeoutError):
            asyncio.run(unbounded())
        for user in (3, 4, 5):  # lookups that give up while their commands are queued
            assert _lookup(base, {**body, "entities": {"user_id": [user]}}).status == 503
    finally:
        os.kill(redis_server.proc.pid, signal.SIGCONT)
    # the replies of the lookups that gave up are skipped, not handed to the next ones
    assert stamps([6, 7, 1], patient=True) == expected([6, 7, 1])

    # down (stopped): connection refused answers at once
    redis_server.stop()
    answer = _lookup(base, body)
    _error(answer, 503, "online_store_unavailable")
    assert answer.seconds < 1.0
    restarted = _redis(redis_port, tmp_path / "redis-2.log")
    try:
        wait_until(lambda: _lookup(base, body).status == 200, 10, "recovery after restart")
        assert _call(base, "/ready").status == 200
    finally:
        restarted.stop()


def test_more_lookups_in_flight_than_allowed_are_503(
    outage: tuple[str, Path, int, _Process],
) -> None:
    base = outage[0]
    host, port = base.removeprefix("http://").split(":")
    # two clients that never finish their body hold the two slots
    slow = []
    for _ in range(2):
        s = socket.create_connection((host, int(port)))
        s.sendall(
            b"POST /get-online-features HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        slow.append(s)
    try:
        wait_until(
            lambda: _metric(_call(base, "/metrics").body, "featurestream_serving_in_flight") == 2.0,
            10,
            "two lookups in flight",
        )
        answer = _lookup(
            base, {"features": ["user_click_stats:clicks_last_1h"], "entities": {"user_id": [1]}}
        )
        _error(answer, 503, "overloaded", "max_in_flight=2")
        assert answer.headers["retry-after"] == "1"
    finally:
        for s in slow:
            s.close()
    wait_until(
        lambda: (
            _lookup(
                base,
                {"features": ["user_click_stats:clicks_last_1h"], "entities": {"user_id": [1]}},
            ).status
            == 200
        ),
        10,
        "slots freed",
    )


def test_a_changed_registry_is_served_without_restart(
    outage: tuple[str, Path, int, _Process],
) -> None:
    base, repo, redis_port, _ = outage
    body = {"feature_service": "clicks_only_v1", "entities": {"user_id": [1]}}
    assert _lookup(base, body).status == 404
    before = _call(base, "/ready").body["registry"]
    (repo / "extra_service.py").write_text(
        "from feast import FeatureService\n"
        "from user_click_stats import user_click_stats\n"
        "clicks_only_v1 = FeatureService(name='clicks_only_v1', "
        "features=[user_click_stats[['clicks_last_1h']]])\n"
    )
    apply_repo(repo, f"redis://127.0.0.1:{redis_port}/0")
    wait_until(lambda: _lookup(base, body).status == 200, 15, "the new feature service")
    assert _columns(_lookup(base, body).body)["clicks_last_1h"]["values"] == [0]
    assert _call(base, "/ready").body["registry"] != before


# ---------------------------------------------------------------- 3. auth (+ TLS, 2 workers)
KEYS = {
    "k-recsys-000001": ["recommender_v1"],
    "k-analyst-00001": ["features"],
    "k-pii-000000001": ["pii"],
    "k-admin-0000001": "*",
}


@pytest.fixture(scope="module")
def secured(served: Served) -> Iterator[tuple[str, ssl.SSLContext]]:
    key, cert = served.tmp / "key.pem", served.tmp / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server, base = _fast_server(
        served.tmp,
        served.repo,
        served.stack.online_redis_url,
        workers=2,
        api_keys=KEYS,
        key=str(key),
        cert=str(cert),
    )
    try:
        server.wait_http(f"{base}/ready")
        yield base, ssl.create_default_context(cafile=str(cert))
    finally:
        server.stop()


def test_api_keys_grant_services_features_and_pii(
    served: Served, secured: tuple[str, ssl.SSLContext]
) -> None:
    base, tls = secured

    def call(body: Any, **headers: str) -> Answer:
        return _lookup(base, body, headers=headers, context=tls)

    service = {"feature_service": "recommender_v1", "entities": _entities(served)}
    fraud = {**service, "feature_service": "fraud_v1"}
    plain = {
        "features": ["user_click_stats:clicks_last_1h", "ctr_1h:ctr_1h"],
        "entities": {"user_id": USERS},
    }
    pii = {"features": ["user_profile:country"], "entities": {"user_id": USERS}}

    answer = call(service)
    _error(answer, 401, "unauthenticated", "Authorization: Bearer")
    assert answer.headers["www-authenticate"].startswith("Bearer")
    _error(
        call(service, Authorization="Bearer k-recsys-000002"), 401, "unauthenticated", "not valid"
    )

    assert call(service, Authorization="Bearer k-recsys-000001").status == 200
    _error(call(fraud, Authorization="Bearer k-recsys-000001"), 403, "forbidden", "'fraud_v1'")
    _error(
        call(plain, Authorization="Bearer k-recsys-000001"), 403, "forbidden", "raw feature lists"
    )

    assert call(plain, **{"X-API-Key": "k-analyst-00001"}).status == 200
    _error(
        call(pii, **{"X-API-Key": "k-analyst-00001"}), 403, "forbidden", "user_profile (tagged pii)"
    )
    assert call(pii, **{"X-API-Key": "k-pii-000000001"}).status == 200
    assert call(fraud, Authorization="Bearer k-admin-0000001").status == 200

    # served over TLS only; the listing needs a key, the probes do not
    with pytest.raises(urllib.error.URLError):
        _call(base, "/health", context=ssl.create_default_context())  # unknown CA
    assert _call(base, "/health", context=tls).status == 200
    assert _call(base, "/features", context=tls).status == 401
    assert (
        _call(base, "/features", headers={"X-API-Key": "k-analyst-00001"}, context=tls).status
        == 200
    )
