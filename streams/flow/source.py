"""The Bytewax source of one view: every Kafka partition of its topic, classified.

Each Kafka partition is a Bytewax source partition holding its offset and its
:class:`~streams.core.gate.PartitionGate` (watermark and recent event ids), both
snapshotted by Bytewax recovery, so a resumed run classifies every event
exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from featurestream.events import AvroCodec

from ..core import ViewSpec
from ..core.classify import PartitionClassifier, SourceBatch, TopicView
from ..core.gate import GateState
from ..kafka import PartitionReader, partitions_of
from ..kafka.reader import OFFSET_BEGINNING
from .metrics import FlowMetrics
from .watch import MarkerWatch

__all__ = ["KafkaEventSource", "PartitionResume", "topic_views"]

log = logging.getLogger(__name__)

# With --stop-at-end: a partition is finished after end-of-partition was reported,
# nothing arrived for this long and the last fetch puts the end no further than what
# was read.
_END_QUIET_S = 0.5
# An idle partition is asked again after this long.
_IDLE_POLL_S = 0.005


@dataclass
class PartitionResume:
    """Resume state of one source partition."""

    offset: int
    gate: GateState


def topic_views(views: Iterable[ViewSpec]) -> dict[str, list[TopicView]]:
    """Per topic, its views in the order the flow routes to them."""
    out: dict[str, list[TopicView]] = {}
    for view in views:
        out.setdefault(view.topic, []).append(TopicView(view.name, view.allowed_lateness_ms))
    return out


class _Partition(StatefulSourcePartition[SourceBatch, PartitionResume]):
    def __init__(
        self,
        reader: PartitionReader,
        classifier: PartitionClassifier,
        offset: int,
        stop_at_end: bool,
        batch_size: int,
        metrics: FlowMetrics,
        watch: MarkerWatch | None,
        end_check_s: float,
    ) -> None:
        self._watch = watch
        self._end_check_s = end_check_s
        self._reader = reader
        self._classifier = classifier
        self._offset = offset
        self._stop_at_end = stop_at_end
        self._batch_size = batch_size
        self._metrics = metrics
        self._awake: datetime | None = None
        self._end_check = time.monotonic() + end_check_s

    def next_awake(self) -> datetime | None:
        return self._awake

    def next_batch(self) -> list[SourceBatch]:
        if self._watch is not None:
            self._watch.check()  # the online store lost the tiles: stop the flow
        reader = self._reader
        messages, anything = reader.read(self._batch_size)
        batch = self._classifier.classify(messages)
        if batch is not None:
            self._offset = batch.last_offset + 1
            key = (reader.topic, reader.partition)
            gate = self._classifier.gate
            self._metrics.watermarks[key] = gate.watermark_ms
            self._metrics.dedupe_ids[key] = gate.tracked_ids
            self._awake = None
            return [batch]
        if (
            self._stop_at_end
            and reader.eof_at is not None
            and time.monotonic() - reader.eof_at > _END_QUIET_S
        ):
            # A negative offset (nothing read yet) at the end: the partition is empty.
            if self._offset < 0 or reader.at_end(self._offset):
                raise StopIteration
            reader.eof_at = None  # more to read: wait for the next end of the partition
        self._awake = None if anything else datetime.now(UTC) + timedelta(seconds=_IDLE_POLL_S)
        if not anything and time.monotonic() >= self._end_check:
            self._end_check = time.monotonic() + self._end_check_s
            self._check_recreated()
        return []

    def _check_recreated(self) -> None:
        """A partition that ends before the offset read to lost what was read (the broker
        lost its data and the topic was created again): what it holds now came after,
        so it is read from its start, and said so. Without this check the engine would
        wait for the old offsets and ignore every new event (a broker that answers a
        fetch beyond the end with nothing, as the embedded one does, never resets it)."""
        reader = self._reader
        end = reader.fetched_end()
        if self._offset < 0 or end is None or end >= self._offset:
            return
        log.warning(
            "topic=%s partition=%d ends at offset %d, before offset %d this engine read to: "
            "the topic was created again (its broker lost its data); reading it from its start",
            reader.topic,
            reader.partition,
            end,
            self._offset,
        )
        reader.seek(OFFSET_BEGINNING)
        self._offset = OFFSET_BEGINNING

    def snapshot(self) -> PartitionResume:
        return PartitionResume(self._offset, self._classifier.snapshot())

    def close(self) -> None:
        self._reader.close()


class KafkaEventSource(FixedPartitionedSource[SourceBatch, PartitionResume]):
    """Every partition of one view's topic as a source partition emitting one
    :class:`~streams.core.classify.SourceBatch` per read, in offset order.

    Args:
        bootstrap_servers: Kafka bootstrap servers.
        view: The view (its topic is read).
        codec: Decoder.
        horizon_ms: Duplicate-detection horizon; None = the view's lateness.
        stop_at_end: Finish when every partition is consumed (catch-up runs).
        consumer_config: Extra librdkafka settings.
        process: ``(index, count)``: this process reads the partitions ``p`` with
            ``p % count == index`` (one engine process per share of the partitions).
        watch: Stops the flow when the online store lost the view's tiles.
        end_check_s: An idle partition compares its end (as fetches put it) with the
            offset read to this often: one that ends before it was created again (a
            broker that lost its data) and is read from its start.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        view: ViewSpec,
        codec: AvroCodec,
        *,
        horizon_ms: int | None = None,
        stop_at_end: bool = False,
        consumer_config: dict[str, Any] | None = None,
        batch_size: int = 2000,
        metrics: FlowMetrics | None = None,
        process: tuple[int, int] = (0, 1),
        watch: MarkerWatch | None = None,
        end_check_s: float = 5.0,
    ) -> None:
        self._end_check_s = end_check_s
        self._metrics = metrics or FlowMetrics()
        self._bootstrap = bootstrap_servers
        self._views = topic_views([view])
        self._time_fields = {view.topic: view.timestamp_field}
        self._watch = watch
        self._codec = codec
        self._horizon_ms = horizon_ms
        self._stop_at_end = stop_at_end
        self._extra = dict(consumer_config or {})
        self._batch_size = batch_size
        self._process_index, self._process_count = process

    def list_parts(self) -> list[str]:
        parts = []
        for topic, partitions in partitions_of(self._bootstrap, sorted(self._views)).items():
            parts += [
                f"{p}-{topic}" for p in partitions if p % self._process_count == self._process_index
            ]
        return parts

    def build_part(
        self, step_id: str, for_part: str, resume_state: PartitionResume | None
    ) -> _Partition:
        index, topic = for_part.split("-", 1)
        partition = int(index)
        offset = OFFSET_BEGINNING if resume_state is None else resume_state.offset
        views = self._views[topic]
        horizon = self._horizon_ms
        lateness = max(v.lateness_ms for v in views)
        classifier = PartitionClassifier(
            topic,
            partition,
            self._codec,
            self._time_fields[topic],
            views,
            max(lateness, horizon if horizon is not None else lateness),
            None if resume_state is None else resume_state.gate,
        )
        reader = PartitionReader(self._bootstrap, topic, partition, offset, self._extra)
        return _Partition(
            reader,
            classifier,
            offset,
            self._stop_at_end,
            self._batch_size,
            self._metrics,
            self._watch,
            self._end_check_s,
        )
