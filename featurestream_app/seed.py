"""Deterministic batch data for the demo domain (``featurestream seed-data``)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from producers import zipf_cdf

__all__ = ["ITEM_SCHEMA", "PROFILE_SCHEMA", "seed_data"]

COUNTRIES = ("DE", "FR", "US", "GB", "ES", "IT", "NL", "PL")
SEGMENTS = ("new", "casual", "loyal", "vip")
CATEGORIES = ("books", "games", "garden", "kitchen", "music", "sports", "toys", "tech")
# Batch rows are valid from this time on (a fixed date keeps the data deterministic).
VALID_FROM = datetime(2024, 1, 1, tzinfo=UTC)

PROFILE_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("country", pa.string()),
        pa.field("segment", pa.string()),
        pa.field("age", pa.int64()),
        pa.field("signup_date", pa.timestamp("us", tz="UTC")),
        pa.field("event_timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
ITEM_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.int64(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("popularity", pa.float64()),
        pa.field("event_timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def seed_data(data_dir: Path, *, first_user: int, users: int, items: int, seed: int = 0) -> None:
    """Write ``user_profile.parquet`` and ``item_features.parquet`` into ``data_dir``.

    The same arguments give the same files.
    """
    rng = np.random.default_rng(seed)
    data_dir.mkdir(parents=True, exist_ok=True)
    valid_us = int(VALID_FROM.timestamp() * 1_000_000)
    five_years_us = 5 * 365 * 86_400 * 1_000_000
    profile = pa.table(
        {
            "user_id": np.arange(first_user, first_user + users, dtype=np.int64),
            "country": [COUNTRIES[i] for i in rng.integers(0, len(COUNTRIES), users)],
            "segment": [SEGMENTS[i] for i in rng.integers(0, len(SEGMENTS), users)],
            "age": rng.integers(18, 81, users),
            "signup_date": valid_us - rng.integers(0, five_years_us, users),
            "event_timestamp": np.full(users, valid_us, dtype=np.int64),
        },
        schema=PROFILE_SCHEMA,
    )
    pq.write_table(profile, data_dir / "user_profile.parquet")
    share = np.diff(zipf_cdf(items, 1.1), prepend=0.0)
    catalogue = pa.table(
        {
            "item_id": np.arange(1, items + 1, dtype=np.int64),
            "category": [CATEGORIES[i] for i in rng.integers(0, len(CATEGORIES), items)],
            "price": np.round(rng.lognormal(3.0, 0.8, items), 2),
            "popularity": share,
            "event_timestamp": np.full(items, valid_us, dtype=np.int64),
        },
        schema=ITEM_SCHEMA,
    )
    pq.write_table(catalogue, data_dir / "item_features.parquet")
