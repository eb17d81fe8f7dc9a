"""The Bytewax dataflow compiled from stream feature view specs.

    source (decode + gate) ─┬─ errors ─▶ dead-letter sink
                            ├─ late ───▶ late-events sink
                            └─ route (view, entity) ─▶ tiles (stateful, per key)
                                                        ├─▶ online sink (tiles + progress)
                                                        └─▶ offline log (applied events)

Building the flow does no I/O: sources and sinks are passed in, so the same
flow runs against Kafka and Redis in production and against Bytewax's
``TestingSource``/``TestingSink`` in unit tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from featurestream.errors import EventError

from ..core import EntityTiles, TileUpdate, ViewSpec, entity_id, tile_key
from .metrics import FlowMetrics

__all__ = ["Envelope", "LogRow", "Rejected", "Routed", "SinkItem", "build_flow"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One consumed message, classified by its partition's gate.

    ``status`` is ``ok``, ``late``, ``duplicate`` or ``error``; ``watermark_ms`` is
    the partition's watermark before this message.
    """

    topic: str
    partition: int
    offset: int
    record: dict[str, Any] | None
    error: EventError | None
    raw: bytes | None = None
    status: str = "ok"
    watermark_ms: int = -(2**62)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message not applied online (dead letter or late event), with why."""

    kind: str
    reason: str
    topic: str
    partition: int
    offset: int
    value: bytes | None

    def headers(self) -> list[tuple[str, str | bytes | None]]:
        """Kafka headers describing where the message came from and why it is here."""
        return [
            ("error.kind", self.kind.encode()),
            ("error.reason", self.reason.encode()),
            ("source.topic", self.topic.encode()),
            ("source.partition", str(self.partition).encode()),
            ("source.offset", str(self.offset).encode()),
        ]


@dataclass(frozen=True, slots=True)
class Routed:
    """One message on its way to one view's state (view -1: progress only)."""

    view: int
    record: dict[str, Any]
    topic: str
    partition: int
    offset: int
    entity: str = ""


@dataclass(frozen=True, slots=True)
class LogRow:
    """One applied event of one view, for the offline log."""

    view: str
    entity: dict[str, Any]
    event_time_ms: int
    event_id: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SinkItem:
    """A tile update (or none) and the source position it covers."""

    update: TileUpdate | None
    topic: str
    partition: int
    offset: int
    log: LogRow | None = None


def _router(views: Sequence[ViewSpec], metrics: FlowMetrics) -> Any:
    by_topic: dict[str, list[int]] = {}
    for index, view in enumerate(views):
        by_topic.setdefault(view.topic, []).append(index)

    def route(env: Envelope) -> Iterable[tuple[str, Routed]]:
        record = env.record
        indexes = by_topic.get(env.topic, ())
        if record is None or env.status != "ok":
            for index in indexes:
                metrics.count(views[index].name, env.status)
            # Still through the state step (as a no-op), so the progress written
            # online covers every consumed message.
            return [
                (
                    f"_p|{env.topic}|{env.partition}",
                    Routed(-1, {}, env.topic, env.partition, env.offset),
                )
            ]
        out = []
        for index in indexes:
            view = views[index]
            if record[view.timestamp_field] < env.watermark_ms - view.allowed_lateness_ms:
                metrics.count(view.name, "late")  # late for this view's (smaller) lateness
                continue
            metrics.count(view.name, "applied")
            # compile_view checked that join keys are fields of the topic's schema.
            entity = entity_id([record[k] for k in view.join_keys])
            out.append(
                (
                    f"{view.state_id}|{entity}",
                    Routed(index, record, env.topic, env.partition, env.offset, entity),
                )
            )
        if not out:
            out.append(
                (
                    f"_p|{env.topic}|{env.partition}",
                    Routed(-1, {}, env.topic, env.partition, env.offset),
                )
            )
        return out

    return route


