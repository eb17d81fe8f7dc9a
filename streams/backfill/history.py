"""The backfill's accumulation: events in a time range, each once, per view (pure).

Every valid event of a view's topic whose event time lies in ``[start, end)`` is
kept once (by ``event_id``). Unlike the stream, a backfill applies late events too:
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
    """

    def __init__(self, views: Sequence[ViewSpec], time_range: TimeRange) -> None:
        self.views = tuple(views)
        self.range = time_range
        self.stats = BackfillStats(applied={v.name: 0 for v in self.views})
        self._by_topic: dict[str, list[ViewSpec]] = {}
        for view in self.views:
            self._by_topic.setdefault(view.topic, []).append(view)
        self._records: dict[str, list[dict[str, Any]]] = {t: [] for t in self._by_topic}
        self._sorted: set[str] = set()
        self._seen: dict[str, set[str]] = {t: set() for t in self._by_topic}

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
        self.stats.read += 1
        self.stats.invalid[kind] += 1

    def add(self, topic: str, record: Mapping[str, Any]) -> None:
        """Keep one valid event of ``topic`` (decoded with the topic's contract)."""
        stats = self.stats
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
        event_id = record["event_id"]
        seen = self._seen[topic]
        if event_id in seen:
            stats.duplicates += 1
            return
        seen.add(event_id)
        self._records[topic].append(record if isinstance(record, dict) else dict(record))
        self._sorted.discard(topic)
        for view in views:
            stats.applied[view.name] += 1

    def records(self, view: ViewSpec) -> list[dict[str, Any]]:
        """The kept events of ``view``'s topic, in (event time, event id) order."""
        records = self._records[view.topic]
        if view.topic not in self._sorted:
            time_field = view.timestamp_field
            records.sort(key=lambda r: (r[time_field], r["event_id"]))
            self._sorted.add(view.topic)
        return records

    def tiles(self, view: ViewSpec) -> dict[str, EntityTiles]:
        """Per entity (see :func:`~streams.core.entity_id`), the tiles of its events."""
        by_entity: dict[str, list[dict[str, Any]]] = {}
        keys = view.join_keys
        for record in self.records(view):
            by_entity.setdefault(entity_id([record[k] for k in keys]), []).append(record)
        return {entity: EntityTiles.folded(view, events) for entity, events in by_entity.items()}
