"""Errors of the fast server (one JSON shape, the right status, near-match hints), its
extensions (staleness, freshness) and its other endpoints."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest

from tests.integration.server.client import (
    call,
    columns,
    expect_error,
    lookup,
    metric,
)
from tests.integration.server.conftest import UNKNOWN, USERS, Served, entities_of


def test_unknown_names_are_404_with_near_matches(served: Served) -> None:
    answer = lookup(
        served.fast,
        {"features": ["user_click_stats:clicks_last_5m"], "entities": {"user_id": [1]}},
        headers={"X-Request-ID": "req-near-1"},
    )
    expect_error(
        answer,
        404,
        "not_found",
        "'user_click_stats:clicks_last_5m'",
        "did you mean user_click_stats:clicks_last_5min",
    )
    assert answer.headers["x-request-id"] == "req-near-1"
    answer = lookup(
        served.fast, {"feature_service": "recommender_v2", "entities": {"user_id": [1]}}
    )
    expect_error(answer, 404, "not_found", "'recommender_v2'", "did you mean recommender_v1")
    answer = lookup(
        served.fast, {"features": ["user_clicks:clicks_last_1h"], "entities": {"user_id": [1]}}
    )
    expect_error(answer, 404, "not_found", "did you mean user_click_stats:clicks_last_1h")


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
    expect_error(lookup(served.fast, body), 422, "invalid_request", *needles)


def test_too_large_requests_are_413(served: Served) -> None:
    many = {
        "features": ["user_click_stats:clicks_last_1h"],
        "entities": {"user_id": list(range(1001))},
    }
    expect_error(lookup(served.fast, many), 413, "too_large", "1001 values", "at most 1000")
    padded = json.dumps(
        {"features": ["user_click_stats:clicks_last_1h"] * 40_000, "entities": {"user_id": [1]}}
    )
    assert len(padded) > 1_000_000
    expect_error(lookup(served.fast, padded.encode()), 413, "too_large", "at most 1000000")
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
    answer = call(served.fast, "/get-online-features")
    expect_error(answer, 405, "method_not_allowed", "takes POST")
    assert answer.headers["allow"] == "POST"
    expect_error(call(served.fast, "/nope"), 404, "not_found", "no route GET /nope")


def test_max_staleness_and_freshness(served: Served) -> None:
    u0, _ = USERS
    body = {
        "features": ["user_click_stats:clicks_last_1h", "user_profile:country"],
        "entities": {"user_id": [u0, UNKNOWN]},
        "include_freshness": True,
    }
    before = time.time_ns() // 1_000_000
    fresh = lookup(served.fast, {**body, "max_staleness_ms": 3_600_000})
    after = time.time_ns() // 1_000_000
    stale = lookup(served.fast, {**body, "max_staleness_ms": 1})
    newest = max(r["event_time"] for r in served.records["clicks"] if r["user_id"] == u0)
    cols = columns(fresh.body)
    assert cols["clicks_last_1h"]["statuses"] == ["PRESENT", "PRESENT"]
    age = fresh.body["metadata"]["freshness"]["user_click_stats"]["newest_event_age_ms"]
    assert before - newest <= age[0] <= after - newest and age[1] is None
    cols = columns(stale.body)
    assert cols["clicks_last_1h"]["values"][0] is None
    assert cols["clicks_last_1h"]["statuses"] == ["OUTSIDE_MAX_AGE", "PRESENT"]  # no events: 0
    assert cols["country"]["statuses"] == ["PRESENT", "PRESENT"]  # batch values are not stream


def test_health_ready_features_and_metrics(served: Served) -> None:
    assert call(served.fast, "/health").body == {"status": "ok"}
    ready = call(served.fast, "/ready")
    assert ready.status == 200 and ready.body["project"] == "featurestream_demo"

    listing = call(served.fast, "/features").body
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

    text = call(served.fast, "/metrics").body
    path = "/get-online-features"
    ok = metric(text, "featurestream_serving_requests_total", path=path, status="200")
    missing = metric(text, "featurestream_serving_errors_total", code="not_found")
    body = {"feature_service": "recommender_v1", "entities": entities_of(served)}
    for _ in range(3):
        assert lookup(served.fast, body).status == 200
    assert (
        lookup(served.fast, {"feature_service": "nope", "entities": {"user_id": [1]}}).status == 404
    )
    text = call(served.fast, "/metrics").body
    assert metric(text, "featurestream_serving_requests_total", path=path, status="200") == ok + 3
    assert metric(text, "featurestream_serving_errors_total", code="not_found") == missing + 1
    assert metric(text, "featurestream_serving_request_duration_seconds_count", path=path) >= ok + 4
    assert metric(text, "featurestream_serving_in_flight") == 0.0
    # the online store's own figures, read at the scrape
    assert metric(text, "featurestream_online_store_used_bytes") > 0
    assert metric(text, "featurestream_online_store_keys") > 0
    assert "featurestream_online_store_evicted_keys " in text
    assert metric(text, "featurestream_online_store_evicting", policy="noeviction") == 0.0
    assert (
        'featurestream_serving_request_duration_seconds_bucket{le="0.005",path="/get-online-features"}'
        in text
    )
