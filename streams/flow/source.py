"""Kafka source: decodes and classifies events per partition, with resumable state.

Each Kafka partition is a Bytewax source partition holding its offset and its
:class:`~streams.core.gate.PartitionGate` (watermark and recent event ids), both
snapshotted by Bytewax recovery, so a resumed run classifies every event
exactly as an uninterrupted one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from featurestream.errors import BrokerUnavailable, DecodeError, EventError
from featurestream.events import MAX_FUTURE_MS, AvroCodec

from ..core.gate import GateState, PartitionGate
from .dataflow import Envelope
from .metrics import FlowMetrics

__all__ = ["GateConfig", "KafkaEventSource", "PartitionResume", "classify", "gate_configs"]

log = logging.getLogger(__name__)

# With --stop-at-end: a partition is finished after end-of-partition was reported
# and nothing arrived for this long (the end offset some brokers report can lag).
_END_QUIET_S = 0.5
# An idle partition is asked again after this long. Reads never block: librdkafka
# fetches in the background, and a blocking read of one partition would delay the
# others of the process.
_IDLE_POLL_S = 0.005


@dataclass(frozen=True)
class GateConfig:
    """Lateness and duplicate horizon of one topic."""

    lateness_ms: int
    horizon_ms: int


@dataclass
class PartitionResume:
    """Resume state of one source partition."""

    offset: int
    gate: GateState


def classify(
    gate: PartitionGate,
    codec: AvroCodec,
    topic: str,
    partition: int,
    offset: int,
    value: bytes | None,
    time_field: str,
    produced_ms: int | None = None,
) -> Envelope:
    """Decode one message and classify it with the partition's gate.

    ``produced_ms`` is the message's Kafka timestamp: an event time more than
    ``MAX_FUTURE_MS`` ahead of it is out of range (dead-lettered), so one bad clock
    cannot move a partition's watermark into the future. The timestamp is part of
    the message, so a replay decides the same.
    """
    try:
        record = codec.decode(topic, value, partition=partition, offset=offset)
        if produced_ms is not None and record[time_field] > produced_ms + MAX_FUTURE_MS:
            raise DecodeError(
                "out_of_range",
                f"{time_field}={record[time_field]} is more than {MAX_FUTURE_MS // 1000} s "
                f"ahead of the time the message was produced ({produced_ms})",
            ).at(topic, partition, offset)
    except EventError as exc:
        return Envelope(
            topic,
            partition,
            offset,
            None,
            exc,
            value,
            status="error",
            watermark_ms=gate.watermark_ms,
        )
    watermark = gate.watermark_ms
    status = gate.admit(record["event_id"], record[time_field])
    return Envelope(
        topic,
        partition,
        offset,
        record,
        None,
        value,
        status=status,
        watermark_ms=watermark,
    )


def _produced_ms(msg: Any) -> int | None:
    kind, value = msg.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE or value < 0 else int(value)


class _Partition(StatefulSourcePartition[list[Envelope], PartitionResume]):
    def __init__(
        self,
        consumer: Consumer,
        topic: str,
        partition: int,
        resume: PartitionResume | None,
        gate_config: GateConfig,
        codec: AvroCodec,
        time_field: str,
        stop_at_end: bool,
        batch_size: int,
        metrics: FlowMetrics,
    ) -> None:
        self._metrics = metrics
        self._consumer = consumer
        self._topic = topic
        self._partition = partition
        self._offset = OFFSET_BEGINNING if resume is None else resume.offset
        self._gate = PartitionGate(
            gate_config.lateness_ms, gate_config.horizon_ms, None if resume is None else resume.gate
        )
        self._codec = codec
        self._time_field = time_field
        self._stop_at_end = stop_at_end
        self._batch_size = batch_size
        self._eof_at: float | None = None
        self._awake: datetime | None = None
        consumer.assign([TopicPartition(topic, partition, self._offset)])

    def next_awake(self) -> datetime | None:
        return self._awake

    def next_batch(self) -> list[list[Envelope]]:
        try:
            messages = self._consumer.consume(self._batch_size, 0)
        except KafkaException as exc:
            raise BrokerUnavailable(f"consume {self._topic}/{self._partition}: {exc}") from exc
        out = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._eof_at = self._eof_at or time.monotonic()
                    continue
                if err.retriable() or err.code() == KafkaError._TRANSPORT:
                    log.warning(
                        "kafka topic=%s partition=%s: %s (retrying)",
                        self._topic,
                        self._partition,
                        err,
                    )
                    continue
                raise BrokerUnavailable(f"consume {self._topic}/{self._partition}: {err}")
            self._eof_at = None
            offset = int(msg.offset() or 0)
            out.append(
                classify(
                    self._gate,
                    self._codec,
                    self._topic,
                    self._partition,
                    offset,
                    msg.value(),
                    self._time_field,
                    _produced_ms(msg),
                )
            )
            self._offset = offset + 1
        if out:
            key = (self._topic, self._partition)
            self._metrics.watermarks[key] = self._gate.watermark_ms
            self._metrics.dedupe_ids[key] = self._gate.tracked_ids
        if (
            not out
            and self._stop_at_end
            and self._eof_at is not None
            and time.monotonic() - self._eof_at > _END_QUIET_S
        ):
            raise StopIteration
        if not messages:
            self._awake = datetime.now(UTC) + timedelta(seconds=_IDLE_POLL_S)
            return []
        self._awake = None
        return [out] if out else []

    def snapshot(self) -> PartitionResume:
        return PartitionResume(self._offset, self._gate.snapshot())

    def close(self) -> None:
        self._consumer.close()


class KafkaEventSource(FixedPartitionedSource[list[Envelope], PartitionResume]):
    """Every partition of ``topics`` as a source partition emitting batches of
    :class:`Envelope` (what one consume call read, in offset order).

    Args:
        bootstrap_servers: Kafka bootstrap servers.
        topics: Topics to read.
        gates: Lateness and duplicate horizon per topic.
        codec: Decoder.
        time_field: The event-time field (milliseconds).
        stop_at_end: Finish when every partition is consumed (catch-up runs).
        consumer_config: Extra librdkafka settings.
        process: ``(index, count)``: this process reads the partitions ``p`` with
            ``p % count == index`` (one engine process per share of the partitions).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Sequence[str],
        gates: dict[str, GateConfig],
        codec: AvroCodec,
        *,
        time_field: str = "event_time",
        stop_at_end: bool = False,
        consumer_config: dict[str, Any] | None = None,
        batch_size: int = 2000,
        metrics: FlowMetrics | None = None,
        process: tuple[int, int] = (0, 1),
    ) -> None:
        self._metrics = metrics or FlowMetrics()
        self._bootstrap = bootstrap_servers
        self._topics = tuple(topics)
        self._gates = gates
        self._codec = codec
        self._time_field = time_field
        self._stop_at_end = stop_at_end
        self._extra = dict(consumer_config or {})
        self._batch_size = batch_size
        self._process_index, self._process_count = process

    def list_parts(self) -> list[str]:
        admin = AdminClient({"bootstrap.servers": self._bootstrap, "log_level": 0})
        try:
            metadata = admin.list_topics(timeout=10)
        except KafkaException as exc:
            raise BrokerUnavailable(f"list topics at {self._bootstrap}: {exc}") from exc
        parts = []
        for topic in self._topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                raise BrokerUnavailable(
                    f"topic {topic!r} does not exist at {self._bootstrap}; run featurestream up"
                )
            parts += [
                f"{p}-{topic}"
                for p in sorted(meta.partitions)
                if p % self._process_count == self._process_index
            ]
        return parts

    def build_part(
        self, step_id: str, for_part: str, resume_state: PartitionResume | None
    ) -> _Partition:
        index, topic = for_part.split("-", 1)
        config = {
            "bootstrap.servers": self._bootstrap,
            "group.id": "featurestream-engine",  # offsets live in recovery snapshots
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log.connection.close": False,
            "fetch.wait.max.ms": 10,
            **self._extra,
        }
        return _Partition(
            Consumer(config),
            topic,
            int(index),
            resume_state,
            self._gates[topic],
            self._codec,
            self._time_field,
            self._stop_at_end,
            self._batch_size,
            self._metrics,
        )


def gate_configs(views: Iterable[Any], horizon_ms: int | None = None) -> dict[str, GateConfig]:
    """Per topic: the largest allowed lateness of its views, and the duplicate horizon
    (``horizon_ms``, never shorter than the lateness; None = the lateness)."""
    lateness: dict[str, int] = {}
    for view in views:
        lateness[view.topic] = max(lateness.get(view.topic, 0), view.allowed_lateness_ms)
    return {
        topic: GateConfig(value, max(value, horizon_ms if horizon_ms is not None else value))
        for topic, value in lateness.items()
    }
