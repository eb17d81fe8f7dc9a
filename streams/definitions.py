"""Compile Feast stream feature views into engine specs.

The Feast registry is the only definition of features: this module reads
``StreamFeatureView`` objects (their ``KafkaSource``, entities and
``Aggregation`` list) and turns them into :class:`~streams.core.ViewSpec`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from featurestream.errors import ConfigError, DefinitionError
from featurestream.events import Contract, contract_for_topic, parse_contract

from .core import AggregationSpec, ViewSpec, aggregator_for, default_tile_ms

__all__ = ["compile_registry", "compile_view", "select_views"]

_MS = 1000


def _ms(delta: Any) -> int:
    seconds: float = delta.total_seconds()
    return round(seconds * _MS)


def compile_view(project: str, view: Any, join_keys: Sequence[str]) -> ViewSpec:
    """Compile one Feast ``StreamFeatureView`` into a :class:`ViewSpec`.

    Args:
        project: The Feast project.
        view: A ``feast.StreamFeatureView`` with aggregations.
        join_keys: The join keys of the view's entities, in order.

    Raises:
        DefinitionError: with the view name and what to change.
    """
    name = view.name
    source = view.stream_source if getattr(view, "stream_source", None) else view.source
    options = getattr(source, "kafka_options", None)
    topic = getattr(options, "topic", None)
    if not topic:
        raise DefinitionError(
            f"view {name!r}: source {source.name!r} is not a KafkaSource with a topic"
        )
    contract = _check_format(name, topic, getattr(options, "message_format", None))
    lateness = getattr(options, "watermark_delay_threshold", None)
    lateness_ms = _ms(lateness) if lateness else 0
    hop = getattr(view, "tiling_hop_size", None)
    feature_names = {f.name for f in view.features}
    aggs: list[AggregationSpec] = []
    for agg in view.aggregations:
        aggs.append(_compile_aggregation(name, agg, hop, feature_names))
    if not aggs:
        raise DefinitionError(
            f"view {name!r} has no aggregations; the engine runs aggregating views"
        )
    used = [*join_keys, view.timestamp_field, *(a.column for a in aggs)]
    missing = sorted({f for f in used if f not in contract.field_names})
    if missing:
        raise DefinitionError(
            f"view {name!r}: {missing} are not fields of {contract.name} (topic {topic!r}); "
            f"fields: {list(contract.field_names)}"
        )
    return ViewSpec(
        project=project,
        name=name,
        topic=topic,
        join_keys=tuple(join_keys),
        timestamp_field=view.timestamp_field,
        allowed_lateness_ms=lateness_ms,
        aggregations=tuple(aggs),
        field_types=tuple(
            (f, contract.field_types[f])
            for f in dict.fromkeys([*join_keys, *(a.column for a in aggs)])
        ),
    )


def _compile_aggregation(view: str, agg: Any, hop: Any, features: set[str]) -> AggregationSpec:
    if not agg.name:
        raise DefinitionError(
            f"view {view!r}: aggregation {agg.function}({agg.column}) has no name; "
            "set Aggregation(name=...) to the schema field it fills"
        )
    if agg.name not in features:
        raise DefinitionError(
            f"view {view!r}: aggregation {agg.name!r} is not a schema field; "
            f"fields: {sorted(features)}"
        )
    try:
        aggregator_for(agg.function)
    except KeyError as exc:
        raise DefinitionError(f"view {view!r}, feature {agg.name!r}: {exc.args[0]}") from None
    if agg.time_window is None:
        raise DefinitionError(f"view {view!r}, feature {agg.name!r}: time_window is required")
    window_ms = _ms(agg.time_window)
    tile_ms = _ms(hop) if hop else default_tile_ms(window_ms)
    if tile_ms <= 0 or window_ms <= 0 or window_ms % tile_ms:
        raise DefinitionError(
            f"view {view!r}, feature {agg.name!r}: window {window_ms} ms is not a whole number "
            f"of tiles of {tile_ms} ms; choose tiling_hop_size dividing every window"
        )
    return AggregationSpec(
        name=agg.name,
        function=agg.function,
        column=agg.column,
        window_ms=window_ms,
        tile_ms=tile_ms,
    )


def _check_format(view: str, topic: str, message_format: Any) -> Contract:
    schema_json = getattr(message_format, "schema_json", None)
    if schema_json is None or type(message_format).__name__ != "AvroFormat":
        raise DefinitionError(f"view {view!r}: source of topic {topic!r} must use AvroFormat")
    try:
        declared = parse_contract(json.loads(schema_json))
    except (ValueError, ConfigError) as exc:
        raise DefinitionError(f"view {view!r}: AvroFormat schema is not valid: {exc}") from exc
    try:
        expected = contract_for_topic(topic)
    except ConfigError as exc:
        raise DefinitionError(f"view {view!r}: {exc}") from exc
    if declared.fingerprint != expected.fingerprint:
        raise DefinitionError(
            f"view {view!r}: AvroFormat schema of topic {topic!r} differs from the checked-in "
            f"contract {expected.name}; build it from featurestream.events.contract_for_topic"
        )
    return expected


def compile_registry(store: Any) -> tuple[ViewSpec, ...]:
    """Compile every aggregating stream feature view of a ``feast.FeatureStore``."""
    project = store.project
    entities = {e.name: e for e in store.list_entities()}
    specs = []
    for view in store.list_stream_feature_views():
        if not view.aggregations:
            continue
        for entity_name in view.entities:
            if entity_name not in entities:
                raise DefinitionError(f"view {view.name!r}: unknown entity {entity_name!r}")
        # The same order the online and offline plugins use (the view's entity columns).
        specs.append(compile_view(project, view, [f.name for f in view.entity_columns]))
    return tuple(sorted(specs, key=lambda s: s.name))


def select_views(specs: Iterable[ViewSpec], names: Sequence[str]) -> tuple[ViewSpec, ...]:
    """The specs named (all when ``names`` is empty).

    Raises:
        DefinitionError: naming the unknown views and listing the known ones.
    """
    specs = tuple(specs)
    if not names:
        return specs
    known = {s.name: s for s in specs}
    unknown = [n for n in names if n not in known]
    if unknown:
        near = sorted({m for n in unknown for m in difflib.get_close_matches(n, list(known))})
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise DefinitionError(
            f"unknown stream feature view(s) {unknown}{hint}; known: {sorted(known)}"
        )
    return tuple(known[n] for n in names)
