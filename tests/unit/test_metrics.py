"""Engine metrics are exported in the Prometheus text format with their values."""

from __future__ import annotations

import os
import subprocess
import sys

from prometheus_client import CollectorRegistry, generate_latest

from streams.flow import FlowMetrics


def test_counters_histogram_and_gauges_are_exported() -> None:
    metrics = FlowMetrics()
    for _ in range(3):
        metrics.count("user_click_stats", "applied")
    metrics.count("user_click_stats", "late")
    metrics.dead_lettered["not_avro"] += 2
    metrics.observe_write(10, 0.0007)
    metrics.observe_write(5, 3.0)
    metrics.watermarks[("clicks", 0)] = 0
    metrics.dedupe_ids[("clicks", 0)] = 42
    registry = CollectorRegistry()
    registry.register(metrics)
    text = generate_latest(registry).decode()
    assert 'featurestream_events_total{status="applied",view="user_click_stats"} 3.0' in text
    assert 'featurestream_events_total{status="late",view="user_click_stats"} 1.0' in text
    assert 'featurestream_dead_lettered_total{kind="not_avro"} 2.0' in text
    assert "featurestream_tile_writes_total 15.0" in text
    assert 'featurestream_online_write_seconds_bucket{le="0.001"} 1.0' in text
    assert 'featurestream_online_write_seconds_bucket{le="+Inf"} 2.0' in text
    assert 'featurestream_dedupe_ids{partition="0",topic="clicks"} 42.0' in text
    assert "featurestream_watermark_lag_seconds" in text
    assert metrics.total("applied") == 3


_AFTER_FEAST = """
import feast  # sets PROMETHEUS_MULTIPROC_DIR unless it is set
from prometheus_client import Counter, CollectorRegistry
from serving.metrics import ServerMetrics

plain = Counter("plain", "made after Feast", registry=CollectorRegistry())
metrics = ServerMetrics()
metrics.observe("/health", 200, 0.001)
print(type(plain._value).__name__, type(metrics.requests.labels("/health", "200")._value).__name__)
print(b'featurestream_serving_requests_total{path="/health",status="200"} 1.0' in metrics.render())
"""


def test_server_metrics_keep_their_values_in_memory_after_feast_is_imported() -> None:
    """Feast switches prometheus_client to memory-mapped file values (a pid check at
    every update); the server's metrics stay in memory, and still count."""
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("prometheus_multi")}
    out = subprocess.run(
        [sys.executable, "-c", _AFTER_FEAST], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] != "MutexValue"  # the control: what Feast's import does to a metric
    assert out[1:] == ["MutexValue", "True"]
