"""The online store: the port (:mod:`.base`), its Redis implementation (:mod:`.redis`),
an in-memory one for unit tests (:mod:`.memory`), and the Feast online store plugin.

Callers build a store from a URL with :func:`connect_online_store` (blocking half) or
:func:`streams.online.readers.connect_online_reader` (asyncio half, which loads Feast:
engine processes never import it) and use only the port's methods.
``streams.online.feast_store`` is imported by Feast by class path; it is not
re-exported here so that the store can be used without importing Feast.
"""

from __future__ import annotations

from featurestream.clock import Clock, wall_clock_ms

from .base import (
    BUILDING,
    READY,
    FeastRow,
    FeastRowRead,
    FeastRows,
    Marker,
    OnlineReader,
    OnlineStore,
    ProgressKey,
    Read,
    StoreMark,
    StoreStats,
    TilesRead,
    ViewProgress,
    ViewReady,
    ViewRows,
    ViewState,
    WriteResult,
    check_eviction,
    evicted_since,
    eviction_risk,
    serves,
)

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
    "check_online_store",
    "connect_online_store",
    "evicted_since",
    "eviction_risk",
    "serves",
]


def connect_online_store(
    url: str, *, timeout_s: float = 5.0, clock: Clock = wall_clock_ms
) -> OnlineStore:
    """The blocking online store at ``url`` (no I/O until its first call).

    Raises:
        ConfigError: when the URL cannot be parsed.
    """
    from .redis import RedisOnlineStore

    return RedisOnlineStore(url, timeout_s=timeout_s, clock=clock)


def check_online_store(url: str, timeout_s: float) -> None:
    """Raise :class:`~featurestream.errors.OnlineStoreUnavailable` unless the store at
    ``url`` answers within ``timeout_s`` (also for a URL that cannot be parsed)."""
    from .redis import check

    check(url, timeout_s)
