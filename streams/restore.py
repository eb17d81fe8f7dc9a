"""Restore the online tiles from the offline log after the online store lost them.

Redis in the local stack keeps nothing on disk: after a restart it is empty while
the engine's state and the offline log still hold everything. The log holds every
applied event, so folding each entity's events within the views' retention with
the stream's own tile code gives the tiles the engine had written. A resumed run
then replays what came after its last snapshot and sets those tiles again, whole.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from featurestream.clock import Clock, wall_clock_ms

from .core import EntityTiles, TileUpdate, ViewSpec, entity_id
from .offline.log import read_view_log
from .online import OnlineStore

__all__ = ["restore_online"]

log = logging.getLogger(__name__)


def restore_online(
    views: Sequence[ViewSpec],
    log_root: Path,
    store: OnlineStore,
    clock: Clock = wall_clock_ms,
) -> int:
    """Write the tiles still inside their retention at ``clock()``; return the entities."""
    now_ms = clock()
    total = 0
    for view in views:
        restored = store.write_many(_updates(view, log_root, now_ms), project=view.project)
        if restored:
            log.info("restored view=%s entities=%d from the offline log", view.name, restored)
        total += restored
    return total


def _updates(view: ViewSpec, log_root: Path, now_ms: int) -> Iterator[TileUpdate]:
    """Per entity with events in the retention: its tiles, folded as the stream does."""
    horizon = now_ms - view.retention_ms
    for key, events in read_view_log(log_root, view, since_ms=horizon).items():
        tiles = EntityTiles.folded(view, events.records(view, key))
        update = tiles.restore_update(view, entity_id(list(key)), now_ms)
        if update is not None:
            yield update
