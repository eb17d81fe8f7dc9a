"""Tile arithmetic, per-entity tile state and the read-time merge.

An event with event time ``e`` belongs to tile ``floor(e / g)``. A read at time
``t`` of a window ``W`` merges tiles ``floor(t/g) - W/g .. floor(t/g)``, i.e. the
events with ``floor(t/g)*g - W <= event_time``: the value drops as tiles leave
the window, whether or not new events arrive.

The core knows tiles as ``(slot, tile index) -> partial`` per entity and view
(:class:`TileUpdate` to write them, :class:`StoredTiles` as read back); how an
online store lays them out (keys, fields, expiry) is the store's business
(``streams.online``).
"""

from __future__ import annotations

import json
import marshal
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from featurestream.events import MAX_FUTURE_MS

from .aggregators import Aggregator, Partial
from .spec import AggregationSpec, ViewSpec

__all__ = [
    "CLOCK_SKEW_MS",
    "EntityTiles",
    "StoredTiles",
    "Tile",
    "TileUpdate",
    "entity_id",
    "read_view",
    "read_window",
    "window_tile_range",
]

# How far an event time may be ahead of the clock of the reads (what the contracts
# allow): tiles and keys are kept that much longer.
CLOCK_SKEW_MS = MAX_FUTURE_MS


def entity_id(values: Sequence[Any]) -> str:
    """The text identity of an entity: the join key value as decimal/text, or for several
    join keys a JSON array of them (unambiguous whatever the values contain)."""
    if len(values) == 1:
        return str(values[0])
    return json.dumps(list(values), separators=(",", ":"))


