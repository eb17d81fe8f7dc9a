"""What every online store must do, as one suite run against each backend.

``tests/unit/test_online_store.py`` runs it against the port's in-memory store,
``tests/integration/test_online_store.py`` against a real Redis: each subclass of
:class:`OnlineStoreBehaviour` says which store it builds and how it makes time pass
and the store fail for a moment. The suite covers the port itself and the code above
it that writes through it: the engine's sink (tiles with the progress they claim,
retries, a lost store), the restore from the offline log and the backfill's online
write, each judged by the brute-force reference.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from featurestream.errors import OnlineStoreLost, OnlineStoreUnavailable
from featurestream.events import AvroCodec, load_contracts
from streams.backfill import FileEvents, TimeRange, run_backfill
from streams.core import AggregationSpec, EntityTiles, TileUpdate, ViewSpec
from streams.core.reference import view_values
from streams.flow import FlowMetrics, SinkItem
from streams.flow.sinks import BatchProgress, write_items
from streams.flow.watch import MarkerWatch
from streams.offline.log import write_backfill
from streams.online import (
    BUILDING,
    READY,
    Marker,
    OnlineStore,
    ProgressKey,
    StoreMark,
    ViewProgress,
    ViewState,
)
from streams.restore import restore_online
from tests.support import SPEND_VIEW, wait_until

__all__ = ["T0", "VIEW", "OnlineStoreBehaviour"]

T0 = 1_700_000_000_000
VIEW = SPEND_VIEW
STATE = ViewState.of(VIEW)
OTHER = ViewState("p", "v", "other")


def _claims(state: ViewState, offsets: dict[ProgressKey, int], check: bool = False) -> list[Any]:
    return [ViewProgress(state, offsets, check_marker=check)]


def _enc(value: object) -> bytes:
    return str(value).encode()


def purchase(i: int, user: int, t: int) -> dict[str, Any]:
    """A purchase event as the stream decodes it."""
    return {
        "event_id": str(uuid.UUID(int=i)),
        "user_id": user,
        "item_id": 1 + i % 3,
        "amount": float(10 + i),
        "currency": "EUR",
        "event_time": t,
    }


def _events(n: int = 12) -> list[dict[str, Any]]:
    return [purchase(i, i % 3, T0 + i * 45_000) for i in range(n)]


def _sink_items(events: list[dict[str, Any]]) -> list[SinkItem]:
    """One sink item per event (one batch each), as the dataflow emits them."""
    states: dict[str, EntityTiles] = {}
    items = []
    for offset, event in enumerate(events):
        entity = str(event["user_id"])
        update = states.setdefault(entity, EntityTiles()).apply(VIEW, entity, event)
        items.append(
            SinkItem([update], "purchases", 0, offset, offset, 1, VIEW.name, VIEW.state_id, [event])
        )
    return items


class OnlineStoreBehaviour:
    """The suite. Subclasses provide the ``store`` fixture and the two hooks."""

    def pass_time(self, store: OnlineStore, ms: int) -> None:
        """Let ``ms`` of the store's time pass."""
        raise NotImplementedError

    def fail_for_a_moment(self, store: OnlineStore) -> None:
        """Make the store fail the next write or two, then answer again."""
        raise NotImplementedError

    def lose_everything(self, store: OnlineStore) -> None:
        """Empty the store as a server restarted without persistence does."""
        raise NotImplementedError

    def evict_tiles(self, store: OnlineStore) -> None:
        """Make the store evict every entity's tiles to free memory (as a full store
        with a ``volatile-*`` policy does; the engine's records stay)."""
        raise NotImplementedError

    def read_at(self, store: OnlineStore, entity: str, read_ms: int) -> dict[str, Any]:
        ((values, _),) = store.read([(VIEW, [entity])], read_ms)[0]
        return values

    # ------------------------------------------------------------ the port itself
    def test_a_write_reads_back_with_the_last_value_of_every_tile(self, store: OnlineStore) -> None:
        events = _events()
        state = EntityTiles()
        mine = [e for e in events if e["user_id"] == 0]
        updates = [state.apply(VIEW, "0", e) for e in mine]
        result = store.write(updates, project="p")  # one batch, coalesced
        assert result.marker_found
        assert result.fields == sum(len(t) for t in state.tiles.values()) + 1
        ((stored,),) = store.read_tiles([(VIEW, ["0"])])
        assert stored is not None
        assert stored.tiles == state.tiles
        assert stored.newest_event_ms == max(e["event_time"] for e in mine)
        read_ms = mine[-1]["event_time"] + 1
        assert self.read_at(store, "0", read_ms) == view_values(mine, VIEW, read_ms)
        assert store.read_tiles([(VIEW, ["nobody"])]) == [[None]]

    def test_a_write_larger_than_one_lua_unpack_sets_and_deletes_every_field(
        self, store: OnlineStore
    ) -> None:
        # More fields than Redis's Lua can unpack in one call (about 8,000 values).
        first = TileUpdate(
            "p", "big_view", "1", {("s", i): (_enc, i) for i in range(6_000)}, (), None, 60_000
        )
        result = store.write([first], _claims(OTHER, {ProgressKey("clicks", 0): 10}), project="p")
        assert result.fields == 6_000
        assert store.progress(OTHER) == {ProgressKey("clicks", 0): 10}
        # Evict 5,000 of them and set the rest again, in one update.
        second = TileUpdate(
            "p",
            "big_view",
            "1",
            {("s", i): (_enc, i + 1) for i in range(5_000, 6_000)},
            tuple(("s", i) for i in range(5_000)),
            None,
            60_000,
        )
        claims = _claims(OTHER, {ProgressKey("clicks", 0): 20})
        assert store.write([second], claims, project="p").fields == 1_000
        assert store.progress(OTHER) == {ProgressKey("clicks", 0): 20}
        big = ViewSpec(
            "p",
            "big_view",
            "clicks",
            ("user_id",),
            "event_time",
            0,
            (AggregationSpec("n", "count", "event_id", 1_000, 1_000),),
        )
        assert store.entities(big, 10) == ["1"]

    def test_progress_is_not_claimed_when_the_marker_is_gone(self, store: OnlineStore) -> None:
        update = TileUpdate("p", "v", "1", {("s", 1): (_enc, 1)}, (), None, 60_000)
        claims = [
            *_claims(OTHER, {ProgressKey("clicks", 0): 5}, check=True),
            *_claims(STATE, {ProgressKey("purchases", 0): 3}),  # not checked: recorded
        ]
        result = store.write([update], claims, project="p")
        assert result.lost == (OTHER,) and not result.marker_found
        assert store.progress(OTHER) == {}  # tiles before it may be missing
        assert store.progress(STATE) == {ProgressKey("purchases", 0): 3}
        assert not store.has_marker(OTHER)
        store.set_marker(OTHER, Marker(BUILDING))
        assert store.markers([OTHER, STATE]) == [Marker(BUILDING), None]
        result = store.write([update], _claims(OTHER, {ProgressKey("clicks", 0): 6}, True))
        assert result.marker_found
        assert store.progress(OTHER) == {ProgressKey("clicks", 0): 6}
        mark = StoreMark.of(store.stats())
        store.set_marker(OTHER, Marker(READY, mark))
        assert store.markers([OTHER]) == [Marker(READY, mark)]

    def test_reads_say_whether_a_view_is_ready(self, store: OnlineStore) -> None:
        state = EntityTiles()
        store.write([state.apply(VIEW, "7", purchase(1, 7, T0))], project="p")
        (rows,) = store.read([(VIEW, ["7"])], T0 + 1)
        assert rows[0][0]["n_10m"] == 1  # what the tiles hold, ready or not
        (building,) = store.read([(VIEW, ["7"])], T0 + 1, only_ready=True)
        assert building[0] == (dict.fromkeys(a.name for a in VIEW.aggregations), None)
        store.set_marker(STATE, Marker(READY))
        (ready,) = store.read([(VIEW, ["7"])], T0 + 1, only_ready=True)
        assert ready[0][0]["n_10m"] == 1

    def test_an_evicted_entity_is_not_read_as_never_written(self, store: OnlineStore) -> None:
        state = EntityTiles()
        store.write([state.apply(VIEW, "7", purchase(1, 7, T0))], project="p")
        store.set_marker(STATE, Marker(READY, StoreMark.of(store.stats())))
        (ready,) = store.read([(VIEW, ["7", "99"])], T0 + 1, only_ready=True)
        assert ready[0][0]["n_10m"] == 1 and ready[1][0]["n_10m"] == 0  # 99: never written
        before = store.stats()
        self.evict_tiles(store)
        after = store.stats()
        assert after.evicted_keys is not None and before.evicted_keys is not None
        assert after.evicted_keys > before.evicted_keys  # the store counts them
        assert store.markers([STATE])[0] is not None  # the marker stayed
        missing = (dict.fromkeys(a.name for a in VIEW.aggregations), None)
        # 7 was evicted, 99 never written: the store cannot tell them apart now, so
        # neither reads as a count of 0.
        assert store.read([(VIEW, ["7"])], T0 + 1, only_ready=True) == [[missing]]
        assert store.read([(VIEW, ["99"])], T0 + 1, only_ready=True) == [[missing]]
        assert store.read_tiles([(VIEW, ["7"])]) == [[None]]
        # An entity the store holds reads right whatever else was evicted.
        other = EntityTiles()
        store.write([other.apply(VIEW, "8", purchase(3, 8, T0))], project="p")
        ((held,),) = store.read([(VIEW, ["8"])], T0 + 1, only_ready=True)
        assert held[0]["n_10m"] == 1
        # Set again once its tiles are back (a restore): served again.
        store.write([state.apply(VIEW, "7", purchase(2, 7, T0))], project="p")
        store.set_marker(STATE, Marker(READY, StoreMark.of(store.stats())))
        (back,) = store.read([(VIEW, ["7", "99"])], T0 + 1, only_ready=True)
        assert back[0][0]["n_10m"] == 2 and back[1][0]["n_10m"] == 0

    def test_the_watch_notices_evictions_without_a_write(self, store: OnlineStore) -> None:
        state = EntityTiles()
        store.write([state.apply(VIEW, "7", purchase(1, 7, T0))], project="p")
        store.set_marker(STATE, Marker(READY, StoreMark.of(store.stats())))
        metrics = FlowMetrics()
        watch = MarkerWatch([STATE], interval_s=0.05, metrics=metrics)
        assert not watch.look(store)
        assert metrics.store is not None and metrics.store.keys >= 1
        self.evict_tiles(store)
        assert watch.look(store)
        with pytest.raises(OnlineStoreLost, match="evicted"):
            watch.check()
        assert metrics.store_losses["evicted"] == 1

    def test_freshness_records_when_each_view_was_written(self, store: OnlineStore) -> None:
        assert store.freshness("p") == {}
        update = TileUpdate("p", "v", "1", {("s", 1): (_enc, 1)}, (), None, 60_000)
        store.write([update], project="p")
        assert set(store.freshness("p")) == {"v"}

    def test_an_entity_expires_its_ttl_after_its_last_write(self, store: OnlineStore) -> None:
        state = EntityTiles()
        update = state.apply(VIEW, "7", purchase(1, 7, T0))
        store.write([TileUpdate(*_fields(update, ttl_ms=200))], project="p")
        assert store.read_tiles([(VIEW, ["7"])])[0][0] is not None
        self.pass_time(store, 400)
        assert store.read_tiles([(VIEW, ["7"])]) == [[None]]
        assert store.entities(VIEW, 10) == []

    # ------------------------------------------------------------ the engine's sink
    def test_the_sink_writes_tiles_with_the_progress_they_complete(
        self, store: OnlineStore
    ) -> None:
        events = _events()
        store.set_marker(STATE, Marker(BUILDING))
        items = _sink_items(events)
        batches = BatchProgress()
        for i in range(0, len(items), 4):
            write_items(
                store,
                items[i : i + 4],
                batches,
                project="p",
                watch=MarkerWatch([STATE]),
                retry_for_s=5,
                metrics=FlowMetrics(),
            )
        assert store.progress(STATE) == {ProgressKey("purchases", 0): len(events)}
        read_ms = events[-1]["event_time"] + 5_000
        for user in range(3):
            mine = [e for e in events if e["user_id"] == user]
            assert self.read_at(store, str(user), read_ms) == view_values(mine, VIEW, read_ms)

    def test_the_sink_retries_a_store_that_fails_for_a_moment(self, store: OnlineStore) -> None:
        events = _events(3)
        store.set_marker(STATE, Marker(READY))
        self.fail_for_a_moment(store)
        metrics = FlowMetrics()
        write_items(
            store,
            _sink_items(events),
            BatchProgress(),
            project="p",
            watch=MarkerWatch([STATE]),
            retry_for_s=30,
            metrics=metrics,
        )
        assert store.progress(STATE) == {ProgressKey("purchases", 0): 3}
        assert metrics.write_retries >= 1  # it did fail first
        assert metrics.write_batches == 1

    def test_the_sink_stops_when_the_store_lost_the_tiles(self, store: OnlineStore) -> None:
        # No marker: the store does not hold what this engine wrote before.
        watch = MarkerWatch([STATE])
        with pytest.raises(OnlineStoreLost):
            write_items(
                store,
                _sink_items(_events(3)),
                BatchProgress(),
                project="p",
                watch=watch,
                retry_for_s=5,
                metrics=FlowMetrics(),
            )
        assert store.progress(STATE) == {}  # nothing claimed
        with pytest.raises(OnlineStoreLost):
            watch.check()  # the flow's sources stop too

    def test_the_watch_notices_a_lost_marker_without_a_write(self, store: OnlineStore) -> None:
        store.set_marker(STATE, Marker(READY))
        looks: list[int] = []
        watch = MarkerWatch(
            [STATE], interval_s=0.05, every_tick=lambda: looks.append(1), tick_s=0.05
        )
        watch.attach(store)
        wait_until(lambda: (watch.check(), looks)[1] != [], 10, "a tick")
        watch.check()  # the marker is there: nothing to say
        self.lose_everything(store)
        wait_until(lambda: _raises(watch.check), 10, "the watch to notice")

    def test_the_sink_gives_up_on_a_store_that_stays_down(self, unavailable: OnlineStore) -> None:
        with pytest.raises(OnlineStoreUnavailable):
            write_items(
                unavailable,
                _sink_items(_events(1)),
                BatchProgress(),
                project="p",
                watch=None,
                retry_for_s=0.3,
                metrics=FlowMetrics(),
            )

    # ------------------------------------------------------------ restore and backfill
    def test_a_restore_writes_what_the_stream_wrote(
        self, store: OnlineStore, tmp_path: Path
    ) -> None:
        events = _events()
        write_backfill(tmp_path, VIEW, events, "run")
        now_ms = events[-1]["event_time"] + 1_000
        restored = restore_online([VIEW], tmp_path, store, clock=lambda: now_ms)
        assert restored == 3
        for user in range(3):
            mine = [e for e in events if e["user_id"] == user]
            assert self.read_at(store, str(user), now_ms) == view_values(mine, VIEW, now_ms)

    def test_a_restore_skips_entities_past_their_retention(
        self, store: OnlineStore, tmp_path: Path
    ) -> None:
        events = _events()
        write_backfill(tmp_path, VIEW, events, "run")
        later = events[-1]["event_time"] + VIEW.retention_ms + 10_000
        assert restore_online([VIEW], tmp_path, store, clock=lambda: later) == 0
        assert store.entities(VIEW, 10) == []

    def test_a_backfill_writes_its_tiles_online(self, store: OnlineStore, tmp_path: Path) -> None:
        events = _events()
        path = tmp_path / "purchases.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        contracts = load_contracts()
        now_ms = events[-1]["event_time"] + 1_000
        report = run_backfill(
            [VIEW],
            FileEvents([path], contracts),
            TimeRange(T0 - 3_600_000, now_ms + 3_600_000),
            AvroCodec(contracts),
            tmp_path / "log",
            online=store,
            clock=lambda: now_ms,
        )
        assert report.online_entities == {VIEW.name: 3}
        for user in range(3):
            mine = [e for e in events if e["user_id"] == user]
            assert self.read_at(store, str(user), now_ms) == view_values(mine, VIEW, now_ms)


def _raises(check: Any) -> bool:
    try:
        check()
    except OnlineStoreLost:
        return True
    return False


def _fields(update: TileUpdate, *, ttl_ms: int) -> tuple[Any, ...]:
    return (
        update.project,
        update.view,
        update.entity,
        update.sets,
        update.deletes,
        update.newest_event_ms,
        ttl_ms,
    )
