"""The registry as the server plans with it (pure: Feast objects in, plain values out).

A :class:`Catalog` is built once per registry version from a
:class:`RegistrySnapshot` (read from the registry by :mod:`serving.registry`).
It holds, per feature view, on-demand view and feature service, what a lookup
needs (join keys and their types, compiled stream specs, the name under which
Feast stores a batch view's rows), the
``GET /features`` listing, and the cache of compiled lookup plans. A new registry
version gets a new catalog, so cached plans never outlive the definitions they
were compiled from.

Views whose definition the server cannot run (an on-demand view in pandas mode, a
stream view the engine cannot compile) are kept with a ``problem``; a request that
touches one is answered with that problem instead of failing the whole catalog.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from feast.feature_view import DUMMY_ENTITY_NAME
from feast.infra.online_stores.helpers import compute_versioned_name
from feast.stream_feature_view import StreamFeatureView
from feast.value_type import ValueType

from featurestream.errors import DefinitionError, UnknownName
from streams.core import AggregationSpec, ViewSpec
from streams.definitions import compile_view

__all__ = [
    "Catalog",
    "OdfvInfo",
    "Ref",
    "RegistrySnapshot",
    "ServiceInfo",
    "ViewInfo",
    "near",
    "python_transform",
]

_TRUE = frozenset({"true", "1", "yes"})


class Ref(NamedTuple):
    """One requested feature: ``prefix`` names it in the response, ``view`` holds it."""

    prefix: str
    view: str
    feature: str


@dataclass(frozen=True)
class RegistrySnapshot:
    """The Feast objects of one project at one registry version.

    Attributes:
        project: Feast project.
        entity_key_serialization_version: From ``feature_store.yaml``.
        versioned_online_reads: ``registry.enable_online_feature_view_versioning``.
        entities: ``feast.Entity`` objects.
        feature_views: ``FeatureView`` and ``StreamFeatureView`` objects.
        on_demand_feature_views: ``OnDemandFeatureView`` objects.
        feature_services: ``FeatureService`` objects.
        fingerprint: Changes whenever the registry content changes.
    """

    project: str
    entity_key_serialization_version: int
    versioned_online_reads: bool
    entities: tuple[Any, ...]
    feature_views: tuple[Any, ...]
    on_demand_feature_views: tuple[Any, ...]
    feature_services: tuple[Any, ...]
    fingerprint: str = ""


@dataclass(frozen=True)
class ViewInfo:
    """A feature view as the server reads it.

    Attributes:
        name: View name.
        kind: ``stream`` or ``batch``.
        tiled: True for aggregating stream views (tiles merged at read time); False
            for views in Feast's Redis layout (written by ``feast materialize``).
        features: Feature name -> Feast value type, in schema order.
        join_keys: Join keys of the view's entities, in entity order.
        pii: Tagged ``pii``.
        ttl_ms: The view's ``ttl`` (None: none).
        spec: The engine spec of a tiled view.
        storage_name: The view's name in Feast's online store (its versioned name).
        problem: Why the server cannot read this view (None: it can).
    """

    name: str
    kind: str
    tiled: bool
    features: Mapping[str, ValueType]
    type_names: Mapping[str, str]
    descriptions: Mapping[str, str]
    join_keys: tuple[str, ...]
    tags: Mapping[str, str]
    pii: bool
    ttl_ms: int | None
    owner: str
    description: str
    spec: ViewSpec | None
    storage_name: str
    problem: str | None

    @property
    def aggregations(self) -> dict[str, AggregationSpec]:
        """Aggregation per feature of a tiled view."""
        return {a.name: a for a in self.spec.aggregations} if self.spec else {}


@dataclass(frozen=True)
class OdfvInfo:
    """An on-demand feature view in python mode.

    Attributes:
        name: View name.
        features: Output feature -> Feast value type.
        sources: ``(view name, features)`` of every source feature view.
        request_fields: Request field -> Feast value type.
        transform: Feast's ``transform_dict`` of the view (see :func:`python_transform`).
        pii: Tagged ``pii``, or reads a view tagged ``pii``.
        problem: Why the server cannot run it (None: it can).
    """

    name: str
    features: Mapping[str, ValueType]
    type_names: Mapping[str, str]
    sources: tuple[tuple[str, tuple[str, ...]], ...]
    request_fields: Mapping[str, ValueType]
    transform: Callable[[dict[str, Any]], dict[str, Any]]
    tags: Mapping[str, str]
    pii: bool
    owner: str
    description: str
    problem: str | None


@dataclass(frozen=True)
class ServiceInfo:
    """A feature service: the refs it serves, in order."""

    name: str
    refs: tuple[Ref, ...]
    tags: Mapping[str, str]
    owner: str
    description: str
    problem: str | None


def near(name: str, known: Sequence[str], n: int = 3) -> list[str]:
    """The known names closest to ``name`` (for "did you mean" hints)."""
    return difflib.get_close_matches(name, list(known), n=n, cutoff=0.5)


def _is_pii(tags: Mapping[str, str]) -> bool:
    return str(tags.get("pii", "")).strip().lower() in _TRUE


def python_transform(odfv: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Feast's ``OnDemandFeatureView.transform_dict`` for a python-mode view, minus its
    per-call type checks (typeguard instruments the whole class: ~50 us per call).

    Like Feast, every source feature is given under both its short and its
    ``view__feature`` name, the UDF runs through the view's ``PythonTransformation``
    (``transform_singleton`` for singleton views), and the names added are removed.
    """
    pairs = tuple(
        (f"{projection.name}__{feature.name}", feature.name)
        for projection in odfv.source_feature_view_projections.values()
        for feature in projection.features
    )
    transformation = odfv.feature_transformation
    run = transformation.transform_singleton if odfv.singleton else transformation.transform

    def transform(features: dict[str, Any]) -> dict[str, Any]:
        given = dict(features)
        added = []
        for full, short in pairs:
            if full in features:
                given[short] = features[full]
                added.append(short)
            elif short in features:
                given[full] = features[short]
                added.append(full)
        out: dict[str, Any] = run(given)
        for name in added:
            out.pop(name, None)
        return out

    return transform


