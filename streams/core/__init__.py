"""The pure aggregation core: specs, aggregators, tiles, the event-time gate and the
brute-force reference. No I/O, no frameworks."""

from .aggregators import AGGREGATORS, Aggregator, Partial, aggregator_for
from .spec import AggregationSpec, ViewSpec, default_tile_ms
from .tiles import (
    CLOCK_SKEW_MS,
    EntityTiles,
    StoredTiles,
    Tile,
    TileUpdate,
    entity_id,
    read_view,
    read_window,
    window_tile_range,
)

__all__ = [
    "AGGREGATORS",
    "CLOCK_SKEW_MS",
    "AggregationSpec",
    "Aggregator",
    "EntityTiles",
    "Partial",
    "StoredTiles",
    "Tile",
    "TileUpdate",
    "ViewSpec",
    "aggregator_for",
    "default_tile_ms",
    "entity_id",
    "read_view",
    "read_window",
    "window_tile_range",
]
