"""Tile arithmetic, specs and per-entity tile state, judged by the brute-force oracle.

The oracle (``streams.core.reference``) restates the window contract over raw events;
the engine's value is read back from what its tile updates leave in an online store
(the port's in-memory implementation; ``tests/integration/test_online_store.py`` runs
the same updates against Redis).
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.clock import fixed_clock
from streams.core import (
    AggregationSpec,
    EntityTiles,
    TileUpdate,
    ViewSpec,
    default_tile_ms,
    read_window,
    window_tile_range,
)
from streams.core.reference import view_values
from streams.online.memory import MemoryOnlineStore

PROPERTY = settings(max_examples=60, deadline=None)
KEY = "7"  # the entity
SKEW = 300_000  # the clock skew an event time may have (featurestream.events.MAX_FUTURE_MS)


def _view(*aggs: AggregationSpec, lateness_ms: int = 0, **changes: Any) -> ViewSpec:
    view = ViewSpec(
        project="p",
        name="v",
        topic="purchases",
        join_keys=("user_id",),
        timestamp_field="event_time",
        allowed_lateness_ms=lateness_ms,
        aggregations=aggs,
    )
    return dataclasses.replace(view, **changes)


def _event(t: int, amount: float = 1.0, item: int = 1) -> dict[str, Any]:
    return {"event_id": f"e{t}", "user_id": 7, "item_id": item, "amount": amount, "event_time": t}


def _stored(view: ViewSpec, updates: list[TileUpdate], read_time_ms: int) -> MemoryOnlineStore:
    """An online store after the updates (written one by one, in order)."""
    store = MemoryOnlineStore(clock=fixed_clock(read_time_ms))
    for u in updates:
        assert (u.project, u.view, u.entity) == (view.project, view.name, KEY)
        store.write([u], project=view.project)
    return store


# ------------------------------------------------------------------ tile arithmetic


@pytest.mark.parametrize(
    ("read_time_ms", "window_ms", "tile_ms", "expected"),
    [
        # exactly at a tile boundary: the read's own tile is the new, last one
        (1_000_000, 300_000, 5_000, range(140, 201)),
        # one ms before the boundary: every tile one step earlier
        (999_999, 300_000, 5_000, range(139, 200)),
        (1_000_001, 300_000, 5_000, range(140, 201)),
        (0, 300_000, 5_000, range(-60, 1)),
        (59_999, 60_000, 60_000, range(-1, 1)),
        (60_000, 60_000, 60_000, range(0, 2)),
        (7_000, 1_000, 1_000, range(6, 8)),
    ],
)
def test_window_tile_range(
    read_time_ms: int, window_ms: int, tile_ms: int, expected: range
) -> None:
    assert window_tile_range(read_time_ms, window_ms, tile_ms) == expected


@PROPERTY
@given(
    read_time_ms=st.integers(0, 10**13),
    tile_ms=st.integers(1, 120_000),
    tiles=st.integers(1, 200),
)
def test_window_tile_range_covers_the_contract(read_time_ms: int, tile_ms: int, tiles: int) -> None:
    window_ms = tiles * tile_ms
    r = window_tile_range(read_time_ms, window_ms, tile_ms)
    assert len(r) == tiles + 1
    assert r[-1] * tile_ms <= read_time_ms < (r[-1] + 1) * tile_ms
    assert r[0] * tile_ms == (read_time_ms // tile_ms) * tile_ms - window_ms


@pytest.mark.parametrize(
    ("window_ms", "tile_ms"),
    [
        (300_000, 5_000),
        (3_600_000, 60_000),
        (30_000, 1_000),
        (1_000, 1_000),
        (600_000, 10_000),
        (86_400_000, 1_440_000),
    ],
)
def test_default_tile_ms(window_ms: int, tile_ms: int) -> None:
    assert default_tile_ms(window_ms) == tile_ms


# ------------------------------------------------------------------ spec identities

BASE_AGG = AggregationSpec("clicks_5m", "count", "event_id", 300_000, 5_000)


@pytest.mark.parametrize(
    ("changes", "same_slot"),
    [
        ({"function": "count_distinct"}, False),
        ({"column": "item_id"}, False),
        ({"tile_ms": 10_000}, False),
        ({"window_ms": 600_000}, True),
        ({"name": "renamed"}, True),
        ({}, True),
    ],
)
def test_slot_identity(changes: dict[str, Any], same_slot: bool) -> None:
    changed = dataclasses.replace(BASE_AGG, **changes)
    assert (changed.slot == BASE_AGG.slot) is same_slot


def test_aggregations_sharing_a_slot_share_tiles() -> None:
    short = AggregationSpec("c5", "count", "event_id", 300_000, 5_000)
    long = AggregationSpec("c10", "count", "event_id", 600_000, 5_000)
    other = AggregationSpec("d10", "count_distinct", "item_id", 600_000, 5_000)
    view = _view(short, long, other)
    assert list(view.slots) == [short.slot, other.slot]
    assert view.retention_ms == 600_000 + 5_000


BASE_VIEW = _view(
    AggregationSpec("n_5m", "count", "event_id", 300_000, 5_000),
    AggregationSpec("spent_1h", "sum", "amount", 3_600_000, 60_000),
    lateness_ms=30_000,
)


def _with_agg(index: int, **changes: Any) -> tuple[AggregationSpec, ...]:
    aggs = list(BASE_VIEW.aggregations)
    aggs[index] = dataclasses.replace(aggs[index], **changes)
    return tuple(aggs)


STATE_CHANGES = [
    pytest.param({"project": "q"}, id="project"),
    pytest.param({"name": "w"}, id="view-name"),
    pytest.param({"topic": "clicks"}, id="topic"),
    pytest.param({"join_keys": ("user_id", "item_id")}, id="join-keys"),
    pytest.param({"timestamp_field": "ts"}, id="timestamp-field"),
    pytest.param({"allowed_lateness_ms": 60_000}, id="lateness"),
    pytest.param({"aggregations": _with_agg(0, function="count_distinct")}, id="function"),
    pytest.param({"aggregations": _with_agg(1, column="item_id")}, id="column"),
    pytest.param({"aggregations": _with_agg(1, tile_ms=30_000)}, id="tile"),
    pytest.param(
        {"aggregations": _with_agg(0, window_ms=3_600_000)},
        id="window",
    ),
    pytest.param({"aggregations": BASE_VIEW.aggregations[:1]}, id="aggregation-removed"),
    pytest.param({"aggregations": (*BASE_VIEW.aggregations, BASE_AGG)}, id="aggregation-added"),
]


@pytest.mark.parametrize("changes", STATE_CHANGES)
def test_state_id_changes_with_any_definition_change(changes: dict[str, Any]) -> None:
    assert dataclasses.replace(BASE_VIEW, **changes).state_id != BASE_VIEW.state_id


def test_state_id_is_stable_for_an_equal_definition() -> None:
    rebuilt = dataclasses.replace(BASE_VIEW, aggregations=tuple(BASE_VIEW.aggregations))
    assert rebuilt.state_id == BASE_VIEW.state_id
    assert len(BASE_VIEW.state_id) == 8


# ------------------------------------------------------------------ EntityTiles

COUNT_10S = AggregationSpec("n_10s", "count", "event_id", 10_000, 1_000)


def test_eviction_deletes_tiles_older_than_retention_before_the_newest_event() -> None:
    view = _view(COUNT_10S)  # retention = 10 s window + 1 s tile + 0 lateness
    assert view.retention_ms == 11_000
    slot = COUNT_10S.slot
    state = EntityTiles()
    first = state.apply(view, KEY, _event(500))
    assert first.deletes == ()
    assert first.encoded() == {(slot, 0): b"1"}
    assert first.newest_event_ms == 500
    assert first.ttl_ms == 11_000 + SKEW  # retention + the allowed clock skew of 5 min
    # Tiles are kept for the retention plus the skew: the newest event may be up to the
    # skew ahead of the clock of the reads that still need them.
    # horizon 311_999 - 311_000 = 999 -> the oldest kept tile is 0: nothing goes
    assert state.apply(view, KEY, _event(SKEW + 11_999)).deletes == ()
    assert set(state.tiles[slot]) == {0, 311}
    # horizon 1_000 -> tile 0 (0..999 ms) is older than that: deleted and reported
    update = state.apply(view, KEY, _event(SKEW + 12_000))
    assert update.deletes == ((slot, 0),)
    assert set(state.tiles[slot]) == {311, 312}
    assert state.max_event_ms == SKEW + 12_000


def test_an_older_event_neither_evicts_nor_moves_the_newest_time() -> None:
    view = _view(COUNT_10S)
    state = EntityTiles()
    state.apply(view, KEY, _event(20_000))
    update = state.apply(view, KEY, _event(15_000))
    assert update.deletes == ()
    assert update.newest_event_ms is None
    assert update.encoded() == {(COUNT_10S.slot, 15): b"1"}
    assert state.max_event_ms == 20_000


def test_eviction_reports_every_slot() -> None:
    a = AggregationSpec("n", "count", "event_id", 10_000, 1_000)
    b = AggregationSpec("s", "sum", "amount", 10_000, 2_000)
    view = _view(a, b)  # retention = 12 s
    state = EntityTiles()
    state.apply(view, KEY, _event(0))
    update = state.apply(view, KEY, _event(SKEW + 20_000))
    assert sorted(update.deletes) == sorted([(a.slot, 0), (b.slot, 0)])


def test_each_slot_keeps_its_own_windows_tiles_only() -> None:
    short = AggregationSpec("n_10s", "count", "event_id", 10_000, 1_000)
    long = AggregationSpec("n_100s", "count", "event_id", 100_000, 10_000)
    view = _view(short, long)  # view retention 110 s; the 1-s slot needs 11 s (+ skew)
    state = EntityTiles()
    state.apply(view, KEY, _event(0))
    update = state.apply(view, KEY, _event(SKEW + 12_000))
    assert update.deletes == ((short.slot, 0),)  # the 10-s tile 0 stays
    assert set(state.tiles[long.slot]) == {0, (SKEW + 12_000) // 10_000}


def test_entity_tiles_pickles_to_an_equal_state_that_resumes_identically() -> None:
    view = _view(
        COUNT_10S,
        AggregationSpec("d", "count_distinct", "item_id", 10_000, 1_000),
        AggregationSpec("l", "last", "amount", 10_000, 1_000),
    )
    state = EntityTiles()
    for t, item in [(100, 1), (2_500, 2), (2_700, 1), (9_000, 3)]:
        state.apply(view, KEY, _event(t, amount=t / 100, item=item))
    restored = pickle.loads(pickle.dumps(state))
    assert restored.tiles == state.tiles
    assert restored.max_event_ms == state.max_event_ms
    assert restored.tiles is not state.tiles
    for t in (9_500, 14_000, 30_000):
        assert restored.apply(view, KEY, _event(t)) == state.apply(view, KEY, _event(t))
    assert restored.tiles == state.tiles


def test_fresh_entity_tiles_pickles() -> None:
    restored = pickle.loads(pickle.dumps(EntityTiles()))
    assert restored.tiles == {}
    assert restored.max_event_ms == -1


# ------------------------------------------------------------------ against the oracle

FUNCTION_COLUMNS = [
    ("count", "event_id"),
    ("sum", "amount"),
    ("mean", "amount"),
    ("min", "amount"),
    ("max", "amount"),
    ("count_distinct", "item_id"),
    ("last", "amount"),
]


@st.composite
def aggregations(draw: st.DrawFn) -> tuple[AggregationSpec, ...]:
    chosen = draw(st.lists(st.sampled_from(FUNCTION_COLUMNS), min_size=1, max_size=4))
    out = []
    for i, (function, column) in enumerate(chosen):
        tile_ms = draw(st.sampled_from([1_000, 2_000, 5_000]))
        window_ms = tile_ms * draw(st.integers(1, 12))
        out.append(AggregationSpec(f"f{i}", function, column, window_ms, tile_ms))
    return tuple(out)


events_strategy = st.lists(
    st.builds(
        _event,
        st.integers(0, 120_000),
        st.integers(0, 50).map(float),  # integer-valued: sums are exact in any order
        st.integers(1, 5),
    ),
    min_size=1,
    max_size=60,
)


@PROPERTY
@given(
    aggs=aggregations(),
    lateness_ms=st.sampled_from([0, 3_000]),
    events=events_strategy,
    data=st.data(),
)
def test_reads_match_the_oracle(
    aggs: tuple[AggregationSpec, ...],
    lateness_ms: int,
    events: list[dict[str, Any]],
    data: st.DataObject,
) -> None:
    view = _view(*aggs, lateness_ms=lateness_ms)
    # Arrival order is arbitrary (out of order, any lateness): reads at or after the
    # newest event must not depend on it.
    arrival = data.draw(st.permutations(events), label="arrival")
    state = EntityTiles()
    updates = [state.apply(view, KEY, e) for e in arrival]
    newest = max(e["event_time"] for e in events)
    longest = max(a.window_ms + a.tile_ms for a in aggs)
    read_times = data.draw(
        st.lists(st.integers(newest, newest + longest + 1_000), min_size=1, max_size=4),
        label="read_times",
    )
    for t in read_times:
        expected = view_values(events, view, t)
        ((online, online_newest),) = _stored(view, updates, t).read([(view, [KEY])], t)[0]
        assert online_newest == newest
        assert online == expected
        # The in-memory state gives the same values as the online hash.
        assert {
            a.name: read_window(a, state.tiles.get(a.slot, {}), t) for a in view.aggregations
        } == expected


@PROPERTY
@given(aggs=aggregations(), events=events_strategy, data=st.data())
def test_online_tiles_mirror_the_state(
    aggs: tuple[AggregationSpec, ...], events: list[dict[str, Any]], data: st.DataObject
) -> None:
    view = _view(*aggs)
    arrival = data.draw(st.permutations(events), label="arrival")
    state = EntityTiles()
    updates = [state.apply(view, KEY, e) for e in arrival]
    newest = max(e["event_time"] for e in events)
    ((stored,),) = _stored(view, updates, newest).read_tiles([(view, [KEY])])
    assert stored is not None
    assert stored.tiles == state.tiles  # decoded from the bytes the updates encoded
    assert stored.newest_event_ms == state.max_event_ms


@PROPERTY
@given(aggs=aggregations(), events=events_strategy)
def test_in_order_events_keep_only_tiles_within_retention(
    aggs: tuple[AggregationSpec, ...], events: list[dict[str, Any]]
) -> None:
    view = _view(*aggs)
    state = EntityTiles()
    for e in sorted(events, key=lambda e: e["event_time"]):
        state.apply(view, KEY, e)
    for slot, tiles in state.tiles.items():
        tile_ms = view.slots[slot].tile_ms
        keep = max(a.window_ms + a.tile_ms for a in aggs if a.slot == slot)
        horizon_ms = state.max_event_ms - keep - view.allowed_lateness_ms - SKEW
        # a tile is kept while any of its ms is within its slot's retention of the newest
        # event; the older ones are gone
        assert all((i + 1) * tile_ms > horizon_ms for i in tiles)
        kept = {e["event_time"] // tile_ms for e in events if e["event_time"] >= horizon_ms}
        assert kept <= set(tiles)


@PROPERTY
@given(aggs=aggregations(), events=events_strategy, later=events_strategy)
def test_a_packed_state_unpacks_to_one_that_resumes_identically(
    aggs: tuple[AggregationSpec, ...],
    events: list[dict[str, Any]],
    later: list[dict[str, Any]],
) -> None:
    view = _view(*aggs, lateness_ms=3_000)
    state = EntityTiles()
    state.apply_all(view, KEY, events)
    packed = state.pack()
    restored = EntityTiles.unpack(view, packed)
    assert restored.tiles == state.tiles
    assert restored.max_event_ms == state.max_event_ms
    assert len(packed) < len(pickle.dumps(state))
    for event in later:
        assert restored.apply(view, KEY, event) == state.apply(view, KEY, event)
    assert restored.tiles == state.tiles
