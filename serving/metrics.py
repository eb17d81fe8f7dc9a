"""Prometheus metrics of one server worker, in a registry of its own.

With several workers each keeps its own numbers; a scrape of ``GET /metrics``
reaches one of them (label your scrape target by instance, or run one worker per
container when exact totals matter).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values

from streams.online import StoreStats
from streams.online.metrics import store_gauges

__all__ = ["CONTENT_TYPE", "ServerMetrics", "in_process_values"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
PATHS = ("/get-online-features", "/health", "/ready", "/features", "/metrics", "other")


def in_process_values() -> None:
    """Every metric created in this process from now on keeps its value in memory.

    Importing Feast sets ``PROMETHEUS_MULTIPROC_DIR`` to a temporary directory of its
    own unless it is set (``feast/metrics.py``), and prometheus_client then backs each
    value by a memory-mapped file and checks for a changed pid at every update: 7% of a
    worker's CPU under load (py-spy, ``featurestream bench serving``), for files nothing
    reads, as each worker answers ``/metrics`` from its own registry.
    """
    values.ValueClass = values.MutexValue


class _StoreCollector:
    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        yield from store_gauges(self._metrics.store)


class ServerMetrics:
    """Request latency, request and error counts, requests in flight, registry reloads."""

    def __init__(self) -> None:
        in_process_values()
        self.registry = CollectorRegistry(auto_describe=True)
        self.latency = Histogram(
            "featurestream_serving_request_duration_seconds",
            "Time from request start to the last response byte handed to the server.",
            ["path"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "featurestream_serving_requests",
            "HTTP requests answered, by path and status code.",
            ["path", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "featurestream_serving_errors",
            "Requests answered with an error, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "featurestream_serving_in_flight",
            "Feature lookups being served right now.",
            registry=self.registry,
        )
        self.entities = Histogram(
            "featurestream_serving_entities_per_request",
            "Entity rows per feature lookup.",
            buckets=(1, 2, 5, 10, 50, 100, 500, 1000),
            registry=self.registry,
        )
        self.registry_loads = Counter(
            "featurestream_serving_registry_loads",
            "Registry versions loaded (plans recompiled), by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.store: StoreStats | None = None
        """The online store's figures as last read (at each scrape)."""
        self.registry.register(_StoreCollector(self))
        self._latency = {p: self.latency.labels(p) for p in PATHS}
        self._requests: dict[tuple[str, int], Counter] = {}

    def observe(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        label = path if path in self._latency else "other"
        self._latency[label].observe(seconds)
        key = (label, status)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(label, str(status))
        child.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of this worker's metrics."""
        out: bytes = generate_latest(self.registry)
        return out
