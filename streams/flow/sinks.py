"""Bytewax sinks: tile updates to the online store, rejected messages to Kafka, applied
events to the offline log."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)

from featurestream.errors import OnlineStoreFull, OnlineStoreLost, OnlineStoreUnavailable

from ..core import ViewSpec
from ..core.classify import Rejected
from ..kafka import RejectedProducer
from ..offline.log import ViewLogWriter
from ..online import OnlineStore, ProgressKey, ViewProgress, ViewState
from .dataflow import SinkItem
from .metrics import FlowMetrics
from .watch import MarkerWatch

__all__ = ["BatchProgress", "OfflineLogSink", "OnlineTileSink", "RejectedSink", "write_items"]

log = logging.getLogger(__name__)


class BatchProgress:
    """Which source offsets are wholly written: a batch counts once all its groups are.

    Per view and partition, batches are kept in the order their first group arrived
    (the source's order: one worker applies a partition's batches in order) and
    progress moves past the leading batches that are complete. Offsets need not be
    contiguous (transaction markers and compaction leave gaps).
    """

    def __init__(self) -> None:
        # Per (view state, topic, partition), in arrival order: batch start ->
        # (groups left, last offset).
        self._open: dict[tuple[str, str, int], dict[int, tuple[int, int]]] = {}

    def written(self, items: list[SinkItem]) -> dict[str, dict[ProgressKey, int]]:
        """Record ``items`` as written; per view (``state_id``) the new progress (next
        offset) per partition; every view of ``items`` is in it (maybe with none)."""
        changed: set[tuple[str, str, int]] = set()
        out: dict[str, dict[ProgressKey, int]] = {}
        for item in items:
            out.setdefault(item.state_id, {})
            part = (item.state_id, item.topic, item.partition)
            batches = self._open.setdefault(part, {})
            left, end = batches.get(item.batch_start, (item.batch_groups, item.batch_end))
            batches[item.batch_start] = (left - 1, end)
            if left - 1 <= 0:
                changed.add(part)
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
                out[part[0]][ProgressKey(part[1], part[2])] = done + 1
        return out


def write_items(
    store: OnlineStore,
    items: list[SinkItem],
    batches: BatchProgress,
    *,
    project: str,
    watch: MarkerWatch | None,
    retry_for_s: float,
    metrics: FlowMetrics,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Write the tile updates of ``items`` and the progress they complete, retrying an
    unavailable store with bounded backoff for ``retry_for_s``.

    Args:
        store: The online store.
        items: What the flow applied.
        batches: The sink's record of partly written batches.
        project: The views' project.
        watch: The markers the store must hold (their views' writes check them); None:
            no check.
        retry_for_s: How long to retry.
        metrics: Counters.
        sleep: Waits between retries.

    Raises:
        OnlineStoreLost: when the store no longer holds a view's marker (it lost the tiles
            written before; those of this write are complete, tile contents being set).
        OnlineStoreUnavailable: when the store still fails after ``retry_for_s``.
    """
    updates = [u for i in items for u in i.updates]
    names = {i.state_id: i.view for i in items}
    expected = watch.expected if watch is not None else frozenset()
    progress = []
    for state_id, offsets in batches.written(items).items():
        state = ViewState(project, names[state_id], state_id)
        progress.append(ViewProgress(state, offsets, check_marker=state in expected))
    deadline = time.monotonic() + retry_for_s
    backoff_s = 0.05
    while True:
        try:
            started = time.perf_counter()
            result = store.write(updates, progress, project=project)
        except OnlineStoreUnavailable as exc:
            full = isinstance(exc, OnlineStoreFull)
            if full:
                metrics.writes_refused_full += 1
            if time.monotonic() + backoff_s > deadline:
                raise
            # A full store needs an operator: an error, not a warning (retried all the same).
            log.log(
                logging.ERROR if full else logging.WARNING,
                "online write failed, retrying in %.2fs: %s",
                backoff_s,
                exc,
            )
            metrics.write_retries += 1
            sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 2.0)
            continue
        metrics.observe_write(result.fields, time.perf_counter() - started)
        if result.lost:
            metrics.store_losses["restarted"] += 1
            if watch is not None:
                watch.lost(result.lost)
            views = ", ".join(sorted(s.view for s in result.lost))
            raise OnlineStoreLost(
                f"the online store lost the tiles of {views} (it restarted empty)"
            )
        return