def window_tile_range(read_time_ms: int, window_ms: int, tile_ms: int) -> range:
    """Indices of the tiles a read at ``read_time_ms`` merges."""
    last = read_time_ms // tile_ms
    return range(last - window_ms // tile_ms, last + 1)


def read_window(agg: AggregationSpec, tiles: Mapping[int, Partial], read_time_ms: int) -> Any:
    """The value of ``agg`` at ``read_time_ms`` from its slot's tiles."""
    aggregator = agg.aggregator
    acc = aggregator.initialize()
    for index in window_tile_range(read_time_ms, agg.window_ms, agg.tile_ms):
        partial = tiles.get(index)
        if partial is not None:
            acc = aggregator.merge(acc, partial)
    return aggregator.result(acc)


@dataclass(frozen=True, slots=True)
class StoredTiles:
    """One entity's tiles of one view as an online store holds them.

    Attributes:
        tiles: ``{slot: {tile index: partial}}`` for every slot of the view (slots of
            an older definition are not included).
        newest_event_ms: Newest event time applied for the entity (None: unknown).
    """

    tiles: Mapping[str, Mapping[int, Partial]]
    newest_event_ms: int | None


_NO_TILES: Mapping[int, Partial] = {}


def read_view(view: ViewSpec, stored: StoredTiles | None, read_time_ms: int) -> dict[str, Any]:
    """Every aggregation of ``view`` for one entity at ``read_time_ms`` (None: no tiles)."""
    tiles = stored.tiles if stored is not None else {}
    return {
        agg.name: read_window(agg, tiles.get(agg.slot, _NO_TILES), read_time_ms)
        for agg in view.aggregations
    }


Tile = tuple[str, int]
"""A tile of one entity: ``(slot, tile index)``."""


@dataclass(frozen=True, slots=True)
class TileUpdate:
    """What one change of an entity's state writes online.

    Tile contents are *set*, never incremented, so writing the same update twice
    (a replay after a crash) leaves the same value. ``sets`` holds each tile's
    partial with its encoder: a writer coalescing a batch encodes only the last
    value of every tile.

    Attributes:
        project: Feast project.
        view: View name.
        entity: The entity (:func:`entity_id` of its join key values).
        sets: Tiles set, with their encoder and partial.
        deletes: Tiles evicted (they left every window of their slot).
        newest_event_ms: The entity's newest event time, when this update moves it
            (None: unchanged).
        ttl_ms: The entity's tiles may be dropped this long after the write.
    """

    project: str
    view: str
    entity: str
    sets: dict[Tile, tuple[Callable[[Any], bytes], Any]]
    deletes: tuple[Tile, ...]
    newest_event_ms: int | None
    ttl_ms: int

    def encoded(self) -> dict[Tile, bytes]:
        """The encoded tile values."""
        return {tile: encode(value) for tile, (encode, value) in self.sets.items()}


def _count_one(flat: array[int], index: int) -> int:
    """Count one event in tile ``index`` of interleaved ``[index, count, ...]``."""
    n = len(flat)
    if n and flat[n - 2] == index:
        i = n - 1
    elif not n or flat[n - 2] < index:
        flat.append(index)
        flat.append(0)
        i = n + 1
    else:
        j = bisect_left(flat[0::2], index)
        i = 2 * j + 1
        if 2 * j == n or flat[2 * j] != index:
            flat[2 * j : 2 * j] = array("q", (index, 0))
    count = flat[i] = flat[i] + 1
    return count


def _add_to_tile(
    idx: array[int], vals: list[Any], index: int, aggregator: Aggregator, value: Any
) -> Partial:
    """Add ``value`` to tile ``index`` (sorted ``idx``, parallel ``vals``)."""
    n = len(idx)
    if n and idx[-1] == index:
        i = n - 1
    elif not n or idx[-1] < index:
        idx.append(index)
        vals.append(aggregator.initialize())
        i = n
    else:
        i = bisect_left(idx, index)
        if i == n or idx[i] != index:
            idx.insert(i, index)
            vals.insert(i, aggregator.initialize())
    partial = vals[i] = aggregator.add(vals[i], value)
    return partial


class _Slot:
    """Where one tile slot lives in an entity's state, and how long its tiles are kept.

    What an event adds is the aggregator's :meth:`~Aggregator.contribution`, unrolled
    here for the hot path: ``column`` is None when the aggregator reads the event
    itself, ``timed`` when it reads ``(event time, value)``.
    """

    __slots__ = (
        "aggregator",
        "column",
        "counts",
        "name",
        "pos",
        "retention_ms",
        "tile_ms",
        "timed",
    )

    def __init__(self, name: str, agg: AggregationSpec, pos: int, retention_ms: int) -> None:
        aggregator = agg.aggregator
        self.name = name
        self.aggregator = aggregator
        self.tile_ms = agg.tile_ms
        self.pos = pos
        self.retention_ms = retention_ms
        self.counts = aggregator.counter
        self.column = None if aggregator.reads == "event" else agg.column
        self.timed = aggregator.reads == "timed_value"


_LAYOUTS: dict[int, tuple[tuple[str, ...], tuple[_Slot, ...]]] = {}


def _layout_of(view: ViewSpec) -> tuple[_Slot, ...]:
    """The state layout of ``view`` (cached per view definition)."""
    names = view.slot_names
    cached = _LAYOUTS.get(id(names))
    if cached is not None and cached[0] is names:
        return cached[1]
    slots = []
    pos = 0
    for slot, agg in view.slot_items:
        # A slot's tiles are needed while its longest window (plus the tile being
        # filled and the lateness) can still read or revise them, counted from the
        # newest event, which may be up to the allowed clock skew ahead of the reads.
        keep = max(a.window_ms + a.tile_ms for a in view.aggregations if a.slot == slot)
        slots.append(_Slot(slot, agg, pos, keep + view.allowed_lateness_ms + CLOCK_SKEW_MS))
        pos += 1 if agg.aggregator.counter else 2
    layout = tuple(slots)
    _LAYOUTS[id(names)] = (names, layout)
    return layout


class EntityTiles:
    """The tiles of one entity in one view: the per-key state of the dataflow.

    Compact, as the engine holds one per active entity: ``_data`` is one flat list
    with, per tile slot, either one ``array('q')`` of interleaved ``[tile index,
    count, ...]`` (count slots) or a sorted ``array('q')`` of tile indices followed
    by a list of the partials. A slot keeps only the tiles its longest window can
    still read or revise (window + one tile + the allowed lateness) before the newest
    event applied. Picklable (snapshots hold it).
    """

    __slots__ = ("_data", "_slots", "max_event_ms")

    def __init__(self) -> None:
        self.max_event_ms: int = -1
        self._slots: tuple[str, ...] = ()
        self._data: list[Any] = []

    def __getstate__(self) -> tuple[int, tuple[str, ...], list[Any]]:
        return (self.max_event_ms, self._slots, self._data)

    def __setstate__(self, state: tuple[int, tuple[str, ...], list[Any]]) -> None:
        self.max_event_ms, self._slots, self._data = state

    def pack(self) -> bytes:
        """This state as compact bytes (for states held between uses; see :meth:`unpack`)."""
        data = tuple(x.tobytes() if isinstance(x, array) else tuple(x) for x in self._data)
        return marshal.dumps((self.max_event_ms, data))

    @classmethod
    def unpack(cls, view: ViewSpec, packed: bytes) -> EntityTiles:
        """The state :meth:`pack` packed, for ``view`` (the view it was built for: a
        changed view has another ``state_id`` and so never sees it)."""
        max_event_ms, data = marshal.loads(packed)  # noqa: S302 - our own bytes
        tiles = cls()
        tiles.max_event_ms = max_event_ms
        tiles._slots = view.slot_names
        out: list[Any] = []
        for item in data:
            if isinstance(item, bytes):
                arr = array("q")
                arr.frombytes(item)
                out.append(arr)
            else:
                out.append(list(item))
        tiles._data = out
        return tiles

    def _slot_tiles(self, pos: int, counts: bool) -> tuple[Sequence[int], Sequence[Any]]:
        if counts:
            flat = self._data[pos]
            return flat[0::2], flat[1::2]
        return self._data[pos], self._data[pos + 1]

    @property
    def tiles(self) -> dict[str, dict[int, Partial]]:
        """The tiles as ``{slot: {tile index: partial}}`` (a copy, for reads and tests)."""
        out: dict[str, dict[int, Partial]] = {}
        pos = 0
        for slot in self._slots:
            counts = isinstance(self._data[pos], array) and (
                pos + 1 >= len(self._data) or isinstance(self._data[pos + 1], array)
            )
            idx, vals = self._slot_tiles(pos, counts)
            out[slot] = dict(zip(idx, vals, strict=True))
            pos += 1 if counts else 2
        return out

    def _relayout(self, view: ViewSpec) -> None:
        """Arrange the containers for ``view``'s slots, keeping tiles of slots it still has."""
        old = self.tiles if self._slots else {}
        data: list[Any] = []
        for slot in _layout_of(view):
            kept = sorted(old.get(slot.name, {}).items())
            if slot.counts:
                flat = array("q")
                for index, count in kept:
                    flat += array("q", (index, count))
                data.append(flat)
            else:
                data.append(array("q", (i for i, _ in kept)))
                data.append([p for _, p in kept])
        self._slots = view.slot_names
        self._data = data

    @classmethod
    def folded(cls, view: ViewSpec, events: Iterable[Mapping[str, Any]]) -> EntityTiles:
        """A new state with ``events`` (one entity's, in order) applied: the fold the
        stream runs, for a backfill or a restore that writes the result once."""
        tiles = cls()
        tiles._apply(view, events)
        return tiles

    def apply(self, view: ViewSpec, entity: str, event: Mapping[str, Any]) -> TileUpdate:
        """Add one event to its tiles and return the online update.

        Args:
            view: The view whose aggregations run.
            entity: The entity (see :func:`entity_id`).
            event: The decoded event; ``view.timestamp_field`` is in milliseconds.
        """
        return self.apply_all(view, entity, (event,))

    def apply_all(
        self, view: ViewSpec, entity: str, events: Iterable[Mapping[str, Any]]
    ) -> TileUpdate:
        """Add events (in arrival order) to their tiles; one update for them all.

        The update holds the final value of every tile changed and every tile evicted
        (a tile changed and then evicted is only deleted).
        """
        newest = self.max_event_ms
        touched, evicted = self._apply(view, events)
        sets: dict[Tile, tuple[Callable[[Any], bytes], Any]] = {
            (slot.name, index): (slot.aggregator.encode, partial)
            for (slot, index), partial in touched.items()
        }
        # Keys expire a retention after the write, plus the clock skew an event time may
        # have (it can be up to MAX_FUTURE_MS ahead of the wall clock).
        return TileUpdate(
            view.project,
            view.name,
            entity,
            sets,
            tuple((slot.name, index) for slot, index in evicted),
            self.max_event_ms if self.max_event_ms > newest else None,
            view.retention_ms + CLOCK_SKEW_MS,
        )

    def _apply(
        self, view: ViewSpec, events: Iterable[Mapping[str, Any]]
    ) -> tuple[dict[tuple[_Slot, int], Partial], list[tuple[_Slot, int]]]:
        """Add events to their tiles: the last partial of every tile changed, and the
        tiles evicted (a tile changed and then evicted is only evicted)."""
        if self._slots is not view.slot_names:
            self._relayout(view)
        layout = _layout_of(view)
        data = self._data
        time_field = view.timestamp_field
        touched: dict[tuple[_Slot, int], Partial] = {}
        evicted: list[tuple[_Slot, int]] = []
        for event in events:
            event_ms = int(event[time_field])
            for slot in layout:
                index = event_ms // slot.tile_ms
                if slot.counts:
                    touched[slot, index] = _count_one(data[slot.pos], index)
                    continue
                column = slot.column
                if column is None:
                    value: Any = event_ms
                else:
                    value = event.get(column)
                    if value is None:
                        continue
                    if slot.timed:
                        value = (event_ms, value)
                touched[slot, index] = _add_to_tile(
                    data[slot.pos], data[slot.pos + 1], index, slot.aggregator, value
                )
            if event_ms > self.max_event_ms:
                self.max_event_ms = event_ms
                for tile in self._evict(layout):
                    touched.pop(tile, None)
                    evicted.append(tile)
        return touched, evicted

    def restore_update(
        self, view: ViewSpec, entity: str, now_ms: int, within: tuple[int, int] | None = None
    ) -> TileUpdate | None:
        """The update that writes this whole state online as of ``now_ms``.

        Only tiles still within their slot's retention of ``now_ms`` are written (and
        with ``within = (start, end)``, only tiles lying wholly in ``[start, end)``: a
        tile a range covers partly would replace a complete one); the entity expires
        when its newest event leaves the view's retention. None when nothing of this
        entity is readable any more (used by backfill and to restore an emptied store).
        """
        if self.max_event_ms < now_ms - view.retention_ms:
            return None
        if self._slots is not view.slot_names:
            self._relayout(view)
        sets: dict[Tile, tuple[Callable[[Any], bytes], Any]] = {}
        for slot in _layout_of(view):
            first = (now_ms - slot.retention_ms) // slot.tile_ms
            encode = slot.aggregator.encode
            g = slot.tile_ms
            idx, vals = self._slot_tiles(slot.pos, slot.counts)
            for index, partial in zip(idx, vals, strict=True):
                if index < first or (
                    within is not None and (index * g < within[0] or (index + 1) * g > within[1])
                ):
                    continue
                sets[slot.name, index] = (encode, partial)
        ttl_ms = self.max_event_ms + view.retention_ms + CLOCK_SKEW_MS - now_ms
        return TileUpdate(
            view.project, view.name, entity, sets, (), self.max_event_ms, max(1, ttl_ms)
        )

    def _evict(self, layout: tuple[_Slot, ...]) -> list[tuple[_Slot, int]]:
        """Drop the tiles older than their slot's retention; return them."""
        dropped: list[tuple[_Slot, int]] = []
        data = self._data
        for slot in layout:
            first = (self.max_event_ms - slot.retention_ms) // slot.tile_ms
            if slot.counts:
                flat = data[slot.pos]
                if not flat or flat[0] >= first:
                    continue
                k = bisect_left(flat[0::2], first)
                dropped += [(slot, i) for i in flat[0 : 2 * k : 2]]
                del flat[: 2 * k]
            else:
                idx = data[slot.pos]
                if not idx or idx[0] >= first:
                    continue
                k = bisect_left(idx, first)
                dropped += [(slot, i) for i in idx[:k]]
                del idx[:k]
                del data[slot.pos + 1][:k]
        return dropped
