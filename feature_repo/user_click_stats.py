"""Click activity per user, computed by the featurestream engine from the clicks topic."""

from datetime import timedelta

from entities import user
from feast import Field
from feast.aggregation import Aggregation
from feast.stream_feature_view import StreamFeatureView
from feast.types import Float64, Int64
from sources import clicks_source

user_click_stats = StreamFeatureView(
    name="user_click_stats",
    entities=[user],
    source=clicks_source,
    timestamp_field="event_time",
    ttl=timedelta(hours=1),
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(
            name="clicks_last_5min",
            dtype=Int64,
            description="Clicks by the user in the last 5 minutes (event time).",
        ),
        Field(
            name="clicks_last_1h",
            dtype=Int64,
            description="Clicks by the user in the last hour (event time).",
        ),
        Field(
            name="distinct_items_1h",
            dtype=Int64,
            description="Distinct items the user clicked in the last hour.",
        ),
        Field(
            name="last_click_ms_1h",
            dtype=Float64,
            description="Event time (epoch ms) of the user's last click within the hour.",
        ),
    ],
    aggregations=[
        Aggregation(
            column="event_id",
            function="count",
            time_window=timedelta(minutes=5),
            name="clicks_last_5min",
        ),
        Aggregation(
            column="event_id",
            function="count",
            time_window=timedelta(hours=1),
            name="clicks_last_1h",
        ),
        Aggregation(
            column="item_id",
            function="count_distinct",
            time_window=timedelta(hours=1),
            name="distinct_items_1h",
        ),
        Aggregation(
            column="event_time",
            function="last",
            time_window=timedelta(hours=1),
            name="last_click_ms_1h",
        ),
    ],
    online=True,
    description="Click activity per user, exact at read time.",
    owner="features@featurestream.dev",
    tags={"team": "recsys"},
)
