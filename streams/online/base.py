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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from featurestream.errors import ConfigError

from ..core import StoredTiles, TileUpdate, ViewSpec, read_view

__all__ = [
    "BUILDING",
    "READY",
    "FeastRow",
    "FeastRowRead",
    "FeastRows",
    "Marker",
    "OnlineReader",
    "OnlineStore",
    "ProgressKey",
    "Read",
    "StoreMark",
    "StoreStats",
    "TilesRead",
    "ViewProgress",
    "ViewReady",
    "ViewRows",
    "ViewState",
    "WriteResult",
    "check_eviction",
    "evicted_since",
    "eviction_risk",
    "ready_answers",
    "serves",
    "stats_needed",
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
    """Read whether a stream view is served with the other reads of a fetch: its marker
    is :data:`READY`, and the store dropped nothing since unless every entity read is
    there (answered by a bool, see :func:`serves`)."""

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
        eviction_policy: How it frees memory when full (None: not known; ``noeviction``:
            it refuses writes instead).
        max_bytes: The memory it may use (0: no limit; None: not known).
        incarnation: Tells one run of the store from the next (a restarted server has a
            new one; None: not known).
    """

    keys: int
    used_bytes: int | None = None
    evicted_keys: int | None = None
    eviction_policy: str | None = None
    max_bytes: int | None = None
    incarnation: str | None = None

    @property
    def evicting(self) -> bool:
        """The store drops records when full (any policy but ``noeviction``; tile records
        expire, so the ``volatile-*`` policies drop them too)."""
        return self.eviction_policy not in (None, "noeviction")


@dataclass(frozen=True, slots=True)
class StoreMark:
    """What the store said of its evictions when a view's marker was set: a later count
    above it means records, maybe the view's tiles, were dropped since.

    Attributes:
        incarnation: :attr:`StoreStats.incarnation` then.
        evicted_keys: :attr:`StoreStats.evicted_keys` then.
        evicting: The store's policy then dropped records when full.
    """

    incarnation: str | None
    evicted_keys: int
    evicting: bool

    @classmethod
    def of(cls, stats: StoreStats | None) -> StoreMark | None:
        """The mark of ``stats`` (None: the store does not count evictions)."""
        if stats is None or stats.evicted_keys is None:
            return None
        return cls(stats.incarnation, stats.evicted_keys, stats.evicting)

    def text(self) -> str:
        """The mark as text (``incarnation:evicted:evicting``)."""
        return f"{self.incarnation or '-'}:{self.evicted_keys}:{int(self.evicting)}"

    @classmethod
    def parse(cls, text: str) -> StoreMark | None:
        """The mark written by :meth:`text` (None for anything else)."""
        incarnation, _, rest = text.rpartition(":")
        incarnation, _, evicted = incarnation.rpartition(":")
        if not evicted.isdigit() or rest not in ("0", "1"):
            return None
        return cls(None if incarnation == "-" else incarnation, int(evicted), rest == "1")


@dataclass(frozen=True, slots=True)
class Marker:
    """A view's marker: :data:`READY` or :data:`BUILDING`, with the store's eviction
    count when its tiles were complete (ready) or its rebuild started (building).

    Attributes:
        state: :data:`READY` or :data:`BUILDING`.
        mark: The store's mark then (None: the store does not count evictions).
    """

    state: str
    mark: StoreMark | None = None

    @property
    def ready(self) -> bool:
        """The view's tiles were complete when the marker was set."""
        return self.state == READY

    def encode(self) -> str:
        """The marker as stored (``state`` or ``state mark``)."""
        return self.state if self.mark is None else f"{self.state} {self.mark.text()}"

    @classmethod
    def decode(cls, text: str) -> Marker:
        """The marker stored as ``text`` (by :meth:`encode`)."""
        state, _, mark = text.partition(" ")
        return cls(state, StoreMark.parse(mark) if mark else None)


def evicted_since(mark: StoreMark | None, stats: StoreStats | None) -> str | None:
    """Why the store may have dropped records since ``mark`` (None: it did not).

    A store that restarted (a new incarnation) counts from 0: records dropped before
    its restart are not counted, so a mark taken under a dropping policy cannot be
    trusted across one.
    """
    if stats is None or stats.evicted_keys is None:
        return None
    if mark is not None and mark.incarnation == stats.incarnation:
        if stats.evicted_keys > mark.evicted_keys:
            return (
                f"it evicted {stats.evicted_keys - mark.evicted_keys} keys to free memory "
                "since the tiles were complete"
            )
        return None
    if stats.evicted_keys > 0:
        return f"it evicted {stats.evicted_keys} keys to free memory"
    if mark is not None and mark.evicting:
        return (
            "it restarted since the tiles were complete and evicted keys when full before: "
            "what it dropped then is not counted"
        )
    return None


def serves(marker: Marker | None, missing: bool, stats: Callable[[], StoreStats]) -> bool:
    """Whether a read of a view is served: its tiles were complete when ``marker`` was
    set, and none of the read's entities is missing from the store (``missing``), or the
    store has dropped nothing since (``stats``, asked only then: it must answer after
    the entities were read).

    Evictions drop whole entity records, so an entity the store holds reads right
    whatever else was evicted; one it does not hold is unknown (never written) or lost,
    and only the store's eviction count since the marker tells which.
    """
    if marker is None or not marker.ready:
        return False
    return not missing or evicted_since(marker.mark, stats()) is None


def ready_answers(
    reads: Sequence[Read], answers: Sequence[Any], stats: StoreStats | None
) -> list[StoredTiles | FeastRow | bool | None]:
    """A reader's answers with each :class:`ViewReady`'s marker (or None) replaced by
    whether the view is served (:func:`serves`), ``stats`` being the store's after the
    reads (None when :func:`stats_needed` said no)."""
    if None not in answers:  # nearly always: every entity and marker is there
        return [
            answer.ready if isinstance(read, ViewReady) else answer
            for read, answer in zip(reads, answers, strict=True)
        ]
    missing = _missing_views(reads, answers)

    def latest() -> StoreStats:
        assert stats is not None, "stats_needed() said no"
        return stats

    return [
        serves(answer, (read.view.project, read.view.name) in missing, latest)
        if isinstance(read, ViewReady)
        else answer
        for read, answer in zip(reads, answers, strict=True)
    ]


def stats_needed(reads: Sequence[Read], answers: Sequence[Any]) -> bool:
    """Whether :func:`ready_answers` needs the store's stats: a ready view of the reads
    has an entity the store does not hold."""
    missing = _missing_views(reads, answers)
    return bool(missing) and any(
        isinstance(read, ViewReady)
        and isinstance(answer, Marker)
        and answer.ready
        and (read.view.project, read.view.name) in missing
        for read, answer in zip(reads, answers, strict=True)
    )


def _missing_views(reads: Sequence[Read], answers: Sequence[Any]) -> set[tuple[str, str]]:
    if None not in answers:  # nearly always: no read looked at
        return set()
    return {
        (read.view.project, read.view.name)
        for read, answer in zip(reads, answers, strict=True)
        if isinstance(read, TilesRead) and answer is None
    }


def eviction_risk(stats: StoreStats) -> str | None:
    """Why the store may drop the engine's tiles when full (None: it refuses writes
    instead, or has no memory limit and no dropping policy)."""
    if not stats.evicting:
        return None
    limit = (
        "no maxmemory limit yet (one set later makes it drop keys)"
        if not stats.max_bytes
        else f"maxmemory {stats.max_bytes} bytes"
    )
    return (
        f"the online store evicts keys when full (maxmemory-policy {stats.eviction_policy}, "
        f"{limit}), so it could drop tiles and reads of them would be wrong"
    )


def check_eviction(stats: StoreStats, *, allowed: bool) -> str | None:
    """Refuse a store that may evict tiles (:func:`eviction_risk`) unless ``allowed``;
    then return the warning to log (None: nothing to say).

    Raises:
        ConfigError: naming the policy and the fix.
    """
    risk = eviction_risk(stats)
    if risk is None:
        return None
    if allowed:
        return (
            f"{risk}; allowed by FEATURESTREAM_ALLOW_EVICTING_STORE: evictions are detected, "
            "the views answered as unavailable and their tiles restored"
        )
    raise ConfigError(
        f"{risk}: set maxmemory-policy noeviction (a full store then refuses writes, which "
        "are retried and reported), or FEATURESTREAM_ALLOW_EVICTING_STORE=true to run anyway"
    )


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
    def markers(self, states: Sequence[ViewState]) -> list[Marker | None]:
        """Each view's marker (None: none), in one round trip."""

    @abstractmethod
    def set_marker(self, state: ViewState, marker: Marker) -> None:
        """Set the view's marker."""

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
        """:meth:`read_tiles` with each view's readiness (see :func:`serves`).

        Backends answer both in one round trip; this default takes two.
        """
        markers = self.markers([ViewState.of(view) for view, _ in requests])
        return [
            ViewRows(serves(m, any(r is None for r in rows), self.stats), rows)
            for m, rows in zip(markers, self.read_tiles(requests), strict=True)
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
        a view whose tiles are not complete (see :func:`serves`) reads as missing values."""
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
        :class:`FeastRow` for a :class:`FeastRowRead`, a bool for a :class:`ViewReady`
        (:func:`serves`; a second round trip when a ready view has an entity the store
        does not hold: see :func:`stats_needed`)."""

    @abstractmethod
    async def stats(self) -> StoreStats:
        """What the store says of itself now."""

    @abstractmethod
    async def ping(self) -> None:
        """Return when the store answers in time."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections (and threads)."""
