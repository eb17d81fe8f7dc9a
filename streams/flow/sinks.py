"""Bytewax sinks: tiles to Redis, dead letters to Kafka."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, KafkaException, Producer

from featurestream.errors import BrokerUnavailable, OnlineStoreLost, OnlineStoreUnavailable

from ..online.tile_store import ProgressKey, TileStore
from .dataflow import Rejected, SinkItem
from .metrics import FlowMetrics

__all__ = ["OnlineTileSink", "RejectedSink"]

log = logging.getLogger(__name__)


class _TilePartition(StatelessSinkPartition[SinkItem]):
    def __init__(
        self,
        store: TileStore,
        project: str,
        retry_for_s: float,
        metrics: FlowMetrics,
        marker: str | None,
    ) -> None:
        self._store = store
        self._project = project
        self._retry_for_s = retry_for_s
        self._metrics = metrics
        self._marker = marker
        self._batches = _BatchProgress()

    def write_batch(self, items: list[SinkItem]) -> None:
        updates = [u for i in items for u in i.updates]
        progress = self._batches.written(items)
        deadline = time.monotonic() + self._retry_for_s
        backoff_s = 0.05
        while True:
            try:
                started = time.perf_counter()
                fields = self._store.write(
                    updates, progress, project=self._project, marker=self._marker
                )
                self._metrics.observe_write(fields, time.perf_counter() - started)
                if not self._store.last_write_found_marker:
                    # Tiles written before are gone; those of this batch are complete
                    # (tile contents are set), the others must be restored.
                    raise OnlineStoreLost(
                        f"Redis lost the online tiles of {self._project!r} (it restarted empty)"
                    )
                return
            except OnlineStoreLost:
                raise
            except OnlineStoreUnavailable as exc:
                if time.monotonic() + backoff_s > deadline:
                    raise
                log.warning("online write failed, retrying in %.2fs: %s", backoff_s, exc)
                time.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 2.0)


class _BatchProgress:
    """Which source offsets are wholly written: a batch counts once all its groups are.

    Per partition, batches are kept in the order their first group arrived (the
    source's order: one worker applies a partition's batches in order) and progress
    moves past the leading batches that are complete. Offsets need not be contiguous
    (transaction markers and compaction leave gaps).
    """

    def __init__(self) -> None:
        # Per partition, in arrival order: batch start -> (groups left, last offset).
        self._open: dict[tuple[str, int], dict[int, tuple[int, int]]] = {}

    def written(self, items: list[SinkItem]) -> dict[ProgressKey, int]:
        """Record ``items`` as written; the new progress (next offset) per partition."""
        changed: set[tuple[str, int]] = set()
        for item in items:
            part = (item.topic, item.partition)
            batches = self._open.setdefault(part, {})
            left, end = batches.get(item.batch_start, (item.batch_groups, item.batch_end))
            batches[item.batch_start] = (left - 1, end)
            if left - 1 <= 0:
                changed.add(part)
        out: dict[ProgressKey, int] = {}
        for part in changed:
            batches = self._open[part]
            done = None
            while batches:
                start = next(iter(batches))
                left, end = batches[start]
                if left > 0:
                    break
                del batches[start]
                done = end
            if done is not None:
                out[ProgressKey(*part)] = done + 1
        return out


class OnlineTileSink(DynamicSink[SinkItem]):
    """Writes tile updates and source progress to Redis, retrying with bounded backoff.

    Args:
        store_factory: Builds a :class:`TileStore` per worker (called at run time, not
            at construction).
        project: Feast project (the progress key's namespace).
        retry_for_s: How long a failing write is retried before the flow stops (the
            snapshot is then not advanced past what Redis holds).
        marker: The engine's :func:`~streams.online.tile_store.marker_key`; a write that
            does not find it raises ``OnlineStoreLost`` (None: no detection).
    """

    def __init__(
        self,
        store_factory: Callable[[], TileStore],
        project: str,
        retry_for_s: float = 60.0,
        metrics: FlowMetrics | None = None,
        marker: str | None = None,
    ) -> None:
        self._factory = store_factory
        self._project = project
        self._retry_for_s = retry_for_s
        self._metrics = metrics or FlowMetrics()
        self._marker = marker

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TilePartition:
        return _TilePartition(
            self._factory(), self._project, self._retry_for_s, self._metrics, self._marker
        )


class _RejectedPartition(StatelessSinkPartition[Rejected]):
    def __init__(self, producer: Producer, topic: str, metrics: FlowMetrics) -> None:
        self._producer = producer
        self._topic = topic
        self._metrics = metrics
        self._sent = 0
        self._failed: list[str] = []

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._failed.append(str(err))

    def write_batch(self, items: list[Rejected]) -> None:
        for item in items:
            headers = item.headers()
            if item.kind != "late":
                self._metrics.dead_lettered[item.kind] += 1
            try:
                self._producer.produce(
                    self._topic, value=item.value, headers=headers, on_delivery=self._on_delivery
                )
            except (BufferError, KafkaException) as exc:
                raise BrokerUnavailable(
                    f"dead-letter produce to {self._topic} failed: {exc}"
                ) from exc
            self._sent += 1
            if self._sent == 1 or self._sent % 1000 == 0:
                log.warning(
                    "rejected to %s kind=%s topic=%s partition=%s offset=%s reason=%s total=%d",
                    self._topic,
                    item.kind,
                    item.topic,
                    item.partition,
                    item.offset,
                    item.reason,
                    self._sent,
                )
        remaining = self._producer.flush(30)
        if remaining or self._failed:
            raise BrokerUnavailable(
                f"messages not delivered to {self._topic}: {remaining} pending, "
                f"failures {self._failed[:3]}"
            )

    def close(self) -> None:
        self._producer.flush(30)


class RejectedSink(DynamicSink[Rejected]):
    """Produces rejected messages (dead letters, late events) to a topic with reason headers.

    Each batch is flushed and every delivery checked before the batch counts as
    written, so nothing rejected is lost silently.
    """

    def __init__(
        self, producer_config: dict[str, Any], topic: str, metrics: FlowMetrics | None = None
    ) -> None:
        self._config = dict(producer_config)
        self._topic = topic
        self._metrics = metrics or FlowMetrics()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RejectedPartition:
        return _RejectedPartition(Producer(self._config), self._topic, self._metrics)
