"""The online store's own figures (memory, limit, keys, evictions) as Prometheus
gauges, for the engine's and the feature server's ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .base import StoreStats

__all__ = ["store_gauges"]


def store_gauges(stats: StoreStats | None) -> Iterator[Any]:
    """The online store's memory, limit, keys and evictions as Prometheus gauges (none
    before its first reading)."""
    from prometheus_client.core import GaugeMetricFamily

    if stats is None:
        return
    values = {
        "featurestream_online_store_keys": ("Keys in the online store", stats.keys),
        "featurestream_online_store_used_bytes": ("Memory the online store uses", stats.used_bytes),
        "featurestream_online_store_max_bytes": (
            "The online store's memory limit (0: none)",
            stats.max_bytes,
        ),
        "featurestream_online_store_evicted_keys": (
            "Keys the online store evicted to free memory since it started",
            stats.evicted_keys,
        ),
    }
    for name, (help_text, value) in values.items():
        if value is not None:
            yield GaugeMetricFamily(name, help_text, value=value)
    evicting = GaugeMetricFamily(
        "featurestream_online_store_evicting",
        "1 when the online store's policy evicts keys when full",
        labels=["policy"],
    )
    evicting.add_metric([stats.eviction_policy or "unknown"], int(stats.evicting))
    yield evicting
