"""Restore the online tiles from the offline log after Redis lost them.

Redis in the local stack keeps nothing on disk: after a restart it is empty while
the engine's state and the offline log still hold everything. The log holds every
applied event, so folding each entity's events within the views' retention with
the stream's own tile code gives the tiles the engine had written. A resumed run
then replays what came after its last snapshot and sets those tiles again, whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..core import EntityTiles, TileUpdate, ViewSpec, entity_id, tile_key
from ..offline.log import read_view_log
from ..online.tile_store import TileStore

__all__ = ["restore_online"]

log = logging.getLogger(__name__)


def restore_online(
    views: Sequence[ViewSpec], log_root: Path, store: TileStore, now_ms: int | None = None
) -> int:
    """Write the tiles still inside their retention at ``now_ms``; return the entities."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    total = 0
    for view in views:
        restored = store.write_many(_updates(view, log_root, now_ms), project=view.project)
        log.warning("restored view=%s entities=%d from the offline log", view.name, restored)
        total += restored
    return total


def _updates(view: ViewSpec, log_root: Path, now_ms: int) -> Iterator[TileUpdate]:
    """Per entity with events in the retention: its tiles, folded as the stream does."""
    horizon = now_ms - view.retention_ms
    for key, events in read_view_log(log_root, view, since_ms=horizon).items():
        redis_key = tile_key(view.project, view.name, entity_id(list(key)))
        tiles = EntityTiles()
        for i, t in enumerate(events.times_ms):
            event = {c: events.columns[c][i] for c in view.columns}
            event.update(zip(view.join_keys, key, strict=True))
            event[view.timestamp_field] = t
            tiles.apply(view, redis_key, event)
        update = tiles.restore_update(view, redis_key, now_ms)
        if update is not None:
            yield update
