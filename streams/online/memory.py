"""An in-memory online store: both halves of the port in one process's dicts.

For unit tests of the code above the port (the engine's sink, restores, backfills,
the feature server's lookups): it keeps the port's semantics (tiles set per entity
as encoded bytes and decoded on read, expiry by the injected clock, progress only
with the marker, freshness per view) without a server. It is never the thing under
test of an integration test; :mod:`streams.online.redis` is.

Test affordances: :meth:`MemoryOnlineStore.fail_next` makes the next calls fail as
an unavailable store would, :meth:`MemoryOnlineStore.lose_everything` empties it as
a restarted server would, :meth:`MemoryOnlineStore.evict_tiles` drops the tiles as
a full server with an evicting policy would (and counts them),
:meth:`MemoryOnlineStore.put_feast_row` stores a batch view's row as
``feast materialize`` would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featurestream.clock import Clock, wall_clock_ms
from featurestream.errors import OnlineStoreUnavailable

from ..core import Partial, StoredTiles, TileUpdate, ViewSpec
from .base import (
    FeastRow,
    FeastRowRead,
    FeastRows,
    Marker,
    OnlineReader,
    OnlineStore,
    ProgressKey,
    Read,
    StoreStats,
    TilesRead,
    ViewProgress,
    ViewReady,
    ViewState,
    WriteResult,
    ready_answers,
    stats_needed,
)

__all__ = ["MemoryOnlineReader", "MemoryOnlineStore"]


@dataclass
class _Entity:
    tiles: dict[tuple[str, int], bytes] = field(default_factory=dict)
    newest_event_ms: int | None = None
    expires_at_ms: int = 0


class MemoryOnlineStore(OnlineStore):
    """The blocking half of the port in memory; :meth:`reader` gives the asyncio half on
    the same data.

    Args:
        clock: Decides expiry (entities expire ``ttl_ms`` after their last write) and
            the freshness records.
    """

    def __init__(self, clock: Clock = wall_clock_ms) -> None:
        self._clock = clock
        self._entities: dict[tuple[str, str, str], _Entity] = {}
        self._markers: dict[ViewState, str] = {}  # as encoded
        self._incarnation = 1
        self._evicted = 0
        self.eviction_policy = "noeviction"
        self._progress: dict[ViewState, dict[ProgressKey, int]] = {}
        self._freshness: dict[str, dict[str, int]] = {}
        self._rows: dict[tuple[FeastRows, tuple[Any, ...]], FeastRow] = {}
        self._failures = 0
        self.writes = 0

    # ------------------------------------------------------------ test affordances
    def fail_next(self, calls: int) -> None:
        """Make the next ``calls`` calls raise OnlineStoreUnavailable (nothing applied)."""
        self._failures = calls

    def lose_everything(self) -> None:
        """Forget everything, as a server restarted without persistence does."""
        self._entities.clear()
        self._markers.clear()
        self._progress.clear()
        self._freshness.clear()
        self._incarnation += 1
        self._evicted = 0

    def evict_tiles(self) -> None:
        """Drop every entity's tiles to free memory, counting each as evicted (the
        engine's records stay, as under a ``volatile-*`` policy: they do not expire)."""
        self._evicted += len(self._entities)
        self._entities.clear()

    def put_feast_row(
        self,
        rows: FeastRows,
        key_values: tuple[Any, ...],
        values: Mapping[str, bytes],
        timestamp: bytes | None,
    ) -> None:
        """Store a batch view's row (serialized ``ValueProto`` per feature)."""
        self._rows[(rows, key_values)] = FeastRow(
            tuple(values.get(f) for f in rows.features), timestamp
        )

    def _call(self) -> None:
        if self._failures:
            self._failures -= 1
            raise OnlineStoreUnavailable("the in-memory store was told to fail this call")

    def _live(self, project: str, view: str, entity: str) -> _Entity | None:
        held = self._entities.get((project, view, entity))
        if held is not None and held.expires_at_ms <= self._clock():
            del self._entities[(project, view, entity)]
            return None
        return held

    # ------------------------------------------------------------ the blocking half
    def ping(self) -> None:
        self._call()

    def write(
        self,
        updates: Sequence[TileUpdate],
        progress: Sequence[ViewProgress] = (),
        *,
        project: str = "",
    ) -> WriteResult:
        self._call()
        self.writes += 1
        now = self._clock()
        # What this write sets, after coalescing (as a store writing a batch at once).
        written: dict[tuple[str, str, str], set[Any]] = {}
        views: set[str] = set()
        for update in updates:
            key = (update.project, update.view, update.entity)
            entity = self._live(*key) or _Entity()
            self._entities[key] = entity
            values = written.setdefault(key, set())
            for tile in update.deletes:
                entity.tiles.pop(tile, None)
                values.discard(tile)
            for tile, (encode, value) in update.sets.items():
                entity.tiles[tile] = encode(value)
                values.add(tile)
            if update.newest_event_ms is not None:
                entity.newest_event_ms = update.newest_event_ms
                values.add("newest")
            entity.expires_at_ms = now + update.ttl_ms
            views.add(update.view)
        fields = sum(len(values) for values in written.values())
        lost = tuple(
            group.state
            for group in progress
            if group.check_marker and group.state not in self._markers
        )
        for group in progress:
            if group.state not in lost and group.offsets:
                self._progress.setdefault(group.state, {}).update(group.offsets)
        for view in views:
            self._freshness.setdefault(project, {})[view] = now
        return WriteResult(fields, lost)

    def read_tiles(
        self, requests: Sequence[tuple[ViewSpec, Sequence[str]]]
    ) -> list[list[StoredTiles | None]]:
        self._call()
        return [[self._stored(view, entity) for entity in entities] for view, entities in requests]

    def _stored(self, view: ViewSpec, entity: str) -> StoredTiles | None:
        held = self._live(view.project, view.name, entity)
        if held is None:
            return None
        slots = view.slots
        tiles: dict[str, dict[int, Partial]] = {slot: {} for slot in slots}
        for (slot, index), raw in held.tiles.items():
            spec = slots.get(slot)
            if spec is not None:
                tiles[slot][index] = spec.aggregator.decode(raw)
        return StoredTiles(tiles, held.newest_event_ms)

    def markers(self, states: Sequence[ViewState]) -> list[Marker | None]:
        self._call()
        return [self._marker(state) for state in states]

    def _marker(self, state: ViewState) -> Marker | None:
        text = self._markers.get(state)
        return None if text is None else Marker.decode(text)

    def set_marker(self, state: ViewState, marker: Marker) -> None:
        self._call()
        self._markers[state] = marker.encode()

    def progress(self, state: ViewState) -> dict[ProgressKey, int]:
        self._call()
        return dict(self._progress.get(state, {}))

    def freshness(self, project: str) -> dict[str, int]:
        self._call()
        return dict(self._freshness.get(project, {}))

    def entities(self, view: ViewSpec, limit: int) -> list[str]:
        self._call()
        found = [
            entity
            for (project, name, entity) in list(self._entities)
            if project == view.project
            and name == view.name
            and self._live(project, name, entity) is not None
        ]
        return found[:limit]

    def stats(self) -> StoreStats:
        self._call()
        return StoreStats(
            keys=len(self._entities),
            evicted_keys=self._evicted,
            eviction_policy=self.eviction_policy,
            max_bytes=0,
            incarnation=f"memory-{self._incarnation}",
        )

    def reader(self) -> MemoryOnlineReader:
        """The asyncio half of the port, reading this store."""
        return MemoryOnlineReader(self)

    def answer(self, reads: Sequence[Read]) -> list[StoredTiles | FeastRow | bool | None]:
        """The answers to a reader's reads (see :class:`MemoryOnlineReader`)."""
        self._call()
        out: list[Any] = []
        for read in reads:
            if isinstance(read, ViewReady):
                out.append(self._marker(ViewState.of(read.view)))
            elif isinstance(read, TilesRead):
                out.append(self._stored(read.view, read.entity))
            elif isinstance(read, FeastRowRead):
                empty = FeastRow((None,) * len(read.rows.features), None)
                out.append(self._rows.get((read.rows, read.key_values), empty))
        return ready_answers(reads, out, self.stats() if stats_needed(reads, out) else None)


class MemoryOnlineReader(OnlineReader):
    """The asyncio half of the port on a :class:`MemoryOnlineStore`."""

    def __init__(self, store: MemoryOnlineStore) -> None:
        self._store = store

    async def fetch(self, reads: Sequence[Read]) -> list[StoredTiles | FeastRow | bool | None]:
        return self._store.answer(reads)

    async def ping(self) -> None:
        self._store.ping()

    async def stats(self) -> StoreStats:
        return self._store.stats()

    async def close(self) -> None:
        """Nothing to release."""