class _TilePartition(StatelessSinkPartition[SinkItem]):
    def __init__(
        self,
        store: OnlineStore,
        project: str,
        retry_for_s: float,
        metrics: FlowMetrics,
        watch: MarkerWatch | None,
    ) -> None:
        self._store = store
        self._project = project
        self._retry_for_s = retry_for_s
        self._metrics = metrics
        self._watch = watch
        self._batches = BatchProgress()
        if watch is not None:
            watch.attach(store)

    def write_batch(self, items: list[SinkItem]) -> None:
        write_items(
            self._store,
            items,
            self._batches,
            project=self._project,
            watch=self._watch,
            retry_for_s=self._retry_for_s,
            metrics=self._metrics,
        )

    def close(self) -> None:
        self._store.close()


class OnlineTileSink(DynamicSink[SinkItem]):
    """Writes tile updates and source progress to the online store, retrying with
    bounded backoff.

    Args:
        store_factory: Builds an :class:`~streams.online.OnlineStore` per worker (called
            at run time, not at construction).
        project: Feast project (the records' namespace).
        retry_for_s: How long a failing write is retried before the flow stops (the
            snapshot is then not advanced past what the store holds).
        watch: The markers the store must hold; a write that does not find its view's
            raises ``OnlineStoreLost``, and so does the flow's source once the watch finds
            one gone (None: no detection).
    """

    def __init__(
        self,
        store_factory: Callable[[], OnlineStore],
        project: str,
        retry_for_s: float = 60.0,
        metrics: FlowMetrics | None = None,
        watch: MarkerWatch | None = None,
    ) -> None:
        self._factory = store_factory
        self._project = project
        self._retry_for_s = retry_for_s
        self._metrics = metrics or FlowMetrics()
        self._watch = watch

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _TilePartition:
        return _TilePartition(
            self._factory(), self._project, self._retry_for_s, self._metrics, self._watch
        )


class _RejectedPartition(StatelessSinkPartition[Rejected]):
    def __init__(self, producer: RejectedProducer, metrics: FlowMetrics) -> None:
        self._producer = producer
        self._metrics = metrics

    def write_batch(self, items: list[Rejected]) -> None:
        for item in items:
            if item.kind != "late":
                self._metrics.dead_lettered[item.kind] += 1
        self._producer.send(items)

    def close(self) -> None:
        self._producer.close()


class RejectedSink(DynamicSink[Rejected]):
    """Produces rejected messages (dead letters, late events) to a topic with reason
    headers; a batch counts as written once every message is delivered."""

    def __init__(
        self, producer_config: dict[str, Any], topic: str, metrics: FlowMetrics | None = None
    ) -> None:
        self._config = dict(producer_config)
        self._topic = topic
        self._metrics = metrics or FlowMetrics()

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _RejectedPartition:
        return _RejectedPartition(RejectedProducer(self._config, self._topic), self._metrics)


class _ViewLog(StatefulSinkPartition[list[dict[str, Any]], int]):
    def __init__(self, writer: ViewLogWriter) -> None:
        self._writer = writer

    def write_batch(self, values: list[list[dict[str, Any]]]) -> None:
        for rows in values:
            self._writer.write(rows)

    def snapshot(self) -> int:
        return self._writer.snapshot()

    def close(self) -> None:
        self._writer.close()


class OfflineLogSink(FixedPartitionedSink[list[dict[str, Any]], int]):
    """Writes the offline log, one partition per view (its file numbers in the snapshot).

    Items are ``(view name, [decoded record of each applied event])`` pairs.
    ``suffix`` tells the files of one engine process apart when several share the
    log (see ``RunConfig.process_count``).
    """

    def __init__(self, root: Path, views: Sequence[ViewSpec], suffix: str = "") -> None:
        self._root = root
        self._suffix = suffix
        self._views = {v.name: v for v in views}
        self._parts = sorted(self._views)

    def list_parts(self) -> list[str]:
        return list(self._parts)

    def part_fn(self, item_key: str) -> int:
        return self._parts.index(item_key)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ViewLog:
        return _ViewLog(
            ViewLogWriter(self._root, self._views[for_part], resume_state, self._suffix)
        )
