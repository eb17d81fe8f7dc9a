"""Tile arithmetic, per-entity tile state and the read-time merge.

An event with event time ``e`` belongs to tile ``floor(e / g)``. A read at time
``t`` of a window ``W`` merges tiles ``floor(t/g) - W/g .. floor(t/g)``, i.e. the
events with ``floor(t/g)*g - W <= event_time``: the value drops as tiles leave
the window, whether or not new events arrive.

Online layout (one Redis hash per view and entity, read in one round trip):

* key ``fst:{project}:{view}:{entity}``, entity = the join key value (several: a JSON array)
* field ``{slot}:{tile_index}`` -> the aggregator's encoded partial
* field ``_last_ms`` -> newest event time applied for this entity
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .aggregators import Partial
from .spec import AggregationSpec, ViewSpec

__all__ = [
    "LAST_EVENT_FIELD",
    "EntityTiles",
    "TileUpdate",
    "decode_tiles",
    "entity_id",
    "read_view",
    "read_window",
    "tile_field",
    "tile_key",
    "window_tile_range",
]

LAST_EVENT_FIELD = "_last_ms"
_SKEW_MS = 5 * 60 * 1000  # featurestream.events.MAX_FUTURE_MS (the core imports no adapters)


def entity_id(values: Sequence[Any]) -> str:
    """The entity part of a key: the join key value as decimal/text, or for several
    join keys a JSON array of them (unambiguous whatever the values contain)."""
    if len(values) == 1:
        return str(values[0])
    return json.dumps(list(values), separators=(",", ":"))


def tile_key(project: str, view: str, entity: str) -> str:
    """Redis key of one entity's tiles in one view."""
    return f"fst:{project}:{view}:{entity}"


def tile_field(slot: str, tile_index: int) -> str:
    """Hash field of one tile."""
    return f"{slot}:{tile_index}"


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


def decode_tiles(view: ViewSpec, raw: Mapping[bytes, bytes]) -> dict[str, dict[int, Partial]]:
    """Parse one entity's hash (as returned by HGETALL) into partials per slot.

    Fields of slots the view no longer has (an old definition) are ignored.
    """
    slots = view.slots
    out: dict[str, dict[int, Partial]] = {slot: {} for slot in slots}
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else field
        slot, sep, index = name.partition(":")
        spec = slots.get(slot)
        if not sep or spec is None:
            continue
        out[slot][int(index)] = spec.aggregator.decode(value)
    return out


def read_view(view: ViewSpec, raw: Mapping[bytes, bytes], read_time_ms: int) -> dict[str, Any]:
    """Every aggregation of ``view`` for one entity at ``read_time_ms``."""
    tiles = decode_tiles(view, raw)
    return {agg.name: read_window(agg, tiles[agg.slot], read_time_ms) for agg in view.aggregations}


def _encode_int(value: int) -> bytes:
    return str(value).encode()


@dataclass(frozen=True)
class TileUpdate:
    """What one change of an entity's state writes online.

    Tile contents are *set*, never incremented, so writing the same update twice
    (a replay after a crash) leaves the same value. ``values`` holds each field's
    partial with its encoder: a writer coalescing a batch encodes only the last
    value of every field.
    """

    key: str
    values: dict[str, tuple[Callable[[Any], bytes], Any]]
    deletes: tuple[str, ...]
    ttl_ms: int

    @property
    def sets(self) -> dict[str, bytes]:
        """The encoded field values."""
        return {name: encode(value) for name, (encode, value) in self.values.items()}


