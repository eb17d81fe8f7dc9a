"""The dataflow with Bytewax's testing source and sink, judged by the brute-force oracle.

Batches are made by the same per-partition classifier the Kafka source uses; the
oracle classifies late and duplicate events independently (brute force). Online
values are read back from the port's in-memory store after the sink's updates.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Any

from bytewax.testing import TestingSink, TestingSource, run_main
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.events import AvroCodec, load_contracts
from streams.core import AggregationSpec, ViewSpec
from streams.core.asof import TiledHistory, value_as_of
from streams.core.classify import PartitionClassifier, Rejected, SourceBatch
from streams.core.reference import classify_partition, view_values
from streams.flow import SinkItem, build_flow
from streams.flow.sinks import BatchProgress
from streams.flow.source import topic_views
from streams.kafka import rejected_headers
from streams.online import ProgressKey
from streams.online.memory import MemoryOnlineStore

LATENESS = 30_000
VIEW = ViewSpec(
    project="p",
    name="user_click_stats",
    topic="clicks",
    join_keys=("user_id",),
    timestamp_field="event_time",
    allowed_lateness_ms=LATENESS,
    aggregations=(
        AggregationSpec("clicks_last_5min", "count", "event_id", 300_000, 5_000),
        AggregationSpec("clicks_last_1h", "count", "event_id", 3_600_000, 60_000),
        AggregationSpec("distinct_items_1h", "count_distinct", "item_id", 3_600_000, 60_000),
    ),
    field_types=(("user_id", "long"), ("event_id", "string"), ("item_id", "long")),
)
CODEC = AvroCodec(load_contracts())
T0 = 1_700_000_000_000


def _click(user: int, item: int, t: int, event_id: str | None = None) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "user_id": user,
        "item_id": item,
        "page": "home",
        "event_time": t,
    }


def _batches(partitions: dict[int, list[bytes]], order: list[int]) -> list[SourceBatch]:
    """Messages classified per partition (offset order), read in runs of up to 7 of one
    partition interleaved by ``order``, as the source emits them."""
    classifiers = {
        p: PartitionClassifier(
            "clicks", p, CODEC, "event_time", topic_views([VIEW])["clicks"], LATENESS
        )
        for p in partitions
    }
    cursor = dict.fromkeys(partitions, 0)
    runs: list[tuple[int, list[int]]] = []

    def take(p: int) -> None:
        offset = cursor[p]
        if runs and runs[-1][0] == p and len(runs[-1][1]) < 7:
            runs[-1][1].append(offset)
        else:
            runs.append((p, [offset]))
        cursor[p] += 1

    for p in order:
        if p in partitions and cursor[p] < len(partitions[p]):
            take(p)
    for p, values in partitions.items():  # whatever the order did not reach
        while cursor[p] < len(values):
            take(p)
    out = []
    for p, offsets in runs:
        batch = classifiers[p].classify((o, partitions[p][o], None) for o in offsets)
        assert batch is not None
        out.append(batch)
    return out


def _run(
    batches: list[SourceBatch],
) -> tuple[list[SinkItem], list[Rejected], list[Rejected], list[tuple[str, dict[str, Any]]]]:
    online: list[SinkItem] = []
    dead: list[Rejected] = []
    late: list[Rejected] = []
    logged: list[tuple[str, list[dict[str, Any]]]] = []
    run_main(
        build_flow(
            [VIEW],
            {VIEW.name: TestingSource(batches)},
            TestingSink(online),
            TestingSink(dead),
            TestingSink(late),
            TestingSink(logged),
        )
    )
    log = [(name, row) for name, rows in logged for row in rows]
    return online, dead, late, log


def _online(items: list[SinkItem]) -> MemoryOnlineStore:
    """An online store after the sink's updates, in order."""
    store = MemoryOnlineStore()
    for item in items:
        store.write(item.updates, project="p")
    return store


def _read(store: MemoryOnlineStore, user: int, read_time_ms: int) -> dict[str, Any]:
    ((values, _),) = store.read([(VIEW, [str(user)])], read_time_ms)[0]
    return values


