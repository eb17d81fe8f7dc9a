"""The dataflow against Bytewax's testing source and sink, judged by the oracle."""

from __future__ import annotations

import uuid

from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.events import AvroCodec, load_contracts
from streams.core import AggregationSpec, TileUpdate, ViewSpec, read_view, tile_key
from streams.flow import DeadLetter, SinkItem, build_flow
from tests.oracle import view_values

VIEW = ViewSpec(
    project="p",
    name="user_click_stats",
    topic="clicks",
    join_keys=("user_id",),
    timestamp_field="event_time",
    allowed_lateness_ms=0,
    aggregations=(
        AggregationSpec("clicks_last_5min", "count", "event_id", 300_000, 5_000),
        AggregationSpec("clicks_last_1h", "count", "event_id", 3_600_000, 60_000),
        AggregationSpec("distinct_items_1h", "count_distinct", "item_id", 3_600_000, 60_000),
    ),
)
CODEC = AvroCodec(load_contracts())
T0 = 1_700_000_000_000


def _message(offset: int, value: bytes, partition: int = 0) -> KafkaSourceMessage[bytes, bytes]:
    return KafkaSourceMessage(None, value, topic="clicks", partition=partition, offset=offset)


def _click(user: int, item: int, t: int) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "item_id": item,
        "page": "home",
        "event_time": t,
    }


def _run(values: list[bytes]) -> tuple[list[SinkItem], list[DeadLetter]]:
    online: list[SinkItem] = []
    dead: list[DeadLetter] = []
    flow = build_flow(
        [VIEW],
        CODEC,
        TestingSource([_message(i, v) for i, v in enumerate(values)]),
        TestingSink(online),
        TestingSink(dead),
    )
    run_main(flow)
    return online, dead


def _apply(updates: list[TileUpdate]) -> dict[str, dict[bytes, bytes]]:
    """What Redis holds after the updates (HSET/HDEL semantics)."""
    hashes: dict[str, dict[bytes, bytes]] = {}
    for u in updates:
        h = hashes.setdefault(u.key, {})
        for f in u.deletes:
            h.pop(f.encode(), None)
        for f, v in u.sets.items():
            h[f.encode()] = v
    return hashes


events_strategy = st.lists(
    st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(0, 2 * 3_600_000)),
    min_size=1,
    max_size=120,
)


@settings(max_examples=40, deadline=None)
@given(events=events_strategy, read_offset_ms=st.integers(0, 3_700_000))
def test_online_tiles_equal_oracle_at_any_later_read_time(
    events: list[tuple[int, int, int]], read_offset_ms: int
) -> None:
    clicks = [_click(u, i, T0 + t) for u, i, t in events]
    online, dead = _run([CODEC.encode("clicks", c) for c in clicks])
    assert dead == []
    hashes = _apply([i.update for i in online if i.update is not None])
    read_time = max(c["event_time"] for c in clicks) + read_offset_ms  # type: ignore[type-var]
    for user in {c["user_id"] for c in clicks}:
        raw = hashes.get(tile_key("p", VIEW.name, str(user)), {})
        expected = view_values([c for c in clicks if c["user_id"] == user], VIEW, read_time)
        assert read_view(VIEW, raw, read_time) == expected


def test_count_decays_to_zero_when_last_event_leaves_window() -> None:
    clicks = [_click(1, 1, T0), _click(1, 2, T0 + 1_000)]
    online, _ = _run([CODEC.encode("clicks", c) for c in clicks])
    raw = _apply([i.update for i in online if i.update is not None])[tile_key("p", VIEW.name, "1")]
    tile_end = (T0 + 1_000) // 5_000 * 5_000 + 5_000
    # the last tile holding an event is read until it leaves the 5 min window ...
    assert read_view(VIEW, raw, tile_end + 300_000 - 1)["clicks_last_5min"] == 2
    # ... and not one millisecond longer
    assert read_view(VIEW, raw, tile_end + 300_000)["clicks_last_5min"] == 0
    assert read_view(VIEW, raw, tile_end + 300_000)["clicks_last_1h"] == 2


def test_bad_messages_are_dead_lettered_and_still_advance_progress() -> None:
    good = CODEC.encode("clicks", _click(1, 1, T0))
    online, dead = _run([b"garbage", good, good[:-2], b""])
    assert [(d.offset, d.kind) for d in dead] == [
        (0, "not_avro"),
        (2, "truncated"),
        (3, "empty"),
    ]
    assert sorted(i.offset for i in online) == [0, 1, 2, 3]
    assert [i.offset for i in online if i.update is not None] == [1]
