"""The Bytewax dataflow compiled from stream feature view specs.

    kafka_in -> decode -> route (view, entity) -> tiles (stateful, per key) -> online sink
                  \\-> errors -> dead-letter sink

Building the flow does no I/O: sources and sinks are passed in, so the same
flow runs against Kafka and Redis in production and against Bytewax's
``TestingSource``/``TestingSink`` in unit tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import Source
from bytewax.outputs import Sink

from featurestream.errors import EventError
from featurestream.events import AvroCodec

from ..core import EntityTiles, TileUpdate, ViewSpec, entity_id, tile_key

__all__ = ["DeadLetter", "Envelope", "Routed", "SinkItem", "build_flow"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """One consumed message, decoded or not, with its source position."""

    topic: str
    partition: int
    offset: int
    record: dict[str, Any] | None
    error: EventError | None
    raw: bytes | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be used, with why (sent to the dead-letter topic)."""

    topic: str
    partition: int
    offset: int
    kind: str
    reason: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Routed:
    """One event on its way to one view's state."""

    view: int
    record: dict[str, Any]
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class SinkItem:
    """What the online sink writes: a tile update and the source position it covers."""

    update: TileUpdate | None
    topic: str
    partition: int
    offset: int


def _decoder(codec: AvroCodec) -> Any:
    def decode(msg: Any) -> Envelope:
        try:
            record = codec.decode(msg.topic, msg.value, partition=msg.partition, offset=msg.offset)
        except EventError as exc:
            return Envelope(msg.topic, msg.partition, msg.offset, None, exc, msg.value)
        return Envelope(msg.topic, msg.partition, msg.offset, record, None)

    return decode


def _router(views: Sequence[ViewSpec]) -> Any:
    by_topic: dict[str, list[int]] = {}
    for index, view in enumerate(views):
        by_topic.setdefault(view.topic, []).append(index)

    def route(env: Envelope) -> Iterable[tuple[str, Routed]]:
        record = env.record
        if record is None:
            # Undecodable messages still pass through the state step (as a no-op) so
            # the source progress written online covers them too.
            return [(f"_dlq|{env.topic}", Routed(-1, {}, env.topic, env.partition, env.offset))]
        out = []
        for index in by_topic.get(env.topic, ()):
            view = views[index]
            # compile_view checked that join keys are fields of the topic's schema.
            key = f"{view.state_id}|{entity_id([record[k] for k in view.join_keys])}"
            out.append((key, Routed(index, record, env.topic, env.partition, env.offset)))
        return out

    return route


def _tiles_mapper(views: Sequence[ViewSpec]) -> Any:
    def apply(state: EntityTiles | None, item: Routed) -> tuple[EntityTiles, SinkItem]:
        tiles = state if state is not None else EntityTiles()
        if item.view < 0:
            return tiles, SinkItem(None, item.topic, item.partition, item.offset)
        view = views[item.view]
        entity = entity_id([item.record[k] for k in view.join_keys])
        update = tiles.apply(view, tile_key(view.project, view.name, entity), item.record)
        return tiles, SinkItem(update, item.topic, item.partition, item.offset)

    return apply


def _dead_letter(env: Envelope) -> DeadLetter | None:
    if env.error is None:
        return None
    return DeadLetter(
        env.topic, env.partition, env.offset, env.error.kind, env.error.reason, env.raw
    )


def build_flow(
    views: Sequence[ViewSpec],
    codec: AvroCodec,
    source: Source[Any],
    online_sink: Sink[SinkItem],
    dead_letter_sink: Sink[DeadLetter],
    *,
    flow_id: str = "featurestream",
) -> Dataflow:
    """Compile ``views`` into a dataflow reading ``source``.

    Args:
        views: The stream feature views to run (see ``streams.definitions``).
        codec: Decoder of the source messages.
        source: Emits objects with ``topic``, ``partition``, ``offset`` and ``value``
            (Bytewax's ``KafkaSourceMessage``).
        online_sink: Receives :class:`SinkItem` (tile updates with positions).
        dead_letter_sink: Receives :class:`DeadLetter` for every undecodable message.
        flow_id: Dataflow id.
    """
    views = tuple(views)
    flow = Dataflow(flow_id)
    messages = op.input("kafka_in", flow, source)
    envelopes = op.map("decode", messages, _decoder(codec))
    bad = op.filter_map("errors", envelopes, _dead_letter)
    op.output("dead_letters", bad, dead_letter_sink)
    routed = op.flat_map("route", envelopes, _router(views))
    # The step id carries every view's definition hash: a changed definition
    # starts from fresh state instead of resuming incompatible snapshots.
    step = "tiles_" + "_".join(v.state_id for v in views)
    updates = op.stateful_map(step, routed, _tiles_mapper(views))
    op.output("online", op.map("unkey", updates, lambda kv: kv[1]), online_sink)
    return flow
