"""Impressions per user, computed by the featurestream engine from the impressions topic."""

from datetime import timedelta

from entities import user
from feast import Field
from feast.aggregation import Aggregation
from feast.stream_feature_view import StreamFeatureView
from feast.types import Int64
from sources import impressions_source

user_impression_stats = StreamFeatureView(
    name="user_impression_stats",
    entities=[user],
    source=impressions_source,
    timestamp_field="event_time",
    ttl=timedelta(hours=1),
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(
            name="impressions_last_1h",
            dtype=Int64,
            description="Items shown to the user in the last hour (event time).",
        ),
    ],
    aggregations=[
        Aggregation(
            column="event_id",
            function="count",
            time_window=timedelta(hours=1),
            name="impressions_last_1h",
        ),
    ],
    online=True,
    description="Impressions per user, exact at read time.",
    owner="features@featurestream.dev",
    tags={"team": "recsys"},
)