class EntityTiles:
    """The tiles of one entity in one view: the per-key state of the dataflow.

    Compact: per tile slot, a sorted ``array('q')`` of tile indices and the
    partials in a parallel container (``array('q')`` for counts, a list for the
    others); only tiles within ``view.retention_ms`` of the newest event applied
    are kept. Picklable (Bytewax snapshots it).
    """

    __slots__ = ("_idx", "_slots", "_vals", "max_event_ms")

    def __init__(self) -> None:
        self.max_event_ms: int = -1
        self._slots: tuple[str, ...] = ()
        self._idx: list[array[int]] = []
        self._vals: list[Any] = []

    def __getstate__(self) -> tuple[int, tuple[str, ...], list[array[int]], list[Any]]:
        return (self.max_event_ms, self._slots, self._idx, self._vals)

    def __setstate__(self, state: tuple[int, tuple[str, ...], list[array[int]], list[Any]]) -> None:
        self.max_event_ms, self._slots, self._idx, self._vals = state

    @property
    def tiles(self) -> dict[str, dict[int, Partial]]:
        """The tiles as ``{slot: {tile index: partial}}`` (a copy, for reads and tests)."""
        return {
            slot: dict(zip(idx, vals, strict=True))
            for slot, idx, vals in zip(self._slots, self._idx, self._vals, strict=True)
        }

    def _layout(self, view: ViewSpec) -> None:
        """Arrange the containers for ``view``'s slots, keeping tiles of slots it still has."""
        old = dict(zip(self._slots, zip(self._idx, self._vals, strict=True), strict=True))
        self._slots = view.slot_names
        self._idx, self._vals = [], []
        for slot, agg in view.slot_items:
            idx, vals = old.get(slot, (array("q"), array("q") if agg.function == "count" else []))
            self._idx.append(idx)
            self._vals.append(vals)

    def apply(self, view: ViewSpec, key: str, event: Mapping[str, Any]) -> TileUpdate:
        """Add one event to its tiles and return the online update.

        Args:
            view: The view whose aggregations run.
            key: The Redis key of this entity (see :func:`tile_key`).
            event: The decoded event; ``view.timestamp_field`` is in milliseconds.
        """
        if self._slots is not view.slot_names:
            self._layout(view)
        event_ms = int(event[view.timestamp_field])
        sets: dict[str, tuple[Callable[[Any], bytes], Any]] = {}
        for pos, (slot, agg) in enumerate(view.slot_items):
            value = event.get(agg.column)
            if value is None and agg.function != "count":
                continue
            if agg.function == "last":
                value = (event_ms, value)
            aggregator = agg.aggregator
            index = event_ms // agg.tile_ms
            idx = self._idx[pos]
            vals = self._vals[pos]
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
            partial = aggregator.add(vals[i], value)
            vals[i] = partial
            sets[tile_field(slot, index)] = (aggregator.encode, partial)
        deletes: tuple[str, ...] = ()
        if event_ms > self.max_event_ms:
            self.max_event_ms = event_ms
            sets[LAST_EVENT_FIELD] = (_encode_int, event_ms)
            deletes = self._evict(view)
        # Keys expire a retention after the write, plus the clock skew an event time may
        # have (it can be up to MAX_FUTURE_MS ahead of the wall clock).
        return TileUpdate(
            key=key, values=sets, deletes=deletes, ttl_ms=view.retention_ms + _SKEW_MS
        )

    def restore_update(
        self, view: ViewSpec, key: str, now_ms: int, within: tuple[int, int] | None = None
    ) -> TileUpdate | None:
        """The update that writes this whole state online as of ``now_ms``.

        Only tiles still within ``view.retention_ms`` of ``now_ms`` are written (and with
        ``within = (start, end)``, only tiles lying wholly in ``[start, end)``: a tile a
        range covers partly would replace a complete one); the key expires when the
        newest event leaves the retention. None when nothing of this entity is readable
        any more (used by backfill and to restore an emptied store).
        """
        horizon_ms = now_ms - view.retention_ms
        if self.max_event_ms < horizon_ms:
            return None
        if self._slots is not view.slot_names:
            self._layout(view)
        sets: dict[str, tuple[Callable[[Any], bytes], Any]] = {}
        for slot, idx, vals, (_, agg) in zip(
            self._slots, self._idx, self._vals, view.slot_items, strict=True
        ):
            first = horizon_ms // agg.tile_ms
            encode = agg.aggregator.encode
            g = agg.tile_ms
            for index, partial in zip(idx, vals, strict=True):
                if index < first or (
                    within is not None and (index * g < within[0] or (index + 1) * g > within[1])
                ):
                    continue
                sets[tile_field(slot, index)] = (encode, partial)
        sets[LAST_EVENT_FIELD] = (_encode_int, self.max_event_ms)
        ttl_ms = self.max_event_ms + view.retention_ms + _SKEW_MS - now_ms
        return TileUpdate(key=key, values=sets, deletes=(), ttl_ms=max(1, ttl_ms))

    def _evict(self, view: ViewSpec) -> tuple[str, ...]:
        horizon_ms = self.max_event_ms - view.retention_ms
        dropped: list[str] = []
        for pos, (slot, agg) in enumerate(view.slot_items):
            idx = self._idx[pos]
            if not idx or idx[0] >= horizon_ms // agg.tile_ms:
                continue
            k = bisect_left(idx, horizon_ms // agg.tile_ms)
            dropped += [tile_field(slot, i) for i in idx[:k]]
            del idx[:k]
            del self._vals[pos][:k]
        return tuple(dropped)
