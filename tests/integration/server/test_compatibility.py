"""The fast server answers as Feast's own server does, with the engine's values, and its
online-store readers agree with each other."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pyarrow.parquet as pq
import pytest
import redis

from serving.catalog import Catalog
from serving.lookup import bind
from serving.plan import plan_for
from serving.registry import StoreRegistry
from serving.request import parse_request
from streams.core import StoredTiles
from streams.definitions import compile_view
from streams.online import connect_online_store
from streams.online.redis.reader import PipelinedRedisReader, make_reader
from streams.repo import open_store
from tests.integration.server.client import (
    Answer,
    columns,
    lookup,
)
from tests.integration.server.conftest import ODFV_FULL, UNKNOWN, USERS, Served, entities_of


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
    ours_cols, feast_cols = columns(o), columns(f)
    assert {n: ours_cols[n] for n in names_f} == feast_cols


@pytest.mark.parametrize("full_feature_names", [False, True])
@pytest.mark.parametrize("service", ["recommender_v1", "fraud_v1"])
def test_feature_services_answer_as_feast_serve(
    served: Served, service: str, full_feature_names: bool
) -> None:
    body = {
        "feature_service": service,
        "entities": entities_of(served),
        "full_feature_names": full_feature_names,
    }
    ours, feast = lookup(served.fast, body), lookup(served.feast, body)
    # Feast 0.67 drops python-mode on-demand outputs under full names (their UDFs
    # return short names); this server returns them.
    extra = ODFV_FULL[service] if full_feature_names else []
    _assert_same_as_feast(ours, feast, extra)
    if full_feature_names:
        short = columns(lookup(served.fast, {**body, "full_feature_names": False}).body)
        for name in extra:
            assert columns(ours.body)[name] == short[name.split("__")[1]]


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
        "entities": entities_of(served),
        "include_feature_view_version_metadata": True,
    }
    _assert_same_as_feast(lookup(served.fast, body), lookup(served.feast, body), [])


def test_values_match_the_events_and_the_tile_store(served: Served) -> None:
    u0, u1 = USERS
    answer = lookup(
        served.fast, {"feature_service": "recommender_v1", "entities": entities_of(served)}
    )
    cols = columns(answer.body)
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
    body = {"feature_service": "fraud_v1", "entities": entities_of(served)}
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
