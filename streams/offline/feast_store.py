"""Feast offline store plugin: point-in-time training data for stream feature views.

Configure it in ``feature_store.yaml``::

    offline_store:
      type: streams.offline.feast_store.TiledFileOfflineStore
      log_path: data/offline_log

``FeatureStore.get_historical_features`` then returns, for every aggregating
``StreamFeatureView`` and every entity row ``(keys, event_timestamp = t)``, the
value a read at ``t`` returns by the window formula, computed from the offline
log with the same aggregators as the stream: events after ``t`` never count.
Every other view goes through Feast's file (Dask) offline store unchanged, and
on-demand views are applied on top of both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
from feast.infra.offline_stores.dask import DaskOfflineStore, DaskOfflineStoreConfig
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.infra.offline_stores.offline_utils import DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.stream_feature_view import StreamFeatureView

from featurestream.errors import ConfigError

from ..core import ViewSpec
from ..core.asof import TiledHistory, value_as_of
from ..definitions import compile_view
from .log import read_view_log

__all__ = ["TiledFileOfflineStore", "TiledFileOfflineStoreConfig", "historical_values"]

_TYPE = "streams.offline.feast_store.TiledFileOfflineStore"


class TiledFileOfflineStoreConfig(DaskOfflineStoreConfig):
    """Feast's file offline store config plus where the engine's offline log lives."""

    type: Literal["streams.offline.feast_store.TiledFileOfflineStore"] = _TYPE  # type: ignore[assignment]
    log_path: str = "data/offline_log"
    """Offline log root, relative to the repository (or absolute)."""


def log_root(config: Any) -> Path:
    """Absolute offline log root of a Feast ``RepoConfig``."""
    path = Path(getattr(config.offline_store, "log_path", "data/offline_log"))
    return path if path.is_absolute() else Path(config.repo_path) / path


def _is_tiled(view: Any) -> bool:
    return isinstance(view, StreamFeatureView) and bool(view.aggregations)


def _timestamps_ms(entity_df: pd.DataFrame, column: str) -> list[int]:
    if column not in entity_df.columns:
        raise ConfigError(
            f"entity dataframe has no {column!r} column; add the time of each row "
            f"(tz-aware UTC) as {column!r}"
        )
    series = entity_df[column]
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        raise ConfigError(
            f"entity dataframe column {column!r} has no timezone ({series.dtype}); "
            "use tz-aware timestamps, e.g. pd.to_datetime(..., utc=True)"
        )
    return [int(v) for v in series.dt.tz_convert("UTC").dt.as_unit("ms").astype("int64")]


def historical_values(
    root: Path,
    spec: ViewSpec,
    features: list[str],
    entity_df: pd.DataFrame,
    timestamp_column: str = DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL,
) -> dict[str, list[Any]]:
    """Point-in-time values of ``features`` of ``spec`` for every row of ``entity_df``."""
    missing = [k for k in spec.join_keys if k not in entity_df.columns]
    if missing:
        raise ConfigError(f"entity dataframe lacks join key(s) {missing} of view {spec.name!r}")
    times = _timestamps_ms(entity_df, timestamp_column)
    keys = list(zip(*(entity_df[k].tolist() for k in spec.join_keys), strict=True))
    events = read_view_log(root, spec, set(keys))
    aggs = {a.name: a for a in spec.aggregations}
    out: dict[str, list[Any]] = {f: [] for f in features}
    # Each entity's events are folded into tiles once per aggregation, and its rows are
    # read in time order: whole tiles merged like the online read, the read's own tile
    # folded incrementally.
    rows_of: dict[tuple[Any, ...], list[int]] = {}
    for row, key in enumerate(keys):
        rows_of.setdefault(key, []).append(row)
    for name in features:
        agg = aggs[name]
        column: list[Any] = [None] * len(keys)
        for key, rows in rows_of.items():
            entity = events.get(key)
            reads = [times[r] for r in rows]
            if entity is None:
                values = [value_as_of(agg, [], [], t) for t in reads]
            else:
                history = TiledHistory(agg, entity.times_ms, entity.columns[agg.column])
                values = history.values(reads)
            for r, v in zip(rows, values, strict=True):
                column[r] = v
        out[name] = column
    return out


class _Job(RetrievalJob):
    """Feast's job for the other views, plus the stream views' columns."""

    def __init__(
        self,
        base: RetrievalJob | None,
        entity_df: pd.DataFrame,
        tiled: list[tuple[ViewSpec, list[str]]],
        root: Path,
        full_feature_names: bool,
        odfvs: list[OnDemandFeatureView],
    ) -> None:
        self._base = base
        self._entity_df = entity_df
        self._tiled = tiled
        self._root = root
        self._full = full_feature_names
        self._odfvs = odfvs

    @property
    def full_feature_names(self) -> bool:
        return self._full

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return self._odfvs

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        if self._base is not None:
            left = self._entity_df.reset_index(drop=True)
            # Feast's file store sorts and reindexes rows, and drops the rows no batch
            # view has a value for: put its columns back onto every entity row.
            keys = list(left.columns)
            base = self._base._to_df_internal(timeout).drop_duplicates(keys)
            df = left.merge(base, on=keys, how="left")
        else:
            df = self._entity_df.reset_index(drop=True).copy()
            left = df
        for spec, features in self._tiled:
            values = historical_values(self._root, spec, features, left)
            frame = left[[*spec.join_keys, DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL]].copy()
            for name, column in values.items():
                frame[f"{spec.name}__{name}" if self._full else name] = column
            if self._base is not None:
                frame = frame.drop_duplicates(
                    [*spec.join_keys, DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL]
                )
                df = df.merge(
                    frame, on=[*spec.join_keys, DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL], how="left"
                )
            else:
                for column in frame.columns[len(spec.join_keys) + 1 :]:
                    df[column] = frame[column].to_numpy()
        return df

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        return pa.Table.from_pandas(self._to_df_internal(timeout), preserve_index=False)

    @property
    def metadata(self) -> Any:
        return None if self._base is None else self._base.metadata

    def persist(
        self, storage: Any, allow_overwrite: bool | None = False, timeout: int | None = None
    ) -> None:
        raise NotImplementedError("persist is not supported for stream feature views")


class TiledFileOfflineStore(DaskOfflineStore):
    """Feast's file offline store, with stream views computed from the offline log."""

    @staticmethod
    def get_historical_features(
        config: Any,
        feature_views: list[Any],
        feature_refs: list[str],
        entity_df: Any,
        registry: Any,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        if not isinstance(entity_df, pd.DataFrame):
            raise ConfigError("get_historical_features needs a pandas entity dataframe here")
        _timestamps_ms(entity_df, DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL)
        tiled_views = {v.name: v for v in feature_views if _is_tiled(v)}
        plain_views = [v for v in feature_views if not _is_tiled(v)]
        odfvs = [
            v
            for v in registry.list_on_demand_feature_views(project)
            if any(ref.split(":")[0] == v.name for ref in feature_refs)
        ]
        odfv_names = {v.name for v in odfvs}
        tiled: list[tuple[ViewSpec, list[str]]] = []
        plain_refs = []
        for ref in feature_refs:
            view, _, feature = ref.partition(":")
            if view in tiled_views:
                spec = compile_view(
                    project, tiled_views[view], [f.name for f in tiled_views[view].entity_columns]
                )
                for existing, names in tiled:
                    if existing.name == view:
                        names.append(feature)
                        break
                else:
                    tiled.append((spec, [feature]))
            elif view not in odfv_names:
                plain_refs.append(ref)
        base = None
        if plain_refs:
            base = DaskOfflineStore.get_historical_features(
                config,
                plain_views,
                plain_refs,
                entity_df,
                registry,
                project,
                full_feature_names,
                filter_by_created_timestamp,
                **kwargs,
            )
        return _Job(base, entity_df, tiled, log_root(config), full_feature_names, odfvs)