def _window(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _value_type(dtype: Any) -> ValueType:
    try:
        out: ValueType = dtype.to_value_type()
    except (AttributeError, ValueError):
        return ValueType.UNKNOWN
    return out


class Catalog:
    """Everything the server plans lookups with, for one registry version.

    Args:
        snapshot: The registry's objects.
        max_plans: Most compiled plans kept (distinct feature lists x name modes).
    """

    def __init__(self, snapshot: RegistrySnapshot, *, max_plans: int = 1024) -> None:
        self.snapshot = snapshot
        self.project = snapshot.project
        self.fingerprint = snapshot.fingerprint
        self.key_version = snapshot.entity_key_serialization_version
        self._max_plans = max_plans
        self._plans: dict[tuple[Any, ...], Any] = {}
        self.entity_join_keys: dict[str, str] = {}
        self.join_key_types: dict[str, ValueType] = {}
        self._entity_types: dict[str, ValueType] = {}
        for entity in snapshot.entities:
            self.entity_join_keys[entity.name] = entity.join_key
            self._entity_types[entity.join_key] = entity.value_type
        self.views: dict[str, ViewInfo] = {}
        for view in snapshot.feature_views:
            self.views[view.name] = self._view(view, snapshot)
        for key, value_type in self._entity_types.items():
            if self.join_key_types.get(key, ValueType.UNKNOWN) == ValueType.UNKNOWN:
                self.join_key_types[key] = value_type
        self.odfvs = {o.name: self._odfv(o) for o in snapshot.on_demand_feature_views}
        self.services = {s.name: self._service(s) for s in snapshot.feature_services}
        self.features_json = orjson.dumps(
            {"features": self.feature_rows(), "feature_services": self.service_rows()}
        )

    # ------------------------------------------------------------ building
    def _view(self, view: Any, snapshot: RegistrySnapshot) -> ViewInfo:
        tiled = isinstance(view, StreamFeatureView) and bool(view.aggregations)
        join_keys = []
        for entity_name in view.entities:
            key = self.entity_join_keys.get(entity_name, entity_name)
            join_keys.append(view.projection.join_key_map.get(key, key))
        for column in view.entity_columns:
            value_type = _value_type(column.dtype)
            if value_type != ValueType.UNKNOWN:
                self.join_key_types.setdefault(column.name, value_type)
        problem = None
        spec = None
        if any(name == DUMMY_ENTITY_NAME for name in view.entities):
            problem = (
                f"view {view.name!r} has no entity; the fast server serves views with entities "
                "(use feast serve for entityless views)"
            )
        elif tiled:
            try:
                spec = compile_view(
                    snapshot.project, view, [f.name for f in view.entity_columns] or join_keys
                )
            except DefinitionError as exc:
                problem = str(exc)
        storage_name = compute_versioned_name(view, snapshot.versioned_online_reads)
        # Join keys are not features (a registry round trip may list them among them).
        keys = {*join_keys, *(c.name for c in view.entity_columns)}
        fields = [f for f in view.features if f.name not in keys]
        features = {f.name: _value_type(f.dtype) for f in fields}
        ttl = getattr(view, "ttl", None)
        ttl_ms = round(ttl.total_seconds() * 1000) if ttl else None
        return ViewInfo(
            name=view.name,
            kind="stream" if isinstance(view, StreamFeatureView) else "batch",
            tiled=tiled,
            features=features,
            type_names={f.name: str(f.dtype) for f in fields},
            descriptions={f.name: f.description or "" for f in fields},
            join_keys=tuple(join_keys),
            tags=dict(view.tags),
            pii=_is_pii(view.tags),
            ttl_ms=ttl_ms or None,
            owner=view.owner or "",
            description=view.description or "",
            spec=spec,
            storage_name=storage_name,
            problem=problem,
        )

    def _odfv(self, odfv: Any) -> OdfvInfo:
        problem = None
        if odfv.mode != "python":
            problem = (
                f"on-demand view {odfv.name!r} is in {odfv.mode!r} mode; the fast server runs "
                "python mode only (use feast serve, or mode='python')"
            )
        elif getattr(odfv, "write_to_online_store", False) or getattr(odfv, "aggregations", None):
            problem = (
                f"on-demand view {odfv.name!r} writes to the online store or aggregates; "
                "the fast server does not serve those (use feast serve)"
            )
        sources = []
        pii = _is_pii(odfv.tags)
        for projection in odfv.source_feature_view_projections.values():
            view = self.views.get(projection.name)
            if view is None:
                problem = problem or (
                    f"on-demand view {odfv.name!r} reads {projection.name!r}, which is not a "
                    "feature view the fast server knows"
                )
                continue
            pii = pii or view.pii
            names = tuple(f.name for f in projection.features if f.name in view.features)
            sources.append((projection.name, names))
        request_fields = {
            field.name: _value_type(field.dtype)
            for source in odfv.source_request_sources.values()
            for field in source.schema
        }
        return OdfvInfo(
            name=odfv.name,
            features={f.name: _value_type(f.dtype) for f in odfv.features},
            type_names={f.name: str(f.dtype) for f in odfv.features},
            sources=tuple(sources),
            request_fields=request_fields,
            transform=python_transform(odfv) if problem is None else odfv.transform_dict,
            tags=dict(odfv.tags),
            pii=pii,
            owner=odfv.owner or "",
            description=odfv.description or "",
            problem=problem,
        )

    def _service(self, service: Any) -> ServiceInfo:
        refs: list[Ref] = []
        problem = None
        for projection in service.feature_view_projections:
            if projection.join_key_map:
                problem = (
                    f"feature service {service.name!r} maps join keys of {projection.name!r}; "
                    "the fast server does not support join key mapping (use feast serve)"
                )
            prefix = projection.name_to_use()
            view = self.views.get(projection.name)
            join_keys = set(view.join_keys) if view is not None else set()
            refs.extend(
                Ref(prefix, projection.name, f.name)
                for f in projection.features
                if f.name not in join_keys
            )
        return ServiceInfo(
            name=service.name,
            refs=tuple(refs),
            tags=dict(service.tags),
            owner=service.owner or "",
            description=service.description or "",
            problem=problem,
        )

    # ------------------------------------------------------------ lookups
    def service(self, name: str) -> ServiceInfo:
        """The feature service ``name``.

        Raises:
            UnknownName: naming the closest known services.
        """
        found = self.services.get(name)
        if found is None:
            known = sorted(self.services)
            hint = near(name, known)
            raise UnknownName(
                f"unknown feature service {name!r}"
                + (f" (did you mean {', '.join(hint)}?)" if hint else "")
                + f"; known: {', '.join(known) or 'none'}"
            )
        return found

    def cached_plan(self, key: tuple[Any, ...]) -> Any:
        """The plan compiled for ``key`` before, or None."""
        return self._plans.get(key)

    def keep_plan(self, key: tuple[Any, ...], plan: Any) -> None:
        """Cache ``plan`` (the oldest plan goes when the cache is full)."""
        if len(self._plans) >= self._max_plans:
            self._plans.pop(next(iter(self._plans)))
        self._plans[key] = plan

    # ------------------------------------------------------------ listing
    def feature_rows(self) -> list[dict[str, Any]]:
        """One row per feature of every view: what ``GET /features`` lists."""
        rows: list[dict[str, Any]] = []
        for view in sorted(self.views.values(), key=lambda v: v.name):
            aggs = view.aggregations
            for name in view.features:
                agg = aggs.get(name)
                rows.append(
                    {
                        "name": f"{view.name}:{name}",
                        "view": view.name,
                        "feature": name,
                        "kind": view.kind,
                        "type": view.type_names[name],
                        "aggregation": agg.function if agg else "",
                        "window": _window(agg.window_ms) if agg else "",
                        "entity": ",".join(view.join_keys),
                        "owner": view.owner,
                        "tags": dict(view.tags),
                        "description": view.descriptions[name] or view.description,
                        "servable": view.problem is None,
                    }
                )
        for odfv in sorted(self.odfvs.values(), key=lambda o: o.name):
            entity = sorted({k for source, _ in odfv.sources for k in self.views[source].join_keys})
            for name in odfv.features:
                rows.append(
                    {
                        "name": f"{odfv.name}:{name}",
                        "view": odfv.name,
                        "feature": name,
                        "kind": "on_demand",
                        "type": odfv.type_names[name],
                        "aggregation": "",
                        "window": "",
                        "entity": ",".join(entity),
                        "owner": odfv.owner,
                        "tags": dict(odfv.tags),
                        "description": odfv.description,
                        "servable": odfv.problem is None,
                        "request_fields": sorted(odfv.request_fields),
                    }
                )
        return rows

    def service_rows(self) -> list[dict[str, Any]]:
        """One row per feature service."""
        return [
            {
                "name": s.name,
                "features": [f"{r.prefix}:{r.feature}" for r in s.refs],
                "owner": s.owner,
                "tags": dict(s.tags),
                "description": s.description,
            }
            for s in sorted(self.services.values(), key=lambda s: s.name)
        ]