def _oracle_applied(
    partitions: dict[int, list[dict[str, Any]]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    applied: list[dict[str, Any]] = []
    late: list[dict[str, Any]] = []
    for events in partitions.values():
        ok, too_late = classify_partition(events, LATENESS)
        applied += ok
        late += too_late
    return applied, late


# A partition's stream: (user slot, item, time step, kind); kind 0 = normal (jittered
# within the lateness), 1 = late beyond it, 2 = duplicate of an earlier event.
streams = st.dictionaries(
    st.integers(0, 2),
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(1, 5),
            st.integers(0, 90_000),
            st.sampled_from([0, 0, 0, 0, 1, 2]),
        ),
        min_size=1,
        max_size=60,
    ),
    min_size=1,
    max_size=3,
)


@settings(max_examples=40, deadline=None)
@given(
    spec=streams,
    order=st.lists(st.integers(0, 2), max_size=200),
    read_offsets=st.lists(st.integers(-3_700_000, 3_700_000), min_size=1, max_size=4),
    jitter=st.integers(0, LATENESS - 1),
)
def test_online_and_offline_values_equal_the_oracle(
    spec: dict[int, list[tuple[int, int, int, int]]],
    order: list[int],
    read_offsets: list[int],
    jitter: int,
) -> None:
    records: dict[int, list[dict[str, Any]]] = {}
    for partition, items in spec.items():
        t = T0
        events: list[dict[str, Any]] = []
        for slot, item, step, kind in items:
            t += step
            user = partition * 10 + slot  # users live in one partition, as keyed by Kafka
            if kind == 2 and events:
                events.append(dict(events[step % len(events)]))
            elif kind == 1:
                events.append(_click(user, item, t - 2 * LATENESS - step))
            else:
                events.append(_click(user, item, t - jitter))
        records[partition] = events
    encoded = {p: [CODEC.encode("clicks", e) for e in evs] for p, evs in records.items()}
    online, dead, late, log = _run(_batches(encoded, order))

    applied, late_events = _oracle_applied(records)
    assert dead == []
    assert sorted(r.value for r in late) == sorted(CODEC.encode("clicks", e) for e in late_events)
    assert sorted(r["event_id"] for _, r in log) == sorted(e["event_id"] for e in applied)
    store = _online(online)
    newest = max(e["event_time"] for e in applied)
    by_user: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in applied:
        by_user[e["user_id"]].append(e)
    log_by_user: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for _, row in log:
        log_by_user[row["user_id"]].append(row)
    for offset in read_offsets:
        read_time = newest + abs(offset)  # online: read at or after the newest event
        past = newest + offset  # offline: any time, before or after
        for user, events in by_user.items():
            assert _read(store, user, read_time) == view_values(events, VIEW, read_time)
            rows = sorted(log_by_user[user], key=lambda r: r["event_time"])
            times = [r["event_time"] for r in rows]
            expected = view_values(events, VIEW, past)
            for agg in VIEW.aggregations:
                column = [r[agg.column] for r in rows]
                assert value_as_of(agg, times, column, past) == expected[agg.name]
                assert TiledHistory(agg, times, column).value(past) == expected[agg.name]


def test_count_decays_to_zero_when_last_event_leaves_window() -> None:
    clicks = [_click(1, 1, T0), _click(1, 2, T0 + 1_000)]
    online, *_ = _run(_batches({0: [CODEC.encode("clicks", c) for c in clicks]}, []))
    store = _online(online)
    tile_end = (T0 + 1_000) // 5_000 * 5_000 + 5_000
    # the last tile holding an event is read until it leaves the 5 min window ...
    assert _read(store, 1, tile_end + 300_000 - 1)["clicks_last_5min"] == 2
    # ... and not one millisecond longer
    assert _read(store, 1, tile_end + 300_000)["clicks_last_5min"] == 0
    assert _read(store, 1, tile_end + 300_000)["clicks_last_1h"] == 2


