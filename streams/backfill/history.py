"""The backfill's accumulation: events in a time range, each once, per view (pure).

Every valid event of a view's topic whose event time lies in ``[start, end)`` is
kept once, by the stream's rule (``streams.core.gate``): messages with one
``event_id`` whose event times are within the duplicate horizon of each other are
one event; here, in event-time order, the earliest is kept, and a copy of an event
the offline log already holds (:meth:`History.known`) is left out. Unlike the
stream, a backfill applies late events too:
it rebuilds history from everything that happened, which is how events dropped
online as late reach the offline log. Tiles are folded by the same
:class:`~streams.core.EntityTiles` the dataflow runs, in event-time order; events
are kept as the decoded records the stream applies and the log stores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featurestream.errors import ConfigError

from ..core import EntityTiles, ViewSpec, entity_id

__all__ = ["BackfillStats", "History", "TimeRange"]


@dataclass(frozen=True)
class TimeRange:
    """Event times ``start_ms <= t < end_ms`` (epoch milliseconds)."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms <= self.start_ms:
            raise ConfigError(
                f"empty backfill range: --to ({self.end_ms} ms) must be after "
                f"--from ({self.start_ms} ms)"
            )

    def __contains__(self, event_time_ms: object) -> bool:
        return isinstance(event_time_ms, int) and self.start_ms <= event_time_ms < self.end_ms


@dataclass
class BackfillStats:
    """What a backfill read and what became of it."""

    read: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    outside_range: int = 0
    first_event_ms: int | None = None
    last_event_ms: int | None = None
    applied: dict[str, int] = field(default_factory=dict)


class History:
    """Accumulates the events of ``views`` within ``time_range``.

    Args:
        views: The stream views to backfill.
        time_range: Event times to keep.
        horizon_ms: The duplicate horizon (at least each topic's largest lateness;
            None: that lateness).
    """

    def __init__(
        self, views: Sequence[ViewSpec], time_range: TimeRange, horizon_ms: int | None = None
    ) -> None:
        self.views = tuple(views)
        self.range = time_range
        self._stats = BackfillStats(applied={v.name: 0 for v in self.views})
        self._by_topic: dict[str, list[ViewSpec]] = {}
        for view in self.views:
            self._by_topic.setdefault(view.topic, []).append(view)
        self._records: dict[str, list[dict[str, Any]]] = {t: [] for t in self._by_topic}
        self._kept: dict[str, list[dict[str, Any]] | None] = dict.fromkeys(self._by_topic)
        # Events the offline log already holds: per view (for its tiles), and their ids'
        # event times per topic (copies of them are left out).
        self._known: dict[str, list[dict[str, Any]]] = {v.name: [] for v in self.views}
        self._known_ids: dict[str, dict[str, list[int]]] = {t: {} for t in self._by_topic}
        self._counted_duplicates = dict.fromkeys(self._by_topic, 0)
        self._horizon = {
            topic: max(horizon_ms or 0, *(v.allowed_lateness_ms for v in views))
            for topic, views in self._by_topic.items()
        }

    @property
    def stats(self) -> BackfillStats:
        """What was read and what became of it (duplicates decided over everything fed)."""
        for topic in self._by_topic:
            self._dedupe(topic)
        return self._stats

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics the views read."""
        return tuple(self._by_topic)

    def time_field(self, topic: str) -> str | None:
        """The event-time field of ``topic``'s views (None: no view reads it)."""
        views = self._by_topic.get(topic)
        return views[0].timestamp_field if views else None

    def reject(self, kind: str) -> None:
        """Count one event that could not be read (by kind: ``not_avro``, ``out_of_range``...)."""
        self._stats.read += 1
        self._stats.invalid[kind] += 1

    def add(self, topic: str, record: Mapping[str, Any]) -> None:
        """Keep one valid event of ``topic`` (decoded with the topic's contract)."""
        stats = self._stats
        stats.read += 1
        views = self._by_topic.get(topic)
        if not views:
            return
        event_ms = record[views[0].timestamp_field]
        if stats.first_event_ms is None or event_ms < stats.first_event_ms:
            stats.first_event_ms = event_ms
        if stats.last_event_ms is None or event_ms > stats.last_event_ms:
            stats.last_event_ms = event_ms
        if event_ms not in self.range:
            stats.outside_range += 1
            return
        self._records[topic].append(record if isinstance(record, dict) else dict(record))
        self._kept[topic] = None

    def known(self, view: ViewSpec, record: Mapping[str, Any]) -> None:
        """An event of ``view`` the offline log already holds (as the log stores it):
        copies of it are left out, and it counts in the view's tiles."""
        t = record[view.timestamp_field]
        ids = self._known_ids[view.topic].setdefault(record["event_id"], [])
        if t not in ids:
            ids.append(t)
        if t in self.range:
            self._known[view.name].append(dict(record))
        self._kept[view.topic] = None

    def _dedupe(self, topic: str) -> list[dict[str, Any]]:
        """The events of ``topic`` each once, in (event time, event id) order."""
        kept = self._kept[topic]
        if kept is not None:
            return kept
        time_field = self._by_topic[topic][0].timestamp_field
        records = sorted(self._records[topic], key=lambda r: (r[time_field], r["event_id"]))
        horizon = self._horizon[topic]
        times: dict[str, list[int]] = {k: list(v) for k, v in self._known_ids[topic].items()}
        kept = []
        for record in records:
            t = record[time_field]
            seen = times.get(record["event_id"])
            if seen is not None and any(abs(t - s) <= horizon for s in seen):
                continue
            times.setdefault(record["event_id"], []).append(t)
            kept.append(record)
        self._stats.duplicates += len(records) - len(kept) - self._counted_duplicates[topic]
        self._counted_duplicates[topic] = len(records) - len(kept)
        for view in self._by_topic[topic]:
            self._stats.applied[view.name] = len(kept)
        self._kept[topic] = kept
        return kept

    def records(self, view: ViewSpec) -> list[dict[str, Any]]:
        """The kept events of ``view``'s topic, in (event time, event id) order."""
        return self._dedupe(view.topic)

    def tiles(self, view: ViewSpec) -> dict[str, EntityTiles]:
        """Per entity (see :func:`~streams.core.entity_id`), the tiles of its events in the
        range: those kept and those the log already held."""
        by_entity: dict[str, list[dict[str, Any]]] = {}
        keys = view.join_keys
        time_field = view.timestamp_field
        every = sorted(
            [*self.records(view), *self._known[view.name]],
            key=lambda r: (r[time_field], r["event_id"]),
        )
        for record in every:
            by_entity.setdefault(entity_id([record[k] for k in keys]), []).append(record)
        return {entity: EntityTiles.folded(view, events) for entity, events in by_entity.items()}
