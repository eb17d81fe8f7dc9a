"""The online-store port: what the engine, restores, backfills and the feature server
need of an online store, and nothing of how one lays out its data.

Two halves, one backend each way:

* :class:`OnlineStore` (blocking): the engine's sink writes tile updates together
  with the source progress they cover; restores and backfills write whole entity
  states; the Feast plugin, consistency checks and discovery read tiles, progress,
  freshness and engine markers.
* :class:`OnlineReader` (asyncio): the feature server fetches every read of a
  request (tiles of stream views, Feast-layout rows of batch views) in one round
  trip.

Implementations: :mod:`streams.online.redis` (the only package that knows keys,
fields, expiry, scripts and Redis errors) and :mod:`streams.online.memory` (for unit
tests of the code above the port). Every method raises
:class:`~featurestream.errors.OnlineStoreUnavailable` when the store does not answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core import StoredTiles, TileUpdate, ViewSpec, read_view

__all__ = [
    "BUILDING",
    "READY",
    "FeastRow",
    "FeastRowRead",
    "FeastRows",
    "OnlineReader",
    "OnlineStore",
    "ProgressKey",
    "Read",
    "StoreStats",
    "TilesRead",
    "ViewProgress",
    "ViewReady",
    "ViewRows",
    "ViewState",
    "WriteResult",
]

READY = "ready"
"""A view's marker when its tiles are complete: readers serve it."""
BUILDING = "building"
"""A view's marker while its engine builds its tiles (a new definition catching up, a
rebuild from the topics): readers do not serve it yet; a write that no longer finds
the marker knows the store lost what it held."""


@dataclass(frozen=True, slots=True)
class ProgressKey:
    """One source partition."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class ViewState:
    """The engine's records of one view definition (``state_id``): the progress of its
    source and its marker (:data:`READY`, :data:`BUILDING`, or absent)."""

    project: str
    view: str
    state_id: str

    @classmethod
    def of(cls, spec: ViewSpec) -> ViewState:
        """The records of ``spec``."""
        return cls(spec.project, spec.name, spec.state_id)


@dataclass(frozen=True, slots=True)
class ViewProgress:
    """What a write claims of one view.

    Attributes:
        state: The view.
        offsets: Next offset to process per source partition (may be empty).
        check_marker: The view's marker must be there; when it is not, nothing of this
            view's progress is recorded and the write reports the view lost.
    """

    state: ViewState
    offsets: Mapping[ProgressKey, int]
    check_marker: bool = False


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one write did.

    Attributes:
        fields: Values set, after coalescing: tiles, and the newest event time of each
            entity where it moved.
        lost: Views whose marker was checked and gone: the store lost the tiles written
            before (those of this write are complete: tile contents are set).
    """

    fields: int
    lost: tuple[ViewState, ...] = ()

    @property
    def marker_found(self) -> bool:
        """Every marker checked was there."""
        return not self.lost


@dataclass(frozen=True, slots=True)
class TilesRead:
    """Read one entity's tiles of a stream view (answered by :class:`StoredTiles` or
    None when the store holds nothing of the entity)."""

    view: ViewSpec
    entity: str


@dataclass(frozen=True, slots=True)
class FeastRows:
    """A batch view as Feast's online stores hold it (written by ``feast materialize``).

    Attributes:
        project: Feast project.
        view: The view's name in the store (Feast's versioned name).
        join_keys: Join keys, in entity order.
        key_types: Their Feast ``ValueType`` values.
        key_version: ``entity_key_serialization_version``.
        features: Features read, in order.
    """

    project: str
    view: str
    join_keys: tuple[str, ...]
    key_types: tuple[Any, ...]
    key_version: int
    features: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FeastRowRead:
    """Read one entity's row of a batch view (answered by :class:`FeastRow`)."""

    rows: FeastRows
    key_values: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class FeastRow:
    """One entity's row of a batch view: each feature's serialized ``ValueProto`` and the
    row's serialized ``Timestamp`` (None where the store has nothing)."""

    values: tuple[bytes | None, ...]
    timestamp: bytes | None


@dataclass(frozen=True, slots=True)
class ViewReady:
    """Read whether a stream view's tiles are complete, i.e. its marker is
    :data:`READY` (answered by a bool)."""

    view: ViewSpec


Read = TilesRead | FeastRowRead | ViewReady


