"""Compile Feast stream feature views into engine specs.

The Feast registry is the only definition of features: this module reads
``StreamFeatureView`` objects (their ``KafkaSource``, entities and
``Aggregation`` list) and turns them into :class:`~streams.core.ViewSpec`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from featurestream.errors import ConfigError, DefinitionError
from featurestream.events import Contract, contract_for_topic, load_contracts, parse_contract

from .core import AggregationSpec, ViewSpec, aggregator_for, default_tile_ms

__all__ = ["cached_views", "compile_registry", "compile_view", "select_views"]

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


def _spec_json(spec: ViewSpec) -> dict[str, Any]:
    return {
        "project": spec.project,
        "name": spec.name,
        "topic": spec.topic,
        "join_keys": list(spec.join_keys),
        "timestamp_field": spec.timestamp_field,
        "allowed_lateness_ms": spec.allowed_lateness_ms,
        "aggregations": [
            [a.name, a.function, a.column, a.window_ms, a.tile_ms] for a in spec.aggregations
        ],
        "field_types": [list(t) for t in spec.field_types],
    }


def _spec_from_json(doc: dict[str, Any]) -> ViewSpec:
    return ViewSpec(
        project=doc["project"],
        name=doc["name"],
        topic=doc["topic"],
        join_keys=tuple(doc["join_keys"]),
        timestamp_field=doc["timestamp_field"],
        allowed_lateness_ms=doc["allowed_lateness_ms"],
        aggregations=tuple(AggregationSpec(*a) for a in doc["aggregations"]),
        field_types=tuple((k, t) for k, t in doc["field_types"]),
    )


def _local_registry(repo_path: Path) -> tuple[bytes, Path] | None:
    """The repo config's bytes and its local registry file, when both are plain files.

    None when the registry is not a local file (then only Feast itself can read the
    definitions).
    """
    import yaml

    config_file = repo_path / "feature_store.yaml"
    try:
        raw = config_file.read_bytes()
        doc = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError):
        return None
    registry = doc.get("registry") if isinstance(doc, dict) else None
    if isinstance(registry, dict):
        if registry.get("registry_type", "file") != "file":
            return None
        registry = registry.get("path")
    if not isinstance(registry, str) or "${" in registry or "://" in registry:
        return None
    path = Path(registry)
    path = path if path.is_absolute() else repo_path / path
    return (raw, path) if path.is_file() else None


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("featurestream")
    except PackageNotFoundError:
        return "unknown"


def cached_views(
    repo_path: Path,
    cache_dir: Path,
    compile_all: Callable[[], tuple[tuple[ViewSpec, ...], Path]],
) -> tuple[tuple[ViewSpec, ...], Path]:
    """The compiled views of the repository at ``repo_path`` and its offline log root,
    from a cache when possible.

    The cache entry is named by a hash of the repository config and the registry file,
    so any ``feast apply`` (a changed registry) or config change compiles afresh with
    ``compile_all`` (which imports Feast: seconds of start-up the cache saves engine
    processes). Registries that are not local files are always compiled.
    """
    local = _local_registry(repo_path)
    if local is None:
        return compile_all()
    config, registry = local
    # Everything the compiled views and the log root depend on: the config as Feast
    # reads it (environment variables substituted), where the repository is, the
    # registry, this package's version and the event contracts.
    digest = hashlib.sha256()
    for part in (
        os.path.expandvars(config.decode(errors="replace")).encode(),
        str(repo_path.resolve()).encode(),
        registry.read_bytes(),
        _package_version().encode(),
        *(c.fingerprint for c in load_contracts()),
    ):
        digest.update(len(part).to_bytes(8, "big") + part)
    entry = cache_dir / f"views-{digest.hexdigest()[:32]}.json"
    try:
        doc = json.loads(entry.read_text())
        return tuple(_spec_from_json(d) for d in doc["views"]), Path(doc["log_root"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent or unreadable: compile and rewrite it
    specs, root = compile_all()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"views": [_spec_json(s) for s in specs], "log_root": str(root)}))
        os.replace(tmp, entry)
    except OSError:
        pass  # a read-only state dir only costs the start-up time
    return specs, root
