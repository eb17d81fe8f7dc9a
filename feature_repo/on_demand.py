"""Request-time features (Feast on-demand views, native python mode).

Missing values: every transform returns None (a missing value) instead of
dividing by zero or reading an absent input. Feast stores each function's source
and rebuilds it, so every function is self-contained (no module helpers).
- ctr_1h: None when the user had no impression in the last hour.
- spend_per_purchase_24h: None when there was no purchase in the last 24 h.
- seconds_since_last_click: None when there was no click in the last hour.
- price_vs_user_avg: None when the user's mean purchase is missing or 0.
"""

from typing import Any

from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from user_click_stats import user_click_stats
from user_impression_stats import user_impression_stats
from user_purchase_stats import user_purchase_stats

request_context = RequestSource(
    name="request_context",
    schema=[
        Field(name="request_time_ms", dtype=Int64, description="Time of the request, epoch ms."),
        Field(name="item_price", dtype=Float64, description="Price of the candidate item."),
    ],
)


@on_demand_feature_view(
    sources=[user_click_stats, user_impression_stats],
    schema=[Field(name="ctr_1h", dtype=Float64)],
    mode="python",
    description="Click-through rate over the last hour: clicks / impressions.",
)
def ctr_1h(inputs: dict[str, Any]) -> dict[str, Any]:
    out = []
    for clicks, shown in zip(inputs["clicks_last_1h"], inputs["impressions_last_1h"], strict=True):
        out.append(None if clicks is None or not shown else clicks / shown)
    return {"ctr_1h": out}


@on_demand_feature_view(
    sources=[user_purchase_stats],
    schema=[Field(name="spend_per_purchase_24h", dtype=Float64)],
    mode="python",
    description="Mean spend per purchase over the last 24 h.",
)
def spend_per_purchase_24h(inputs: dict[str, Any]) -> dict[str, Any]:
    out = []
    pairs = zip(inputs["purchase_amount_sum_24h"], inputs["purchase_count_24h"], strict=True)
    for total, count in pairs:
        out.append(None if total is None or not count else total / count)
    return {"spend_per_purchase_24h": out}


@on_demand_feature_view(
    sources=[user_click_stats, request_context],
    schema=[Field(name="seconds_since_last_click", dtype=Float64)],
    mode="python",
    description="Seconds from the user's last click (within the hour) to the request.",
)
def seconds_since_last_click(inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "seconds_since_last_click": [
            None if last is None or now is None else (now - last) / 1000.0
            for last, now in zip(inputs["last_click_ms_1h"], inputs["request_time_ms"], strict=True)
        ]
    }


@on_demand_feature_view(
    sources=[user_purchase_stats, request_context],
    schema=[Field(name="price_vs_user_avg", dtype=Float64)],
    mode="python",
    description="Candidate item price over the user's mean purchase in the last 24 h.",
)
def price_vs_user_avg(inputs: dict[str, Any]) -> dict[str, Any]:
    out = []
    for price, mean in zip(inputs["item_price"], inputs["purchase_amount_mean_24h"], strict=True):
        out.append(None if price is None or not mean else price / mean)
    return {"price_vs_user_avg": out}
