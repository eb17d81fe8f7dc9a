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

from ..core import EntityTiles, TileUpdate, ViewSpec, entity_id
from ..core.classify import Rejected, SourceBatch
from .metrics import FlowMetrics

__all__ = [
    "SHARDS",
    "STATE_LAYOUT",
    "Routed",
    "SinkItem",
    "build_flow",
    "shard_of",
]

# Version of the snapshot layout (source state and tile state); part of step ids.
STATE_LAYOUT = 3


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

    def route(batch: SourceBatch) -> list[tuple[str, Routed]]:
        topic, partition = batch.topic, batch.partition
        targets = by_topic.get(topic, [])
        groups: dict[str, tuple[int, list[tuple[Any, dict[str, Any]]]]] = {}
        late_for = batch.late_for
        applied = [0] * len(targets)
        for position, record in enumerate(batch.accepted):
            skip = late_for.get(position) if late_for else None
            for target, (index, view) in enumerate(targets):
                if skip is not None and target in skip:
                    continue  # late for this view's (smaller) lateness
                applied[target] += 1
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
        for target, (_, view) in enumerate(targets):
            late = batch.late_everywhere + sum(1 for s in late_for.values() if target in s)
            for status, n in (
                ("applied", applied[target]),
                ("late", late),
                ("duplicate", batch.duplicates),
                ("error", len(batch.rejected)),
            ):
                if n:
                    metrics.count(view.name, status, n)
        # Messages no view applies pass through the state step as a no-op group, so the
        # progress written online covers every consumed message.
        skipped = bool(not groups or batch.rejected or batch.late_everywhere or batch.duplicates)
        n = len(groups) + (1 if skipped else 0)
        start, end = batch.first_offset, batch.last_offset
        out = [
            (key, Routed(index, entries, topic, partition, start, end, n))
            for key, (index, entries) in groups.items()
        ]
        if skipped:
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
        # The entity as text (the entity_id of one value is its str).
        updates = [
            shard.tiles(view, entity).apply_all(view, str(entity), events)
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


def build_flow(
    views: Sequence[ViewSpec],
    source: Source[SourceBatch],
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
        source: Emits a :class:`~streams.core.classify.SourceBatch` per read of a
            partition, in offset order (``streams.flow.source.KafkaEventSource``).
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
    op.output("dead_letters", op.flat_map("errors", batches, _dead_letters), dead_letter_sink)
    op.output("late_events", op.flat_map("late", batches, _late), late_sink)
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


def _dead_letters(batch: SourceBatch) -> list[Rejected]:
    return batch.rejected


def _late(batch: SourceBatch) -> list[Rejected]:
    return batch.late
