"""``featurestream features``: every view and feature, with where it comes from and how fresh."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from featurestream.errors import ConfigError, OnlineStoreUnavailable
from streams.definitions import compile_view
from streams.online import OnlineStore

__all__ = ["describe_features", "select_rows"]


def _window(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def describe_features(store: Any, tiles: OnlineStore | None) -> list[dict[str, Any]]:
    """One row per feature of every stream, batch and on-demand view of ``store``."""
    project = store.project
    try:
        written = tiles.freshness(project) if tiles is not None else {}
    except OnlineStoreUnavailable:
        written = {}
    rows: list[dict[str, Any]] = []
    for view in sorted(store.list_stream_feature_views(), key=lambda v: v.name):
        join_keys = [f.name for f in view.entity_columns]
        spec = compile_view(project, view, join_keys) if view.aggregations else None
        aggs = {a.name: a for a in spec.aggregations} if spec else {}
        for field in (f for f in view.features if f.name not in join_keys):
            agg = aggs.get(field.name)
            rows.append(
                {
                    "view": view.name,
                    "kind": "stream",
                    "feature": field.name,
                    "type": str(field.dtype),
                    "aggregation": agg.function if agg else "",
                    "window": _window(agg.window_ms) if agg else "",
                    "entity": ",".join(join_keys),
                    "source": f"kafka:{spec.topic}" if spec else view.source.name,
                    "owner": view.owner,
                    "tags": dict(view.tags),
                    "description": field.description or view.description,
                    "freshness": _when(written.get(view.name)),
                }
            )
    for view in sorted(store.list_feature_views(), key=lambda v: v.name):
        ends = [end for _, end in view.materialization_intervals]
        last = int(max(ends).timestamp() * 1000) if ends else None
        for field in view.features:
            rows.append(
                {
                    "view": view.name,
                    "kind": "batch",
                    "feature": field.name,
                    "type": str(field.dtype),
                    "aggregation": "",
                    "window": "",
                    "entity": ",".join(f.name for f in view.entity_columns),
                    "source": getattr(view.batch_source, "path", view.batch_source.name),
                    "owner": view.owner,
                    "tags": dict(view.tags),
                    "description": field.description or view.description,
                    "freshness": _when(last),
                }
            )
    for odfv in sorted(store.list_on_demand_feature_views(), key=lambda v: v.name):
        for field in odfv.features:
            rows.append(
                {
                    "view": odfv.name,
                    "kind": "on_demand",
                    "feature": field.name,
                    "type": str(field.dtype),
                    "aggregation": "",
                    "window": "",
                    "entity": "",
                    "source": ",".join(
                        sorted(odfv.source_feature_view_projections)
                        + sorted(odfv.source_request_sources)
                    ),
                    "owner": odfv.owner,
                    "tags": dict(odfv.tags),
                    "description": odfv.description,
                    "freshness": "at request",
                }
            )
    return rows


def select_rows(rows: list[dict[str, Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of the views or features (``view:feature``) named; all when none is.

    Raises:
        ConfigError: naming every unknown name with the closest known ones.
    """
    if not names:
        return rows
    views = {r["view"] for r in rows}
    refs = {f"{r['view']}:{r['feature']}" for r in rows}
    unknown = [n for n in names if n not in views and n not in refs]
    if unknown:
        hints = {
            n: difflib.get_close_matches(n, sorted(refs if ":" in n else views), n=3, cutoff=0.5)
            for n in unknown
        }
        detail = "; ".join(
            f"{n!r}" + (f" (did you mean {', '.join(h)}?)" if h else "") for n, h in hints.items()
        )
        kind = "feature" if all(":" in n for n in unknown) else "view or feature"
        raise ConfigError(
            f"unknown {kind} {detail}; list them with featurestream features "
            f"(known views: {', '.join(sorted(views))})"
        )
    wanted = set(names)
    return [r for r in rows if r["view"] in wanted or f"{r['view']}:{r['feature']}" in wanted]
