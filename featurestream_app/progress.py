"""Operability of ``featurestream run``: Prometheus /metrics and a progress line on a TTY."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Sequence

from featurestream.errors import PortInUse
from streams.core import ViewSpec
from streams.flow import FlowMetrics

__all__ = ["serve_metrics", "show_progress"]


def serve_metrics(metrics: FlowMetrics, port: int) -> None:
    """Expose ``metrics`` at ``http://0.0.0.0:{port}/metrics`` (a daemon thread).

    Raises:
        PortInUse: when the port is taken.
    """
    from prometheus_client import REGISTRY, start_http_server

    REGISTRY.register(metrics)
    try:
        start_http_server(port)
    except OSError as exc:
        raise PortInUse(
            f"metrics port {port} is in use ({exc}); set FEATURESTREAM_METRICS_PORT "
            "(0 disables /metrics)"
        ) from exc


def show_progress(metrics: FlowMetrics, views: Sequence[ViewSpec]) -> None:
    """Print events/s, late, duplicates, dead letters and watermark lag once a second."""
    topics = {v.topic for v in views}

    def loop() -> None:
        last_total, last_time = 0, time.monotonic()
        while True:
            time.sleep(1.0)
            now = time.monotonic()
            applied = metrics.total("applied")
            rate = (applied - last_total) / (now - last_time)
            last_total, last_time = applied, now
            now_ms = time.time_ns() // 1_000_000
            marks = [wm for (t, _), wm in list(metrics.watermarks.items()) if t in topics]
            lag = f"{(now_ms - min(marks)) / 1000:,.1f}s" if marks else "-"
            sys.stderr.write(
                f"\r  applied {applied:>10,} ({rate:>9,.0f}/s)  late {metrics.total('late'):,}"
                f"  duplicates {metrics.total('duplicate'):,}"
                f"  dead-lettered {sum(metrics.dead_lettered.values()):,}"
                f"  watermark lag {lag}   "
            )
            sys.stderr.flush()

    threading.Thread(target=loop, name="progress", daemon=True).start()
