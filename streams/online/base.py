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
    "EngineMarker",
    "FeastRow",
    "FeastRowRead",
    "FeastRows",
    "OnlineReader",
    "OnlineStore",
    "ProgressKey",
    "Read",
    "StoreStats",
    "TilesRead",
    "WriteResult",
]


@dataclass(frozen=True, slots=True)
class ProgressKey:
    """One source partition."""

    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class EngineMarker:
    """Set when an engine (a set of views of a project) starts with its tiles in place;
    its absence during the run means the store lost what it held (restarted empty)."""

    project: str
    engine: str


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one write did.

    Attributes:
        fields: Values set, after coalescing: tiles, and the newest event time of each
            entity where it moved.
        marker_found: The engine's marker was there (True when no marker was asked
            about). When it was not, the progress of the write was not recorded.
    """

    fields: int
    marker_found: bool = True


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


Read = TilesRead | FeastRowRead


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
        progress: Mapping[ProgressKey, int] | None = None,
        *,
        project: str = "",
        marker: EngineMarker | None = None,
    ) -> WriteResult:
        """Apply tile updates and the source progress they cover, atomically: progress
        is never recorded without the tiles of the events it claims.

        Updates of one entity are coalesced (the last value of a tile wins; a tile set
        after it was deleted is set). With ``marker``, the write tells whether the
        marker was there; when it was not, the tiles are written and the progress is
        not (tiles written before may be gone: the caller restores them).

        Args:
            updates: Tile updates, in the order they were made.
            progress: Next offset to process per source partition.
            project: The project of the progress and freshness records.
            marker: The engine's marker to check.
        """

    @abstractmethod
    def read_tiles(
        self, requests: Sequence[tuple[ViewSpec, Sequence[str]]]
    ) -> list[list[StoredTiles | None]]:
        """Per ``(view, entities)`` request, each entity's tiles (None: nothing stored),
        in one round trip."""

    @abstractmethod
    def has_marker(self, marker: EngineMarker) -> bool:
        """Whether ``marker`` is set."""

    @abstractmethod
    def set_marker(self, marker: EngineMarker) -> None:
        """Set ``marker``: this engine's tiles are in place."""

    @abstractmethod
    def progress(self, project: str) -> dict[ProgressKey, int]:
        """The next offset to process per source partition, as last written."""

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

    def read(
        self, requests: Sequence[tuple[ViewSpec, Sequence[str]]], read_time_ms: int
    ) -> list[list[tuple[dict[str, Any], int | None]]]:
        """Every aggregation of each view for each entity at ``read_time_ms``, with the
        entity's newest event time (None: none), in one round trip."""
        out: list[list[tuple[dict[str, Any], int | None]]] = []
        for (view, _), stored in zip(requests, self.read_tiles(requests), strict=True):
            out.append(
                [
                    (read_view(view, s, read_time_ms), None if s is None else s.newest_event_ms)
                    for s in stored
                ]
            )
        return out


class OnlineReader(ABC):
    """The asyncio half of the port (the feature server). Construction does no I/O."""

    @abstractmethod
    async def fetch(self, reads: Sequence[Read]) -> list[StoredTiles | FeastRow | None]:
        """The answer to every read, in order, in one round trip within the reader's
        deadline: :class:`StoredTiles` or None for a :class:`TilesRead`,
        :class:`FeastRow` for a :class:`FeastRowRead`."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the store answers in time."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections (and threads)."""