def _tiles_mapper(views: Sequence[ViewSpec]) -> Any:
    columns = [tuple(dict.fromkeys(a.column for a in v.aggregations)) for v in views]

    def apply(state: EntityTiles | None, item: Routed) -> tuple[EntityTiles | None, SinkItem]:
        if item.view < 0:
            return None, SinkItem(None, item.topic, item.partition, item.offset)
        tiles = state if state is not None else EntityTiles()
        view = views[item.view]
        record = item.record
        update = tiles.apply(view, tile_key(view.project, view.name, item.entity), record)
        row = LogRow(
            view.name,
            {k: record[k] for k in view.join_keys},
            record[view.timestamp_field],
            record["event_id"],
            {c: record.get(c) for c in columns[item.view]},
        )
        return tiles, SinkItem(update, item.topic, item.partition, item.offset, row)

    return apply


def _rejected(env: Envelope) -> Rejected | None:
    if env.status == "error" and env.error is not None:
        return Rejected(
            env.error.kind, env.error.reason, env.topic, env.partition, env.offset, env.raw
        )
    return None


def _late_events(views: Sequence[ViewSpec]) -> Any:
    by_topic: dict[str, list[ViewSpec]] = {}
    for view in views:
        by_topic.setdefault(view.topic, []).append(view)

    def late(env: Envelope) -> Rejected | None:
        record = env.record
        if record is None or env.status not in ("ok", "late"):
            return None
        topic_views = by_topic.get(env.topic, [])
        if env.status == "late":
            names = [v.name for v in topic_views]
        else:  # on time for the gate, but maybe late for a view with a smaller lateness
            names = [
                v.name
                for v in topic_views
                if record[v.timestamp_field] < env.watermark_ms - v.allowed_lateness_ms
            ]
        if not names:
            return None
        return Rejected(
            "late",
            f"event_time {record.get('event_time')} is older than the partition watermark "
            f"{env.watermark_ms} minus the allowed lateness of {names}",
            env.topic,
            env.partition,
            env.offset,
            env.raw,
        )

    return late


def build_flow(
    views: Sequence[ViewSpec],
    source: Source[Envelope],
    online_sink: Sink[SinkItem],
    dead_letter_sink: Sink[Rejected],
    late_sink: Sink[Rejected],
    offline_sink: Sink[tuple[str, LogRow]] | None = None,
    *,
    metrics: FlowMetrics | None = None,
    flow_id: str = "featurestream",
) -> Dataflow:
    """Compile ``views`` into a dataflow reading classified envelopes from ``source``.

    Args:
        views: The stream feature views to run (see ``streams.definitions``).
        source: Emits :class:`Envelope` (``streams.flow.source.KafkaEventSource``).
        online_sink: Receives :class:`SinkItem` (tile updates with positions).
        dead_letter_sink: Receives :class:`Rejected` for every undecodable message.
        late_sink: Receives :class:`Rejected` for every late event.
        offline_sink: Receives ``(view name, LogRow)`` for every applied event.
        metrics: Counters (events per view and status).
        flow_id: Dataflow id.
    """
    views = tuple(views)
    metrics = metrics or FlowMetrics()
    flow = Dataflow(flow_id)
    envelopes = op.input("kafka_in", flow, source)
    op.output("dead_letters", op.filter_map("errors", envelopes, _rejected), dead_letter_sink)
    op.output("late_events", op.filter_map("late", envelopes, _late_events(views)), late_sink)
    routed = op.flat_map("route", envelopes, _router(views, metrics))
    # The step id carries every view's definition hash: a changed definition
    # starts from fresh state instead of resuming incompatible snapshots.
    step = "tiles_" + "_".join(v.state_id for v in views)
    items = op.map("unkey", op.stateful_map(step, routed, _tiles_mapper(views)), lambda kv: kv[1])
    op.output("online", items, online_sink)
    if offline_sink is not None:
        rows = op.filter_map(
            "log_rows", items, lambda i: None if i.log is None else (i.log.view, i.log)
        )
        op.output("offline", rows, offline_sink)
    return flow
