"""The online tile store (Redis) and the Feast online store plugin.

``streams.online.feast_store`` is imported by Feast by class path; it is not
re-exported here so that the tile store can be used without importing Feast.
"""

from .tile_store import ProgressKey, TileStore, connect, progress_key, wall_clock_ms

__all__ = ["ProgressKey", "TileStore", "connect", "progress_key", "wall_clock_ms"]
