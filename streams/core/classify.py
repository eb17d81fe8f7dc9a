"""What the engine makes of a partition's messages: typed batches, not status strings.

A :class:`PartitionClassifier` decodes one partition's messages in offset order
and sorts them, once, into a :class:`SourceBatch`: the accepted records, the dead
letters (undecodable or out of range), the late events (with the views they are
late for) and the number of duplicates. Every later step reads the list it needs.

Rules (decided here and nowhere else):

* out of range: an event time more than ``MAX_FUTURE_MS`` ahead of the message's
  Kafka timestamp (the moment it was produced) is a dead letter, so one bad clock
  cannot move a partition's watermark into the future; the timestamp is part of
  the message, so a replay decides the same (:func:`check_event_time`);
* invalid id: an ``event_id`` that is empty, or not a UUID where the schema declares
  the ``uuid`` logical type, is a dead letter: duplicates are told apart by it, so
  events sharing a blank id would count once, or never (:func:`check_event_id`);
* late and duplicate: the partition's :class:`~streams.core.gate.PartitionGate`
  with the largest allowed lateness of the topic's views (its watermark moves with
  event times, bounded by produce times); an accepted event older than the
  watermark minus a view's smaller lateness is late for that view only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from featurestream.errors import DecodeError, EventError
from featurestream.events import MAX_FUTURE_MS, AvroCodec, Contract, is_uuid

from .gate import DUPLICATE, LATE, GateState, PartitionGate

__all__ = [
    "Message",
    "PartitionClassifier",
    "Rejected",
    "SourceBatch",
    "TopicView",
    "check_event_id",
    "check_event_time",
]

Message = tuple[int, bytes | None, int | None]
"""One consumed message: ``(offset, value, produced_ms)`` (the Kafka timestamp, or None)."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message not applied online (a dead letter, or a late event), with why and where
    it came from.

    Attributes:
        kind: Stable machine-readable kind (``not_avro``, ``out_of_range``, ``late``...).
        reason: Human-readable detail.
        topic, partition, offset: The source message.
        value: Its bytes, unchanged.
    """

    kind: str
    reason: str
    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class TopicView:
    """A view of a partition's topic, as classification needs it."""

    name: str
    lateness_ms: int


@dataclass(slots=True)
class SourceBatch:
    """What one read of one partition gave, classified.

    Attributes:
        topic, partition: The partition.
        first_offset, last_offset: The offsets the batch covers (all of its messages).
        accepted: Decoded records to apply, in offset order.
        late_for: Position in ``accepted`` -> indices (into the topic's views) of the
            views the record is late for (absent: on time for every view).
        rejected: Dead letters.
        late: Late events for the late-events topic (late for every view, or for some:
            those are in ``accepted`` too).
        late_everywhere: How many of ``late`` no view applies.
        duplicates: Events already applied (by ``event_id``), dropped.
    """

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    accepted: list[dict[str, Any]] = field(default_factory=list)
    late_for: dict[int, tuple[int, ...]] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    late: list[Rejected] = field(default_factory=list)
    late_everywhere: int = 0
    duplicates: int = 0


def check_event_time(record: Mapping[str, Any], time_field: str, produced_ms: int | None) -> None:
    """Raise ``out_of_range`` when the event time is more than ``MAX_FUTURE_MS`` ahead of
    the time the message was produced (``produced_ms``; None: not known, no check).

    Raises:
        DecodeError: kind ``out_of_range``.
    """
    if produced_ms is not None and record[time_field] > produced_ms + MAX_FUTURE_MS:
        raise DecodeError(
            "out_of_range",
            f"{time_field}={record[time_field]} is more than {MAX_FUTURE_MS // 1000} s "
            f"ahead of the time the message was produced ({produced_ms})",
        )


