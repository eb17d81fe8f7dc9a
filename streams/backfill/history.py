"""The backfill's accumulation: events in a time range, each once, per view (pure).

Every valid event of a view's topic whose event time lies in ``[start, end)`` is
kept once (by ``event_id``). Unlike the stream, a backfill applies late events too:
it rebuilds history from everything that happened, which is how events dropped
online as late reach the offline log. Tiles are folded by the same
:class:`~streams.core.EntityTiles` the dataflow runs, in event-time order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featurestream.errors import ConfigError

from ..core import EntityTiles, ViewSpec, entity_id, tile_key
from ..flow.dataflow import LogRow

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
        self._columns = {
            v.name: tuple(dict.fromkeys(a.column for a in v.aggregations)) for v in self.views
        }
        self._rows: dict[str, list[LogRow]] = {v.name: [] for v in self.views}
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
        for view in views:
            self._rows[view.name].append(
                LogRow(
                    view.name,
                    {k: record[k] for k in view.join_keys},
                    record[view.timestamp_field],
                    event_id,
                    {c: record.get(c) for c in self._columns[view.name]},
                )
            )
            stats.applied[view.name] += 1

    def rows(self, view: ViewSpec) -> list[LogRow]:
        """The kept events of ``view``, in (event time, event id) order."""
        rows = self._rows[view.name]
        rows.sort(key=lambda r: (r.event_time_ms, r.event_id))
        return rows

    def tiles(self, view: ViewSpec) -> dict[str, EntityTiles]:
        """Per entity key (see :func:`~streams.core.tile_key`), the tiles of its events."""
        out: dict[str, EntityTiles] = {}
        for row in self.rows(view):
            entity = entity_id([row.entity[k] for k in view.join_keys])
            key = tile_key(view.project, view.name, entity)
            tiles = out.get(key)
            if tiles is None:
                tiles = out[key] = EntityTiles()
            event = {**row.values, **row.entity, view.timestamp_field: row.event_time_ms}
            tiles.apply(view, key, event)
        return out
