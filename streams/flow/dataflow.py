"""The Bytewax dataflow compiled from stream feature view specs.

    source (batches per partition: decode + gate)
        ├─ errors ─▶ dead-letter sink
        ├─ late ───▶ late-events sink
        └─ route (view, entity shard) ─▶ tiles (stateful, per shard)
                                          ├─▶ online sink (tiles + progress)
                                          └─▶ offline log (applied events)

Items are batches, not single events: the source emits what one consume call
read from one partition, routing groups a batch by state shard, and a shard
applies its group entity by entity with one online update per entity. The
per-item cost of the runtime is paid per group.

Building the flow does no I/O: sources and sinks are passed in, so the same
flow runs against Kafka and Redis in production and against Bytewax's
``TestingSource``/``TestingSink`` in unit tests.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import Sink

from featurestream.errors import EventError

from ..core import EntityTiles, TileUpdate, ViewSpec, entity_id, tile_key
from .metrics import FlowMetrics

__all__ = [
    "SHARDS",
    "STATE_LAYOUT",
    "Envelope",
    "LogRow",
    "Rejected",
    "Routed",
    "SinkItem",
    "build_flow",
    "shard_of",
]

# Version of the snapshot layout (source state and tile state); part of step ids.
STATE_LAYOUT = 3


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


# Entities are spread over this many state keys (``{state_id}|{shard}``): a
# snapshot holds only the shards changed in its epoch, and the per-key overhead
# of the runtime is paid per shard, not per entity. Part of the state layout.
SHARDS = 1 << 16


def shard_of(entity: Any, first_key: Any) -> int:
    """The state shard of an entity (the same in every process and run)."""
    if type(first_key) is int:
        return first_key % SHARDS
    return zlib.crc32(str(entity).encode()) % SHARDS


@dataclass(frozen=True, slots=True)
class Routed:
    """The messages of one source batch bound for one shard of one view's state.

    ``view`` is -1 for a progress-only group (messages no view applies). Every group
    of a batch carries the batch's offset range and group count, so the online sink
    claims a batch's progress only once all its groups are written.
    """

    view: int
    entries: list[tuple[Any, dict[str, Any]]]  # (entity, record)
    topic: str
    partition: int
    batch_start: int
    batch_end: int
    batch_groups: int


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
    """The tile updates of one group (or none) and the source batch it belongs to;
    ``log`` holds the decoded records the group applied (rows of ``view``'s log)."""

    updates: list[TileUpdate]
    topic: str
    partition: int
    batch_start: int
    batch_end: int
    batch_groups: int
    view: str = ""
    log: list[dict[str, Any]] = field(default_factory=list)


def _router(views: Sequence[ViewSpec], metrics: FlowMetrics) -> Any:
    by_topic: dict[str, list[tuple[int, ViewSpec]]] = {}
    for index, view in enumerate(views):
        by_topic.setdefault(view.topic, []).append((index, view))

    def route(batch: Sequence[Envelope]) -> list[tuple[str, Routed]]:
        if not batch:
            return []
        first = batch[0]
        topic, partition = first.topic, first.partition
        targets = by_topic.get(topic, [])
        groups: dict[str, tuple[int, list[tuple[str, dict[str, Any]]]]] = {}
        skipped = False
        tally: dict[tuple[str, str], int] = {}
        for env in batch:
            record = env.record
            if record is None or env.status != "ok":
                for _, view in targets:
                    tally[view.name, env.status] = tally.get((view.name, env.status), 0) + 1
                skipped = True
                continue
            routed = False
            for index, view in targets:
                if record[view.timestamp_field] < env.watermark_ms - view.allowed_lateness_ms:
                    # late for this view's (smaller) lateness
                    tally[view.name, "late"] = tally.get((view.name, "late"), 0) + 1
                    continue
                tally[view.name, "applied"] = tally.get((view.name, "applied"), 0) + 1
                # compile_view checked that join keys are fields of the topic's schema.
                # The entity: the join key's value itself (an int is held more compactly
                # than its text), or for several join keys their entity_id text.
                keys = view.join_keys
                value = record[keys[0]]
                entity = value if len(keys) == 1 else entity_id([record[k] for k in keys])
                state_key = f"{view.state_id}|{shard_of(entity, value)}"
                group = groups.get(state_key)
                if group is None:
                    groups[state_key] = (index, [(entity, record)])
                else:
                    group[1].append((entity, record))
                routed = True
            skipped = skipped or not routed
        for (name, status), k in tally.items():
            metrics.count(name, status, k)
        n = len(groups) + (1 if skipped else 0)
        start, end = first.offset, batch[-1].offset
        out = [
            (key, Routed(index, entries, topic, partition, start, end, n))
            for key, (index, entries) in groups.items()
        ]
        if skipped:
            # Through the state step as a no-op, so the progress written online covers
            # every consumed message.
            out.append((f"_p|{topic}|{partition}", Routed(-1, [], topic, partition, start, end, n)))
        return out

    return route


class _Shard:
    """The entities of one state shard: live states (used in this epoch) and packed
    ones (:meth:`EntityTiles.pack`, a few hundred bytes instead of the objects'
    kilobyte). A snapshot packs the live ones, so an entity costs its packed size
    except in the epochs it is active in."""

    __slots__ = ("entities", "live")

    def __init__(self, entities: dict[Any, EntityTiles | bytes] | None = None) -> None:
        self.entities: dict[Any, EntityTiles | bytes] = entities or {}
        self.live: list[Any] = []

    def tiles(self, view: ViewSpec, entity: Any) -> EntityTiles:
        """The live state of ``entity`` (unpacked, or new)."""
        held = self.entities.get(entity)
        if isinstance(held, EntityTiles):
            return held
        tiles = EntityTiles() if held is None else EntityTiles.unpack(view, held)
        self.entities[entity] = tiles
        self.live.append(entity)
        return tiles

    def snapshot(self) -> bytes:
        """Pack the live states; the whole shard as bytes."""
        entities = self.entities
        for entity in self.live:
            held = entities[entity]
            if isinstance(held, EntityTiles):
                entities[entity] = held.pack()
        self.live = []
        return pickle.dumps(entities, protocol=pickle.HIGHEST_PROTOCOL)


def _tiles_applier(views: Sequence[ViewSpec]) -> Callable[[_Shard, Routed], SinkItem]:
    keys = [tile_key(view.project, view.name, "") for view in views]

    def apply(shard: _Shard, item: Routed) -> SinkItem:
        if item.view < 0:
            return SinkItem(
                [], item.topic, item.partition, item.batch_start, item.batch_end, item.batch_groups
            )
        view = views[item.view]
        by_entity: dict[Any, list[dict[str, Any]]] = {}
        for entity, record in item.entries:
            events = by_entity.get(entity)
            if events is None:
                by_entity[entity] = [record]
            else:
                events.append(record)
        prefix = keys[item.view]
        # The Redis key holds the entity as text (entity_id of one value is its str).
        updates = [
            shard.tiles(view, entity).apply_all(view, prefix + str(entity), events)
            for entity, events in by_entity.items()
        ]
        return SinkItem(
            updates,
            item.topic,
            item.partition,
            item.batch_start,
            item.batch_end,
            item.batch_groups,
            view.name,
            [record for _, record in item.entries],  # the offline log's rows
        )

    return apply


class _ShardLogic(StatefulBatchLogic[Routed, SinkItem, bytes]):
    """The runtime's state of one shard key (see :class:`_Shard`)."""

    def __init__(self, apply: Callable[[_Shard, Routed], SinkItem], resume: bytes | None) -> None:
        self._apply = apply
        # Our own snapshot, read back from the recovery store.
        self._shard = _Shard(pickle.loads(resume) if resume else None)  # noqa: S301

    def on_batch(self, values: list[Routed]) -> tuple[list[SinkItem], bool]:
        apply, shard = self._apply, self._shard
        # A progress-only key keeps no state.
        return [apply(shard, v) for v in values], not shard.entities

    def snapshot(self) -> bytes:
        return self._shard.snapshot()


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
    source: Source[list[Envelope]],
    online_sink: Sink[SinkItem],
    dead_letter_sink: Sink[Rejected],
    late_sink: Sink[Rejected],
    offline_sink: Sink[tuple[str, list[dict[str, Any]]]] | None = None,
    *,
    metrics: FlowMetrics | None = None,
    flow_id: str = "featurestream",
) -> Dataflow:
    """Compile ``views`` into a dataflow reading classified envelopes from ``source``.

    Args:
        views: The stream feature views to run (see ``streams.definitions``).
        source: Emits batches of :class:`Envelope` of one partition each, in offset
            order (``streams.flow.source.KafkaEventSource``).
        online_sink: Receives :class:`SinkItem` (tile updates with positions).
        dead_letter_sink: Receives :class:`Rejected` for every undecodable message.
        late_sink: Receives :class:`Rejected` for every late event.
        offline_sink: Receives ``(view name, [decoded record])``: every applied event.
        metrics: Counters (events per view and status).
        flow_id: Dataflow id.
    """
    views = tuple(views)
    metrics = metrics or FlowMetrics()
    flow = Dataflow(flow_id)
    batches = op.input(f"kafka_in_v{STATE_LAYOUT}", flow, source)
    op.output("dead_letters", op.flat_map("errors", batches, _each(_rejected)), dead_letter_sink)
    op.output("late_events", op.flat_map("late", batches, _each(_late_events(views))), late_sink)
    routed = op.flat_map("route", batches, _router(views, metrics))
    # The step id carries every view's definition hash and the state layout: a
    # changed definition starts from fresh state instead of resuming incompatible
    # snapshots (and the input step id changes with the layout, so offsets restart too).
    step = f"tiles_v{STATE_LAYOUT}_" + "_".join(v.state_id for v in views)
    apply = _tiles_applier(views)
    shards = op.stateful_batch(step, routed, lambda resume: _ShardLogic(apply, resume))
    items = op.map("unkey", shards, lambda kv: kv[1])
    op.output("online", items, online_sink)
    if offline_sink is not None:
        rows = op.filter_map("log_rows", items, lambda i: (i.view, i.log) if i.log else None)
        op.output("offline", rows, offline_sink)
    return flow


def _each(fn: Callable[[Envelope], Rejected | None]) -> Callable[[list[Envelope]], list[Rejected]]:
    def over(batch: list[Envelope]) -> list[Rejected]:
        return [r for env in batch if (r := fn(env)) is not None]

    return over
