"""Engine metrics: plain counters on the hot path, exported to Prometheus at scrape time.

Counting is a dict increment per event; a Prometheus collector reads the
counters when scraped, so the hot path pays nothing for the export.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from featurestream.clock import Clock, wall_clock_ms

from ..online import StoreStats
from ..online.metrics import store_gauges

__all__ = ["FlowMetrics"]

# Write latency histogram buckets, seconds.
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class FlowMetrics:
    """Counters of one engine process.

    * events per view and status (``applied``, ``late``, ``duplicate``, ``error``)
    * tile fields written, online write batches, their latency and retries, writes
      refused because the store is full
    * watermark per source partition, and ids held for duplicate detection
    * the online store's memory, limit and evictions (as its marker watch last read them)
    """

    def __init__(self, clock: Clock = wall_clock_ms) -> None:
        self._clock = clock
        self.events: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.tile_writes = 0
        self.write_batches = 0
        self.write_retries = 0
        self.writes_refused_full = 0
        self.store: StoreStats | None = None
        self.store_losses: defaultdict[str, int] = defaultdict(int)
        self.write_seconds: list[int] = [0] * (len(_BUCKETS) + 1)
        self.write_seconds_sum = 0.0
        self.watermarks: dict[tuple[str, int], int] = {}
        self.dedupe_ids: dict[tuple[str, int], int] = {}
        self.dead_lettered: defaultdict[str, int] = defaultdict(int)

    def count(self, view: str, status: str, n: int = 1) -> None:
        """``n`` events of ``view`` with ``status``."""
        self.events[(view, status)] += n

    def observe_write(self, fields: int, seconds: float) -> None:
        """One online write batch."""
        self.tile_writes += fields
        self.write_batches += 1
        self.write_seconds_sum += seconds
        for i, bound in enumerate(_BUCKETS):
            if seconds <= bound:
                self.write_seconds[i] += 1
                return
        self.write_seconds[-1] += 1

    def total(self, status: str) -> int:
        """Events with ``status`` over every view."""
        return sum(n for (_, s), n in list(self.events.items()) if s == status)

    def collect(self) -> Iterator[Any]:
        """Prometheus collector protocol (``prometheus_client.REGISTRY.register(self)``)."""
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        events = CounterMetricFamily(
            "featurestream_events", "Events per view and status", labels=["view", "status"]
        )
        for (view, status), n in list(self.events.items()):
            events.add_metric([view, status], n)
        yield events
        dead = CounterMetricFamily(
            "featurestream_dead_lettered", "Messages sent to the dead-letter topic", labels=["kind"]
        )
        for kind, n in list(self.dead_lettered.items()):
            dead.add_metric([kind], n)
        yield dead
        yield CounterMetricFamily(
            "featurestream_tile_writes", "Tile fields written online", value=self.tile_writes
        )
        yield CounterMetricFamily(
            "featurestream_online_write_retries",
            "Online writes retried because the store did not answer",
            value=self.write_retries,
        )
        yield CounterMetricFamily(
            "featurestream_online_writes_refused_full",
            "Online writes refused because the store is out of memory (retried)",
            value=self.writes_refused_full,
        )
        losses = CounterMetricFamily(
            "featurestream_online_store_losses",
            "Times the online store was found without tiles it had acknowledged",
            labels=["cause"],
        )
        for cause, n in list(self.store_losses.items()):
            losses.add_metric([cause], n)
        yield losses
        yield from store_gauges(self.store)
        buckets, acc = [], 0
        for bound, n in zip((*map(str, _BUCKETS), "+Inf"), self.write_seconds, strict=True):
            acc += n
            buckets.append((bound, acc))
        yield HistogramMetricFamily(
            "featurestream_online_write_seconds",
            "Latency of online write batches",
            buckets=buckets,
            sum_value=self.write_seconds_sum,
        )
        now_ms = self._clock()
        lag = GaugeMetricFamily(
            "featurestream_watermark_lag_seconds",
            "Wall clock minus the partition's event-time watermark",
            labels=["topic", "partition"],
        )
        for (topic, partition), wm in list(self.watermarks.items()):
            lag.add_metric([topic, str(partition)], (now_ms - wm) / 1000)
        yield lag
        ids = GaugeMetricFamily(
            "featurestream_dedupe_ids",
            "Event ids held for duplicate detection",
            labels=["topic", "partition"],
        )
        for (topic, partition), n in list(self.dedupe_ids.items()):
            ids.add_metric([topic, str(partition)], n)
        yield ids
