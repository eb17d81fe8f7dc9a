"""Purchases per user over the last 24 hours, computed by the featurestream engine."""

from datetime import timedelta

from entities import user
from feast import Field
from feast.aggregation import Aggregation
from feast.stream_feature_view import StreamFeatureView
from feast.types import Float64, Int64
from sources import purchases_source

DAY = timedelta(hours=24)

user_purchase_stats = StreamFeatureView(
    name="user_purchase_stats",
    entities=[user],
    source=purchases_source,
    timestamp_field="event_time",
    ttl=DAY,
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="purchase_count_24h", dtype=Int64, description="Purchases in the last 24 h."),
        Field(
            name="purchase_amount_sum_24h",
            dtype=Float64,
            description="Total amount of the purchases in the last 24 h.",
        ),
        Field(
            name="purchase_amount_max_24h",
            dtype=Float64,
            description="Largest purchase amount in the last 24 h (missing when none).",
        ),
        Field(
            name="purchase_amount_mean_24h",
            dtype=Float64,
            description="Mean purchase amount in the last 24 h (missing when none).",
        ),
    ],
    aggregations=[
        Aggregation(
            column="event_id", function="count", time_window=DAY, name="purchase_count_24h"
        ),
        Aggregation(
            column="amount", function="sum", time_window=DAY, name="purchase_amount_sum_24h"
        ),
        Aggregation(
            column="amount", function="max", time_window=DAY, name="purchase_amount_max_24h"
        ),
        Aggregation(
            column="amount", function="mean", time_window=DAY, name="purchase_amount_mean_24h"
        ),
    ],
    online=True,
    description="Purchase activity per user over a sliding day, exact at read time.",
    owner="features@featurestream.dev",
    tags={"team": "fraud"},
)
