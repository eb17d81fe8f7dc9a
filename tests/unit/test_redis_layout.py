"""The Redis layout of the online store (pure: keys, fields, decoding)."""

from __future__ import annotations

from streams.core import AggregationSpec, ViewSpec, read_view
from streams.online import ViewState
from streams.online.redis.layout import (
    LAST_EVENT_FIELD,
    decode_tiles,
    entity_of_key,
    marker_key,
    progress_key,
    tile_field,
    tile_key,
)


def _view(*aggs: AggregationSpec) -> ViewSpec:
    return ViewSpec(
        project="p",
        name="v",
        topic="purchases",
        join_keys=("user_id",),
        timestamp_field="event_time",
        allowed_lateness_ms=0,
        aggregations=aggs,
    )


def test_decode_tiles_ignores_unknown_slots_and_the_last_event_field() -> None:
    count = AggregationSpec("n", "count", "event_id", 10_000, 1_000)
    total = AggregationSpec("s", "sum", "amount", 10_000, 1_000)
    view = _view(count, total)
    assert "zzzzzz" not in view.slots
    raw: dict[bytes, bytes] = {
        tile_field(count.slot, 4).encode(): b"3",
        tile_field(count.slot, 5).encode(): b"1",
        b"zzzzzz:4": b"not a partial of any aggregator",
        LAST_EVENT_FIELD.encode(): b"5123",
    }
    stored = decode_tiles(view, raw)
    assert stored.tiles == {count.slot: {4: 3, 5: 1}, total.slot: {}}
    assert stored.newest_event_ms == 5123
    assert read_view(view, stored, 5_123) == {"n": 4, "s": 0.0}


def test_keys_name_the_project_view_and_entity() -> None:
    key = tile_key("p", "v", '[1,"a"]')
    assert key == 'fst:p:v:[1,"a"]'
    assert entity_of_key("p", "v", key.encode()) == '[1,"a"]'
    state = ViewState("p", "v", "abc")
    assert marker_key(state) == "fst:p:_online:v:abc"
    assert progress_key(state) == "fst:p:_progress:v:abc"
