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
from collections.abc import Sequence
from pathlib import Path

from ..core import EntityTiles, TileUpdate, ViewSpec, entity_id, tile_key
from ..offline.log import read_view_log
from ..online.tile_store import TileStore

__all__ = ["restore_online"]

log = logging.getLogger(__name__)

_BATCH = 2_000


def restore_online(
    views: Sequence[ViewSpec], log_root: Path, store: TileStore, now_ms: int | None = None
) -> int:
    """Write the tiles still inside their retention at ``now_ms``; return the entities."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    total = 0
    for view in views:
        restored = 0
        horizon = now_ms - view.retention_ms
        batch: list[TileUpdate] = []
        for key, events in read_view_log(log_root, view, since_ms=horizon).items():
            times = events.times_ms
            if not times or times[-1] < horizon:
                continue
            entity = entity_id(list(key))
            redis_key = tile_key(view.project, view.name, entity)
            tiles = EntityTiles()
            for i, t in enumerate(times):
                if t < horizon:
                    continue
                event = {c: events.columns[c][i] for c in view.columns}
                event.update(zip(view.join_keys, key, strict=True))
                event[view.timestamp_field] = t
                tiles.apply(view, redis_key, event)
            update = tiles.restore_update(view, redis_key, now_ms)
            if update is not None:
                batch.append(update)
                restored += 1
            if len(batch) >= _BATCH:
                store.write(batch, project=view.project)
                batch = []
        if batch:
            store.write(batch, project=view.project)
        log.warning("restored view=%s entities=%d from the offline log", view.name, restored)
        total += restored
    return total
