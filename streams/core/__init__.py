"""The pure aggregation core: specs, aggregators, tiles. No I/O, no frameworks."""

from .aggregators import AGGREGATORS, Aggregator, aggregator_for
from .spec import AggregationSpec, ViewSpec, default_tile_ms
from .tiles import (
    LAST_EVENT_FIELD,
    EntityTiles,
    TileUpdate,
    decode_tiles,
    entity_id,
    read_view,
    read_window,
    tile_field,
    tile_key,
    window_tile_range,
)

__all__ = [
    "AGGREGATORS",
    "LAST_EVENT_FIELD",
    "AggregationSpec",
    "Aggregator",
    "EntityTiles",
    "TileUpdate",
    "ViewSpec",
    "aggregator_for",
    "decode_tiles",
    "default_tile_ms",
    "entity_id",
    "read_view",
    "read_window",
    "tile_field",
    "tile_key",
    "window_tile_range",
]