@dataclass(frozen=True, slots=True)
class ViewRows:
    """One view's rows of a read (see :meth:`OnlineStore.read_views`)."""

    ready: bool
    rows: list[StoredTiles | None]


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What the store says of itself.

    Attributes:
        keys: Records it holds (entities' tiles and the engine's records).
        used_bytes: Memory it uses (None: not known).
        evicted_keys: Records it dropped to free memory since it started (None: not known).
        eviction_policy: How it frees memory when full (None: not known).
    """

    keys: int
    used_bytes: int | None = None
    evicted_keys: int | None = None
    eviction_policy: str | None = None


class OnlineStore(ABC):
    """The blocking half of the port. Construction does no I/O."""

    @abstractmethod
    def ping(self) -> None:
        """Return when the store answers."""

    @abstractmethod
    def write(
        self,
        updates: Sequence[TileUpdate],
        progress: Sequence[ViewProgress] = (),
        *,
        project: str = "",
    ) -> WriteResult:
        """Apply tile updates and the source progress they cover, atomically: progress
        is never recorded without the tiles of the events it claims.

        Updates of one entity are coalesced (the last value of a tile wins; a tile set
        after it was deleted is set). For a view whose marker is checked and gone, the
        tiles are written, its progress is not, and the result names it (tiles written
        before may be gone: the caller restores them).

        Args:
            updates: Tile updates, in the order they were made.
            progress: Per view, what the write claims.
            project: The project of the freshness records.
        """

    @abstractmethod
    def read_tiles(
        self, requests: Sequence[tuple[ViewSpec, Sequence[str]]]
    ) -> list[list[StoredTiles | None]]:
        """Per ``(view, entities)`` request, each entity's tiles (None: nothing stored),
        in one round trip."""

    @abstractmethod
    def markers(self, states: Sequence[ViewState]) -> list[str | None]:
        """Each view's marker (:data:`READY`, :data:`BUILDING` or None), in one round trip."""

    @abstractmethod
    def set_marker(self, state: ViewState, value: str) -> None:
        """Set the view's marker to ``value`` (:data:`READY` or :data:`BUILDING`)."""

    @abstractmethod
    def progress(self, state: ViewState) -> dict[ProgressKey, int]:
        """The view's next offset to process per source partition, as last written."""

    @abstractmethod
    def freshness(self, project: str) -> dict[str, int]:
        """Wall-clock ms of the last online write per stream view."""

    @abstractmethod
    def entities(self, view: ViewSpec, limit: int) -> list[str]:
        """Up to ``limit`` entities of ``view`` that have tiles, in no particular order."""

    @abstractmethod
    def stats(self) -> StoreStats:
        """What the store holds and how it manages its memory."""

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections."""

    # ------------------------------------------------ derived: one version for every backend
    def write_many(self, updates: Iterable[TileUpdate], *, project: str, batch: int = 2_000) -> int:
        """Apply many tile updates in :meth:`write` calls of ``batch``; return how many."""
        pending: list[TileUpdate] = []
        count = 0
        for update in updates:
            pending.append(update)
            count += 1
            if len(pending) >= batch:
                self.write(pending, project=project)
                pending = []
        if pending:
            self.write(pending, project=project)
        return count

    def has_marker(self, state: ViewState) -> bool:
        """Whether the view has a marker (ready or building)."""
        return self.markers([state])[0] is not None

    def read_views(self, requests: Sequence[tuple[ViewSpec, Sequence[str]]]) -> list[ViewRows]:
        """:meth:`read_tiles` with each view's readiness (its marker is :data:`READY`).

        Backends answer both in one round trip; this default takes two.
        """
        ready = self.markers([ViewState.of(view) for view, _ in requests])
        return [
            ViewRows(r == READY, rows)
            for r, rows in zip(ready, self.read_tiles(requests), strict=True)
        ]

    def read(
        self,
        requests: Sequence[tuple[ViewSpec, Sequence[str]]],
        read_time_ms: int,
        *,
        only_ready: bool = False,
    ) -> list[list[tuple[dict[str, Any], int | None]]]:
        """Every aggregation of each view for each entity at ``read_time_ms``, with the
        entity's newest event time (None: none), in one round trip. With ``only_ready``,
        a view whose tiles are not complete (see :data:`READY`) reads as missing values."""
        out: list[list[tuple[dict[str, Any], int | None]]] = []
        if only_ready:
            answers = self.read_views(requests)
        else:
            answers = [ViewRows(True, rows) for rows in self.read_tiles(requests)]
        for (view, _), answer in zip(requests, answers, strict=True):
            if not answer.ready:
                missing = dict.fromkeys((a.name for a in view.aggregations), None)
                out.append([(dict(missing), None) for _ in answer.rows])
                continue
            out.append(
                [
                    (read_view(view, s, read_time_ms), None if s is None else s.newest_event_ms)
                    for s in answer.rows
                ]
            )
        return out


class OnlineReader(ABC):
    """The asyncio half of the port (the feature server). Construction does no I/O."""

    @abstractmethod
    async def fetch(self, reads: Sequence[Read]) -> list[StoredTiles | FeastRow | bool | None]:
        """The answer to every read, in order, in one round trip within the reader's
        deadline: :class:`StoredTiles` or None for a :class:`TilesRead`,
        :class:`FeastRow` for a :class:`FeastRowRead`, a bool for a :class:`ViewReady`."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the store answers in time."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections (and threads)."""
