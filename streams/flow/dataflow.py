"""The Bytewax dataflow compiled from stream feature view specs: one branch per view.

    per view: source (its topic's partitions: decode + gate, its own state)
        ├─ errors ─▶ dead-letter sink (all views)
        ├─ late ───▶ late-events sink (all views)
        └─ route (entity shard) ─▶ tiles (stateful, per shard)
                                     ├─▶ online sink (tiles + the view's progress)
                                     └─▶ offline log (applied events)

Every view reads its topic itself, and the ids of its stateful steps carry its
definition's hash (``state_id``): a changed or added view starts from fresh state
at the beginning of its topic while every other view resumes where it was.

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
from collections.abc import Callable, Mapping, Sequence
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
STATE_LAYOUT = 4


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

    ``entries`` is empty for a progress-only group (messages the view does not apply).
    Every group of a batch carries the batch's offset range and group count, so the
    online sink claims a batch's progress only once all its groups are written.
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
    """The tile updates of one group (or none) of one view and the source batch it
    belongs to; ``log`` holds the decoded records the group applied (rows of the
    view's log)."""

    updates: list[TileUpdate]
    topic: str
    partition: int
    batch_start: int
    batch_end: int
    batch_groups: int
    view: str
    state_id: str
    log: list[dict[str, Any]] = field(default_factory=list)


def _router(index: int, view: ViewSpec, metrics: FlowMetrics) -> Any:
    keys = view.join_keys
    state_id = view.state_id

    def route(batch: SourceBatch) -> list[tuple[str, Routed]]:
        topic, partition = batch.topic, batch.partition
        groups: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
        late_for = batch.late_for
        for position, record in enumerate(batch.accepted):
            if late_for and position in late_for:
                continue  # late for this view (a classifier shared with others)
            # compile_view checked that join keys are fields of the topic's schema.
            # The entity: the join key's value itself (an int is held more compactly
            # than its text), or for several join keys their entity_id text.
            value = record[keys[0]]
            entity = value if len(keys) == 1 else entity_id([record[k] for k in keys])
            state_key = f"{state_id}|{shard_of(entity, value)}"
            group = groups.get(state_key)
            if group is None:
                groups[state_key] = [(entity, record)]
            else:
                group.append((entity, record))
        applied = sum(len(g) for g in groups.values())
        for status, n in (
            ("applied", applied),
            ("late", len(batch.late)),
            ("duplicate", batch.duplicates),
            ("error", len(batch.rejected)),
        ):
            if n:
                metrics.count(view.name, status, n)
        # Messages the view does not apply pass through the state step as a no-op group,
        # so the progress written online covers every consumed message.
        skipped = bool(not groups or batch.rejected or batch.late_everywhere or batch.duplicates)
        n = len(groups) + (1 if skipped else 0)
        start, end = batch.first_offset, batch.last_offset
        out = [
            (key, Routed(index, entries, topic, partition, start, end, n))
            for key, entries in groups.items()
        ]
        if skipped:
            out.append(
                (f"_p|{state_id}|{partition}", Routed(index, [], topic, partition, start, end, n))
            )
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
            view.state_id,
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
    sources: Mapping[str, Source[SourceBatch]],
    online_sink: Sink[SinkItem],
    dead_letter_sink: Sink[Rejected],
    late_sink: Sink[Rejected],
    offline_sink: Sink[tuple[str, list[dict[str, Any]]]] | None = None,
    *,
    metrics: FlowMetrics | None = None,
    flow_id: str = "featurestream",
) -> Dataflow:
    """Compile ``views`` into a dataflow, each view reading its own source.

    Args:
        views: The stream feature views to run (see ``streams.definitions``).
        sources: Per view name, its source: a :class:`~streams.core.classify.SourceBatch`
            per read of a partition, in offset order (``streams.flow.source``).
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
    apply = _tiles_applier(views)
    dead, late, items = [], [], []
    for index, view in enumerate(views):
        # Step ids carry the view's definition hash and the state layout: a changed
        # definition starts from fresh state (and its source from the start of the
        # topic) instead of resuming incompatible snapshots; other views resume.
        sid = f"{view.state_id}_v{STATE_LAYOUT}"
        batches = op.input(f"kafka_in_{sid}", flow, sources[view.name])
        dead.append(op.flat_map(f"errors_{sid}", batches, _dead_letters))
        late.append(op.flat_map(f"late_{sid}", batches, _late))
        routed = op.flat_map(f"route_{sid}", batches, _router(index, view, metrics))
        shards = op.stateful_batch(
            f"tiles_{sid}", routed, lambda resume: _ShardLogic(apply, resume)
        )
        items.append(op.map(f"unkey_{sid}", shards, lambda kv: kv[1]))
    op.output("dead_letters", op.merge("all_dead_letters", *dead), dead_letter_sink)
    op.output("late_events", op.merge("all_late_events", *late), late_sink)
    applied = op.merge("all_applied", *items)
    op.output("online", applied, online_sink)
    if offline_sink is not None:
        rows = op.filter_map("log_rows", applied, lambda i: (i.view, i.log) if i.log else None)
        op.output("offline", rows, offline_sink)
    return flow


def _dead_letters(batch: SourceBatch) -> list[Rejected]:
    return batch.rejected


def _late(batch: SourceBatch) -> list[Rejected]:
    return batch.late
