"""The backfill's pure accumulation and the whole-state online write, against the oracle."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.errors import ConfigError
from featurestream.events import AvroCodec, load_contracts
from streams.backfill import FileEvents, History, TimeRange
from streams.consistency import same_value
from streams.core import EntityTiles
from streams.core.reference import view_values
from tests.support import SPEND_VIEW, read_after

PROPERTY = settings(max_examples=60, deadline=None)

VIEW = SPEND_VIEW

events_strategy = st.lists(
    st.tuples(
        st.integers(0, 3),  # user
        st.integers(0, 7_200_000),  # event time
        st.floats(0, 1000, allow_nan=False).map(lambda x: round(x, 2)),
        st.integers(1, 5),  # item
        st.integers(0, 40),  # event id (repeats are duplicates of the first)
    ),
    max_size=80,
)


def _events(raw: list[tuple[int, int, float, int, int]]) -> list[dict[str, Any]]:
    first: dict[int, dict[str, Any]] = {}
    out = []
    for user, t, amount, item, eid in raw:
        event = first.setdefault(
            eid,
            {
                "event_id": str(uuid.UUID(int=eid)),
                "user_id": user,
                "event_time": t,
                "amount": amount,
                "item_id": item,
            },
        )
        out.append(dict(event))  # a repeated id resends the same event
    return out


@PROPERTY
@given(raw=events_strategy, start=st.integers(0, 3_600_000), length=st.integers(1, 7_200_000))
def test_history_keeps_each_event_in_range_once_and_folds_it_like_the_oracle(
    raw: list[tuple[int, int, float, int, int]], start: int, length: int
) -> None:
    events = _events(raw)
    time_range = TimeRange(start, start + length)
    history = History([VIEW], time_range)
    for event in events:
        history.add("purchases", event)
    unique = list({e["event_id"]: e for e in events}.values())
    kept = [e for e in unique if start <= e["event_time"] < start + length]
    assert history.stats.read == len(events)
    assert history.stats.applied == {"spend": len(kept)}
    assert history.stats.duplicates == sum(
        1 for e in events if start <= e["event_time"] < start + length
    ) - len(kept)
    rows = history.records(VIEW)
    assert sorted(r["event_id"] for r in rows) == sorted(e["event_id"] for e in kept)
    assert [r["event_time"] for r in rows] == sorted(r["event_time"] for r in rows)

    # The folded tiles, written whole as of a read time, read like the oracle over
    # the events kept (within the retention of that time).
    tiles = history.tiles(VIEW)
    for read_ms in (start + length, start + length + 700_000):
        for user in range(4):
            entity = str(user)
            mine = [e for e in kept if e["user_id"] == user]
            state = tiles.get(entity)
            update = None if state is None else state.restore_update(VIEW, entity, read_ms)
            if update is None:
                # nothing written: every window must be empty at read_ms
                assert all(v in (0, None) for v in view_values(mine, VIEW, read_ms).values())
                continue
            assert (update.project, update.view, update.entity) == ("p", "spend", entity)
            assert update.ttl_ms > 0
            got = read_after(VIEW, [update], read_ms)
            want = view_values(mine, VIEW, read_ms)
            assert got.keys() == want.keys()
            for name in got:
                assert got[name] == pytest.approx(want[name]), name


def test_restore_update_writes_only_tiles_still_in_retention() -> None:
    tiles = EntityTiles()
    for t in (0, 100_000, 3_000_000, 3_500_000):
        tiles.apply(
            VIEW,
            "1",
            {"event_id": str(t), "user_id": 1, "event_time": t, "amount": 1.0, "item_id": 1},
        )
    now = 3_500_000 + 1_000
    update = tiles.restore_update(VIEW, "1", now)
    assert update is not None
    horizon = now - VIEW.retention_ms
    for slot, index in update.sets:
        assert index >= horizon // VIEW.slots[slot].tile_ms
    assert update.newest_event_ms == 3_500_000
    assert update.ttl_ms == 3_500_000 + VIEW.retention_ms + 300_000 - now
    # far past the retention of the newest event: nothing to write
    assert tiles.restore_update(VIEW, "1", 3_500_000 + VIEW.retention_ms + 1) is None


def test_empty_range_and_invalid_rows_are_reported() -> None:
    with pytest.raises(ConfigError, match="empty backfill range"):
        TimeRange(10, 10)
    history = History([VIEW], TimeRange(0, 100))
    history.reject("out_of_range")
    history.add("clicks", {"event_id": "x", "event_time": 5})  # no view reads clicks
    assert history.stats.read == 2 and history.stats.invalid == {"out_of_range": 1}
    assert history.stats.applied == {"spend": 0}


@pytest.mark.parametrize(
    ("online", "offline", "same"),
    [
        (3, 3, True),
        (3, 4, False),
        (0.5, 0.5, True),
        (None, float("nan"), True),
        (None, 0, False),
        (0, None, False),
        (1.0, float("nan"), False),
    ],
)
def test_same_value(online: Any, offline: Any, same: bool) -> None:
    assert same_value(online, offline) is same


def _id(i: int) -> str:
    return str(uuid.UUID(int=i))


def _purchase(i: int, **changes: Any) -> dict[str, Any]:
    row = {
        "event_id": _id(i),
        "user_id": i % 3,
        "item_id": 1 + i % 4,
        "amount": 10.0 + i,
        "currency": "EUR",
        "event_time": 1_000 + i,
    }
    return {**row, **changes}


@pytest.mark.parametrize(
    ("bad", "kind"),
    [
        ({"amount": -1.0}, "out_of_range"),
        ({"amount": float("inf")}, "out_of_range"),
        ({"event_time": -5}, "out_of_range"),
        ({"user_id": None}, "schema_mismatch"),
        (None, None),
    ],
)
def test_parquet_rows_are_checked_like_encoded_events(
    tmp_path: Path, bad: dict[str, Any] | None, kind: str | None
) -> None:
    rows = [_purchase(i) for i in range(50)]
    if bad is not None:
        rows[17] = _purchase(17, **bad)
    path = tmp_path / "purchases.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    history = History([VIEW], TimeRange(0, 10**6))
    FileEvents([path], load_contracts()).feed(history, AvroCodec(load_contracts()))
    assert history.stats.read == 50
    expected = 49 if bad is not None else 50
    assert history.stats.applied == {"spend": expected}
    assert dict(history.stats.invalid) == ({} if kind is None else {kind: 1})
    # The batch check and the row check keep the same records.
    want = [r for i, r in enumerate(rows) if bad is None or i != 17]
    assert [(r["event_id"], r["amount"]) for r in history.records(VIEW)] == [
        (r["event_id"], r["amount"]) for r in want
    ]


def test_file_topic_is_told_by_columns_or_by_name(tmp_path: Path) -> None:
    contracts = load_contracts()
    click = {"event_id": "a", "user_id": 1, "item_id": 2, "page": "home", "event_time": 5}
    (tmp_path / "events.jsonl").write_text(json.dumps(click))
    with pytest.raises(ConfigError, match="several event contracts"):
        FileEvents([tmp_path / "events.jsonl"], contracts)
    (tmp_path / "events.jsonl").rename(tmp_path / "impressions-2026.jsonl")
    assert FileEvents([tmp_path / "impressions-2026.jsonl"], contracts).topics() == ("impressions",)
    assert FileEvents([tmp_path], contracts, topic="clicks").topics() == ("clicks",)
    (tmp_path / "other.jsonl").write_text(json.dumps({"foo": 1}))
    with pytest.raises(ConfigError, match="fit no event contract"):
        FileEvents([tmp_path / "other.jsonl"], contracts)


@PROPERTY
@given(raw=events_strategy, reads=st.lists(st.integers(-10_000, 8_000_000), max_size=20))
def test_tiled_history_reads_like_folding_every_event(
    raw: list[tuple[int, int, float, int, int]], reads: list[int]
) -> None:
    from streams.core.asof import TiledHistory, value_as_of

    events = sorted(_events(raw), key=lambda e: e["event_time"])
    times = [e["event_time"] for e in events]
    for agg in VIEW.aggregations:
        column = [e[agg.column] for e in events]
        history = TiledHistory(agg, times, column)
        at = reads + times
        expected = [value_as_of(agg, times, column, t) for t in at]
        assert [history.value(t) for t in at] == expected, agg.name
        assert history.values(at) == expected, agg.name


def test_batch_check_and_row_check_agree_on_types(tmp_path: Path) -> None:
    # item_id as a double (3.0): encoding rejects it row by row, so must the batch check,
    # whether or not the batch has nulls elsewhere.
    rows = [{**_purchase(i), "item_id": float(1 + i % 4)} for i in range(20)]
    path = tmp_path / "purchases.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    history = History([VIEW], TimeRange(0, 10**6))
    FileEvents([path], load_contracts()).feed(history, AvroCodec(load_contracts()))
    assert history.stats.applied == {"spend": 0}
    assert dict(history.stats.invalid) == {"schema_mismatch": 20}


def test_nanosecond_timestamps_are_truncated_to_milliseconds(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame([_purchase(i) for i in range(5)])
    frame["event_time"] = pd.to_datetime(frame["event_time"] * 1_000_000 + 123, unit="ns", utc=True)
    path = tmp_path / "purchases.parquet"
    frame.to_parquet(path)
    history = History([VIEW], TimeRange(0, 10**6))
    FileEvents([path], load_contracts()).feed(history, AvroCodec(load_contracts()))
    assert [r["event_time"] for r in history.records(VIEW)] == [1_000 + i for i in range(5)]


def test_restore_update_within_a_range_skips_tiles_it_covers_partly() -> None:
    tiles = EntityTiles()
    for t in (100_000, 125_000, 170_000):
        tiles.apply(
            VIEW,
            "1",
            {"event_id": str(t), "user_id": 1, "event_time": t, "amount": 1.0, "item_id": 1},
        )
    update = tiles.restore_update(VIEW, "1", 200_000, within=(105_000, 10**9))
    assert update is not None
    written = set(update.sets)
    ten_s = next(s for s, a in VIEW.slot_items if a.tile_ms == 10_000)
    one_min = next(s for s, a in VIEW.slot_items if a.tile_ms == 60_000)
    # 10 s tiles 10 (100-110 s, starts before the range) out; 12 and 17 in
    assert {t for t in written if t[0] == ten_s} == {(ten_s, 12), (ten_s, 17)}
    # the minute tile 1 (60-120 s) starts before the range: out; tile 2 (120-180 s) in
    assert {t for t in written if t[0] == one_min} == {(one_min, 2)}


def test_copies_within_the_horizon_are_one_event_as_in_the_stream() -> None:
    history = History([VIEW], TimeRange(0, 10**7))  # horizon: the lateness, 30 s
    first = _purchase(1, event_time=100_000)
    history.add("purchases", {**first, "event_time": 110_000})  # a re-stamped resend
    history.add("purchases", first)  # arrives later, earlier in event time
    history.add("purchases", {**first, "event_time": 200_000})  # 100 s on: another event
    kept = [r["event_time"] for r in history.records(VIEW)]
    assert kept == [100_000, 200_000]  # in event-time order, the earliest copy is kept
    assert history.stats.duplicates == 1
    assert history.stats.applied == {"spend": 2}


def test_events_the_log_holds_are_left_out_and_still_count_in_the_tiles() -> None:
    history = History([VIEW], TimeRange(0, 10**7))
    logged = _purchase(1, event_time=100_000)
    history.known(VIEW, logged)  # the stream applied (and logged) it
    history.add("purchases", {**logged, "event_time": 105_000})  # its copy in the source
    history.add("purchases", _purchase(2, event_time=120_000))
    assert [r["event_id"] for r in history.records(VIEW)] == [_id(2)]
    assert history.stats.duplicates == 1
    tiles = history.tiles(VIEW)
    entity = str(logged["user_id"])
    values = read_after(VIEW, [tiles[entity].restore_update(VIEW, entity, 130_000)], 130_000)
    assert values["n_10m"] == 1  # the logged event (p2 is another user)