def check_event_id(record: Mapping[str, Any], contract: Contract | None) -> None:
    """Raise ``invalid_id`` when ``record``'s ``event_id`` cannot identify it: empty, or
    not a UUID when ``contract`` (the topic's) declares it a ``uuid``.

    Raises:
        DecodeError: kind ``invalid_id``.
    """
    problem = contract.invalid_uuid(record) if contract is not None else None
    if problem is None and not record["event_id"]:
        problem = "event_id is empty: every event needs an id of its own"
    if problem is not None:
        raise DecodeError("invalid_id", problem)


class PartitionClassifier:
    """Classifies the messages of one partition in offset order.

    Args:
        topic, partition: The partition.
        codec: Decodes the topic's events.
        time_field: The event-time field (milliseconds).
        views: The views of the topic, in the order the flow routes to them.
        horizon_ms: Duplicate-detection horizon (at least the largest lateness).
        state: The gate's snapshot to resume from.
    """

    def __init__(
        self,
        topic: str,
        partition: int,
        codec: AvroCodec,
        time_field: str,
        views: Sequence[TopicView],
        horizon_ms: int,
        state: GateState | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self._codec = codec
        try:
            self._contract: Contract | None = codec.reader(topic)
        except DecodeError:
            self._contract = None  # decoding dead-letters every message as unknown_topic
        # The common case decided in one call; check_event_id says why an id is refused.
        self._good_id = (
            is_uuid
            if self._contract is not None and "event_id" in self._contract.uuid_fields
            else bool
        )
        self._time_field = time_field
        self._views = tuple(views)
        self._names = [v.name for v in self._views]
        lateness = max((v.lateness_ms for v in self._views), default=0)
        # Views with a smaller lateness than the gate's: an event may be late for them only.
        self._stricter = tuple(
            (i, v.lateness_ms) for i, v in enumerate(self._views) if v.lateness_ms < lateness
        )
        self.gate = PartitionGate(lateness, max(lateness, horizon_ms), state)

    def classify(self, messages: Iterable[Message]) -> SourceBatch | None:
        """The batch of ``messages`` (None when there are none)."""
        batch: SourceBatch | None = None
        topic, partition = self.topic, self.partition
        gate, time_field, contract = self.gate, self._time_field, self._contract
        decode, good_id = self._codec.decode, self._good_id
        for offset, value, produced_ms in messages:
            if batch is None:
                batch = SourceBatch(topic, partition, offset, offset)
            batch.last_offset = offset
            try:
                record = decode(topic, value, partition=partition, offset=offset)
                check_event_time(record, time_field, produced_ms)
                if not good_id(record["event_id"]):
                    check_event_id(record, contract)
            except EventError as exc:
                batch.rejected.append(
                    Rejected(exc.kind, exc.reason, topic, partition, offset, value)
                )
                continue
            watermark = gate.watermark_ms
            event_ms = record[time_field]
            status = gate.admit(record["event_id"], event_ms, produced_ms)
            if status == DUPLICATE:
                batch.duplicates += 1
                continue
            if status == LATE:
                batch.late_everywhere += 1
                batch.late.append(self._late(record, offset, value, watermark, self._names))
                continue
            late_for = tuple(i for i, ms in self._stricter if event_ms < watermark - ms)
            if late_for:
                batch.late_for[len(batch.accepted)] = late_for
                names = [self._names[i] for i in late_for]
                batch.late.append(self._late(record, offset, value, watermark, names))
            batch.accepted.append(record)
        return batch

    def _late(
        self,
        record: Mapping[str, Any],
        offset: int,
        value: bytes | None,
        watermark_ms: int,
        names: Sequence[str],
    ) -> Rejected:
        return Rejected(
            "late",
            f"event_time {record.get('event_time')} is older than the partition watermark "
            f"{watermark_ms} minus the allowed lateness of {list(names)}",
            self.topic,
            self.partition,
            offset,
            value,
        )

    def snapshot(self) -> GateState:
        """The gate's state to resume from."""
        return self.gate.snapshot()
