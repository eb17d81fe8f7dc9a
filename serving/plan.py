"""Lookup plans: what one kind of request reads and how it lays out the answer (pure).

A plan is compiled once per ``(feature service | feature list, full_feature_names)``
and cached in the :class:`~serving.catalog.Catalog` of the registry version it was
compiled from. The layout follows Feast's feature server (``feast serve``):

1. the join keys given in ``entities``, in the order given;
2. the features of views in Feast's Redis layout (batch views), then of tiled
   stream views; views in order of first reference, features in order of request;
3. the outputs of on-demand views, in order of first reference.

Feast itself orders features *within* a view by iterating a ``set`` (an order
that changes between processes); this server keeps the request order.
Features read only as inputs of an on-demand view are fetched but not returned.
With ``full_feature_names``, Feast 0.67 drops the outputs of python-mode on-demand
views (their functions return short names); this server returns them as
``view__feature``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from feast.value_type import ValueType

from featurestream.errors import DefinitionError, InvalidRequest, UnknownName
from streams.core import AggregationSpec
from streams.online import FeastRows, ViewReady

from .catalog import Catalog, OdfvInfo, Ref, ViewInfo, near

__all__ = ["Column", "OdfvStep", "Plan", "Read", "parse_refs", "plan_for"]


@dataclass(frozen=True)
class Read:
    """One view read for every entity of a request.

    Attributes:
        view: The view.
        prefix: Its name in the response (``prefix__feature`` with full names).
        features: Features fetched, in order.
        rows: What the online store reads of a batch view (None for tiled views).
        aggs: Aggregation of each feature (tiled views).
        ready: The store's read of whether a stream view is served (None otherwise),
            the same for every lookup.
    """

    view: ViewInfo
    prefix: str
    features: tuple[str, ...]
    rows: FeastRows | None
    aggs: tuple[AggregationSpec, ...]
    ready: ViewReady | None = None


@dataclass(frozen=True)
class Column:
    """A returned feature: ``features[index]`` of ``reads[read]``, named ``name``."""

    read: int
    index: int
    name: str


@dataclass(frozen=True)
class OdfvStep:
    """One on-demand view applied to the fetched values.

    Attributes:
        odfv: The view.
        outputs: ``(feature, response name, value type)`` of each returned output.
        inputs: ``(read, feature index, input name)`` of each fetched input.
    """

    odfv: OdfvInfo
    outputs: tuple[tuple[str, str, ValueType], ...]
    inputs: tuple[tuple[int, int, str], ...]


@dataclass(frozen=True)
class Plan:
    """Everything one kind of request reads and returns.

    Attributes:
        reads: Views to read (Feast layout first, then tiled).
        columns: Returned features of the reads, in response order.
        odfvs: On-demand views to apply, in response order.
        request_fields: Request fields the on-demand views need, with their types.
        pii_views: Views tagged ``pii`` whose values the request reads.
        service: The feature service, when the plan is one.
        full_feature_names: Response names are ``view__feature``.
    """

    reads: tuple[Read, ...]
    columns: tuple[Column, ...]
    odfvs: tuple[OdfvStep, ...]
    request_fields: Mapping[str, ValueType]
    pii_views: tuple[str, ...]
    service: str | None
    full_feature_names: bool

    @property
    def feature_names(self) -> list[str]:
        """Response names of the features, without the join keys."""
        return [c.name for c in self.columns] + [n for s in self.odfvs for _, n, _ in s.outputs]


def parse_refs(features: Sequence[str], catalog: Catalog) -> tuple[Ref, ...]:
    """``view:feature`` strings as refs.

    Raises:
        InvalidRequest: for a string that is not ``view:feature``.
    """
    refs = []
    for position, text in enumerate(features):
        view, sep, feature = text.partition(":")
        if "@" in view:
            view, _, version = view.partition("@")
            if version.lower() != "latest":
                raise InvalidRequest(
                    f"features[{position}] = {text!r}: versioned references are not served "
                    f"here; use '{view}:{feature}' (the current version)"
                )
        if not sep or not view or not feature:
            known = [f"{v}:{f}" for v, info in catalog.views.items() for f in info.features]
            hint = near(text, known)
            raise InvalidRequest(
                f"features[{position}] = {text!r} is not a 'view:feature' reference"
                + (f" (did you mean {', '.join(hint)}?)" if hint else "")
            )
        refs.append(Ref(view, view, feature))
    return tuple(refs)


def _unknown_feature(ref: Ref, known: Sequence[str]) -> UnknownName:
    hint = near(f"{ref.view}:{ref.feature}", [f"{ref.view}:{f}" for f in known])
    return UnknownName(
        f"unknown feature '{ref.view}:{ref.feature}'"
        + (f" (did you mean {', '.join(hint)}?)" if hint else "")
        + f"; features of {ref.view}: {', '.join(known)}"
    )


def _unknown_view(ref: Ref, catalog: Catalog) -> UnknownName:
    known = sorted([*catalog.views, *catalog.odfvs])
    refs = [f"{v}:{f}" for v, info in catalog.views.items() for f in info.features]
    refs += [f"{o}:{f}" for o, info in catalog.odfvs.items() for f in info.features]
    hint = near(f"{ref.view}:{ref.feature}", refs) or near(ref.view, known)
    return UnknownName(
        f"unknown feature view {ref.view!r} in '{ref.view}:{ref.feature}'"
        + (f" (did you mean {', '.join(hint)}?)" if hint else "")
        + f"; known views: {', '.join(known)}"
    )


def _check_collisions(refs: Sequence[Ref], full_feature_names: bool) -> None:
    names = [f"{r.prefix}__{r.feature}" if full_feature_names else r.feature for r in refs]
    clashes = sorted(name for name, count in Counter(names).items() if count > 1)
    if clashes:
        pairs = zip(refs, names, strict=True)
        dupes = [f"{r.prefix}:{r.feature}" for r, n in pairs if n in clashes]
        fix = "drop the duplicates" if full_feature_names else "set full_feature_names to true"
        raise InvalidRequest(
            f"features {dupes} would be returned under the same name ({', '.join(clashes)}); {fix}"
        )


class _Selection:
    """Views and on-demand views a request references, in order of first reference."""

    def __init__(self) -> None:
        self.fetched: dict[str, tuple[ViewInfo, list[str]]] = {}
        self.odfvs: dict[str, tuple[OdfvInfo, list[str]]] = {}
        self.wanted: set[tuple[str, str]] = set()

    def fetch(self, prefix: str, view: ViewInfo, feature: str) -> None:
        features = self.fetched.setdefault(prefix, (view, []))[1]
        if feature not in features:
            features.append(feature)

    def add(self, ref: Ref, catalog: Catalog) -> None:
        view = catalog.views.get(ref.view)
        if view is not None:
            if ref.feature not in view.features:
                raise _unknown_feature(ref, list(view.features))
            if view.problem:
                raise DefinitionError(view.problem)
            self.fetch(ref.prefix, view, ref.feature)
            self.wanted.add((ref.prefix, ref.feature))
            return
        odfv = catalog.odfvs.get(ref.view)
        if odfv is None:
            raise _unknown_view(ref, catalog)
        if ref.feature not in odfv.features:
            raise _unknown_feature(ref, list(odfv.features))
        if odfv.problem:
            raise DefinitionError(odfv.problem)
        features = self.odfvs.setdefault(ref.prefix, (odfv, []))[1]
        if ref.feature not in features:
            features.append(ref.feature)
        for source, source_features in odfv.sources:
            for feature in source_features:
                self.fetch(source, catalog.views[source], feature)


def _reads(
    selection: _Selection, catalog: Catalog, full_feature_names: bool
) -> tuple[list[Read], list[Column], dict[tuple[str, str], tuple[int, int]]]:
    ordered = [p for p, (v, _) in selection.fetched.items() if not v.tiled]
    ordered += [p for p, (v, _) in selection.fetched.items() if v.tiled]
    reads: list[Read] = []
    columns: list[Column] = []
    position: dict[tuple[str, str], tuple[int, int]] = {}
    for prefix in ordered:
        view, features = selection.fetched[prefix]
        aggs = view.aggregations
        reads.append(
            Read(
                view=view,
                prefix=prefix,
                features=tuple(features),
                rows=None
                if view.tiled
                else FeastRows(
                    catalog.project,
                    view.storage_name,
                    view.join_keys,
                    tuple(catalog.join_key_types.get(k, ValueType.UNKNOWN) for k in view.join_keys),
                    catalog.key_version,
                    tuple(features),
                ),
                aggs=tuple(aggs[f] for f in features) if view.tiled else (),
                ready=None if view.spec is None else ViewReady(view.spec),
            )
        )
        for index, feature in enumerate(features):
            position.setdefault((view.name, feature), (len(reads) - 1, index))
            if (prefix, feature) in selection.wanted:
                name = f"{prefix}__{feature}" if full_feature_names else feature
                columns.append(Column(len(reads) - 1, index, name))
    return reads, columns, position


def _odfv_step(
    prefix: str,
    odfv: OdfvInfo,
    features: Sequence[str],
    reads: Sequence[Read],
    position: Mapping[tuple[str, str], tuple[int, int]],
    full_feature_names: bool,
) -> OdfvStep:
    inputs = []
    for source, source_features in odfv.sources:
        for feature in source_features:
            read, index = position[(source, feature)]
            key = f"{reads[read].prefix}__{feature}" if full_feature_names else feature
            inputs.append((read, index, key))
    outputs = tuple(
        (f, f"{prefix}__{f}" if full_feature_names else f, odfv.features[f]) for f in features
    )
    return OdfvStep(odfv=odfv, outputs=outputs, inputs=tuple(inputs))


def compile_plan(
    catalog: Catalog,
    refs: Sequence[Ref],
    *,
    full_feature_names: bool,
    service: str | None = None,
) -> Plan:
    """Compile the plan of a request for ``refs``.

    Raises:
        UnknownName: for an unknown view or feature, with the closest known ones.
        InvalidRequest: when two features would get the same response name.
        DefinitionError: when a view read cannot be served by this server.
    """
    if not refs:
        raise InvalidRequest(
            "no features requested: give 'features' (a list of 'view:feature') or 'feature_service'"
        )
    selection = _Selection()
    for ref in refs:
        selection.add(ref, catalog)
    _check_collisions(refs, full_feature_names)
    reads, columns, position = _reads(selection, catalog, full_feature_names)
    steps = [
        _odfv_step(prefix, odfv, features, reads, position, full_feature_names)
        for prefix, (odfv, features) in selection.odfvs.items()
    ]
    request_fields: dict[str, ValueType] = {}
    for step in steps:
        request_fields.update(step.odfv.request_fields)
    pii = {r.view.name for r in reads if r.view.pii} | {s.odfv.name for s in steps if s.odfv.pii}
    return Plan(
        reads=tuple(reads),
        columns=tuple(columns),
        odfvs=tuple(steps),
        request_fields=request_fields,
        pii_views=tuple(sorted(pii)),
        service=service,
        full_feature_names=full_feature_names,
    )


def plan_for(
    catalog: Catalog,
    *,
    features: Sequence[str],
    feature_service: str | None,
    full_feature_names: bool,
) -> Plan:
    """The (cached) plan of a request, compiled on first use.

    Like Feast's server, a non-empty ``feature_service`` wins over ``features``.

    Raises:
        UnknownName, InvalidRequest, DefinitionError: see :func:`compile_plan`.
    """
    key: tuple[Any, ...]
    if feature_service:
        key = ("service", feature_service, full_feature_names)
    else:
        key = ("features", tuple(features), full_feature_names)
    cached = catalog.cached_plan(key)
    if cached is not None:
        return cast(Plan, cached)
    if feature_service:
        info = catalog.service(feature_service)
        if info.problem:
            raise DefinitionError(info.problem)
        plan = compile_plan(
            catalog, info.refs, full_feature_names=full_feature_names, service=info.name
        )
    else:
        plan = compile_plan(
            catalog, parse_refs(features, catalog), full_feature_names=full_feature_names
        )
    catalog.keep_plan(key, plan)
    return plan
