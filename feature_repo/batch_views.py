"""Batch feature views from Parquet (made by `featurestream seed-data`), loaded online by
`featurestream materialize` (or `feast materialize-incremental`)."""

from datetime import timedelta

from entities import item, user
from feast import FeatureView, Field, FileSource
from feast.types import Float64, Int64, String, UnixTimestamp

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="country", dtype=String, description="ISO 3166 country code of the user."),
        Field(name="segment", dtype=String, description="Marketing segment."),
        Field(name="age", dtype=Int64, description="Age in years."),
        Field(name="signup_date", dtype=UnixTimestamp, description="When the user signed up."),
    ],
    source=FileSource(
        name="user_profile_source",
        path="data/user_profile.parquet",
        timestamp_field="event_timestamp",
    ),
    online=True,
    description="Slowly changing user attributes.",
    owner="crm@featurestream.dev",
    tags={"pii": "true", "team": "crm"},
)

item_features = FeatureView(
    name="item_features",
    entities=[item],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="category", dtype=String, description="Catalogue category."),
        Field(name="price", dtype=Float64, description="Current list price."),
        Field(name="popularity", dtype=Float64, description="Share of last week's views, 0..1."),
    ],
    source=FileSource(
        name="item_features_source",
        path="data/item_features.parquet",
        timestamp_field="event_timestamp",
    ),
    online=True,
    description="Catalogue attributes of items.",
    owner="catalogue@featurestream.dev",
    tags={"team": "catalogue"},
)