def test_a_backlog_after_a_long_outage_is_counted_not_late() -> None:
    # Events 10 minutes apart in event time (far beyond the 30 s lateness), as a
    # consumer meets them after an outage: the watermark moves with event time
    # only, so none of them is late.
    clicks = [_click(1, i, T0 + i * 600_000) for i in range(6)]
    online, _, late, log = _run(_batches({0: [CODEC.encode("clicks", c) for c in clicks]}, []))
    assert late == []
    assert len(log) == 6
    values = _read(_online(online), 1, T0 + 5 * 600_000)
    assert (values["clicks_last_1h"], values["clicks_last_5min"]) == (6, 1)


def test_late_duplicate_and_bad_messages_are_routed_and_still_advance_progress() -> None:
    on_time = _click(1, 1, T0 + 100_000)
    messages = [
        CODEC.encode("clicks", on_time),
        CODEC.encode("clicks", on_time),  # duplicate
        CODEC.encode("clicks", _click(1, 2, T0)),  # late: 100 s behind, 30 s allowed
        b"garbage",
        CODEC.encode("clicks", _click(1, 3, T0 + 71_000)),  # within lateness: applied
        CODEC.encode("clicks", on_time)[:-2],
        b"",
    ]
    online, dead, late, log = _run(_batches({0: messages}, []))
    assert [(d.offset, d.kind) for d in dead] == [(3, "not_avro"), (5, "truncated"), (6, "empty")]
    assert [(r.offset, r.kind, r.value) for r in late] == [(2, "late", messages[2])]
    # One batch (offsets 0-6): the shard group of user 1 (both applied events in one
    # update) and a progress-only group for the rest; together they claim offset 7.
    assert {(i.batch_start, i.batch_end, i.batch_groups) for i in online} == {(0, 6, 2)}
    assert sorted(len(i.updates) for i in online) == [0, 1]
    claimed = BatchProgress().written(online)
    assert claimed == {VIEW.state_id: {ProgressKey("clicks", 0): 7}}
    assert [r["event_id"] for _, r in log] == [on_time["event_id"], log[1][1]["event_id"]]
    headers = dict(rejected_headers(late[0]))
    assert headers["source.offset"] == b"2" and headers["error.kind"] == b"late"


def _item(start: int, end: int, groups: int, partition: int = 0) -> SinkItem:
    return SinkItem([], "clicks", partition, start, end, groups, "v", "s")


def _claimed(offsets: dict[ProgressKey, int]) -> dict[str, dict[ProgressKey, int]]:
    return {"s": offsets}


def test_progress_claims_a_batch_only_when_all_its_groups_are_written() -> None:
    progress = BatchProgress()
    # First batch seen since the start (offsets 10-19, 3 groups): nothing is claimed
    # until its third group is written.
    assert progress.written([_item(10, 19, 3), _item(10, 19, 3)]) == _claimed({})
    # The next batch completes first: it does not follow on from what is written.
    assert progress.written([_item(20, 29, 1)]) == _claimed({})
    assert progress.written([_item(10, 19, 3)]) == _claimed({ProgressKey("clicks", 0): 30})
    # Partitions are independent.
    assert progress.written([_item(5, 5, 1, partition=1), _item(30, 39, 2)]) == _claimed(
        {ProgressKey("clicks", 1): 6}
    )
    assert progress.written([_item(30, 39, 2)]) == _claimed({ProgressKey("clicks", 0): 40})


def test_progress_moves_past_gaps_in_the_offsets() -> None:
    # Transaction markers and compaction leave offsets no message has.
    progress = BatchProgress()
    assert progress.written([_item(0, 9, 1)]) == _claimed({ProgressKey("clicks", 0): 10})
    assert progress.written([_item(11, 20, 1)]) == _claimed({ProgressKey("clicks", 0): 21})
    both = [_item(25, 30, 2), _item(25, 30, 2)]
    assert progress.written(both) == _claimed({ProgressKey("clicks", 0): 31})
