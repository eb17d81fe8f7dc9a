"""Run a backfill: read the events, write the offline log and optionally the online tiles."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from featurestream.clock import Clock, wall_clock_ms
from featurestream.errors import ConfigError
from featurestream.events import AvroCodec

from ..core import ViewSpec
from ..offline.log import read_view_log, write_backfill
from ..online import OnlineStore
from .history import BackfillStats, History, TimeRange
from .sources import EventSource

__all__ = ["BackfillReport", "run_backfill"]


@dataclass
class BackfillReport:
    """The outcome of one backfill."""

    run_id: str
    stats: BackfillStats
    seconds: float
    files: dict[str, int] = field(default_factory=dict)
    online_entities: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        """Events read per second, end to end (read, check, fold, write)."""
        return self.stats.read / self.seconds if self.seconds > 0 else 0.0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def run_backfill(
    views: Sequence[ViewSpec],
    source: EventSource,
    time_range: TimeRange,
    codec: AvroCodec,
    log_root: Path,
    *,
    online: OnlineStore | None = None,
    horizon_ms: int | None = None,
    clock: Clock = wall_clock_ms,
) -> BackfillReport:
    """Backfill ``views`` over ``time_range`` from ``source``.

    The offline log receives every event of the range once, late ones included: copies
    of events it already holds are left out (the duplicate rule of the stream, with
    ``horizon_ms``), and repeated backfills of the same range and source replace their
    own files.
    With ``online``, the tiles lying wholly in the range and still inside their views'
    retention at ``clock()`` are set online, replacing those tiles: meant to bootstrap
    a view before its engine first runs (``--to`` at the stream's start). An engine
    that later applies an event to one of those tiles sets it from its own state.

    Raises:
        ConfigError: when the range holds no event of the views.
    """
    started = time.perf_counter()
    identity = f"{time_range.start_ms}|{time_range.end_ms}|{source.description}"
    run_id = hashlib.sha1(identity.encode(), usedforsecurity=False).hexdigest()[:10]
    history = History(views, time_range, horizon_ms)
    source.feed(history, codec)
    for view in views:
        horizon = max(view.allowed_lateness_ms, horizon_ms or 0)
        logged = read_view_log(
            log_root,
            view,
            since_ms=time_range.start_ms - horizon,
            until_ms=time_range.end_ms + horizon,
            skip=f"backfill-{run_id}-",  # this backfill's own earlier files: replaced
        )
        for key, events in logged.items():
            for record in events.records(view, key):
                history.known(view, record)
    stats = history.stats
    if not any(stats.applied.values()) and not stats.duplicates:
        seen = (
            "no valid events"
            if stats.first_event_ms is None or stats.last_event_ms is None
            else f"event times from {_iso(stats.first_event_ms)} to {_iso(stats.last_event_ms)}"
        )
        raise ConfigError(
            f"no events of {[v.name for v in views]} in [{_iso(time_range.start_ms)}, "
            f"{_iso(time_range.end_ms)}) in {source.description}: read {stats.read} events "
            f"({seen}); widen --from/--to"
        )
    report = BackfillReport(run_id, stats, 0.0)
    now_ms = clock()
    for view in views:
        records = history.records(view)
        if records:
            report.files[view.name] = len(write_backfill(log_root, view, records, run_id))
        if online is not None:
            report.online_entities[view.name] = _write_online(
                online, view, history, now_ms, (time_range.start_ms, time_range.end_ms)
            )
    report.seconds = time.perf_counter() - started
    return report


def _write_online(
    store: OnlineStore, view: ViewSpec, history: History, now_ms: int, within: tuple[int, int]
) -> int:
    updates = (
        tiles.restore_update(view, entity, now_ms, within)
        for entity, tiles in history.tiles(view).items()
    )
    return store.write_many((u for u in updates if u is not None), project=view.project)
