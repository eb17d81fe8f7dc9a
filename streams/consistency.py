"""Online/offline consistency, measured: the same reads from Redis and from the log.

For sampled entities of every stream view, features are read online through
Feast's ``get_online_features`` at recorded read times ``T`` (the online store's
clock is pinned to ``T`` for the read), then offline through
``get_historical_features`` with the entity dataframe ``(entity, T)``. Both paths
run the same aggregators over the same events, so every value must be equal:
any difference is reported per feature, with examples.

The offline side is read once the offline log holds every event the online
read saw (the log is flushed a few seconds behind the tiles). Events that reach
the engine after an online read but carry an earlier event time (within the
allowed lateness, or behind because the engine lags) count offline and not in
that online read: against a live stream they show up as mismatches, which is
the skew a model trained on the log would see; on a quiet stream there is none.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from featurestream.clock import Clock, wall_clock_ms
from featurestream.errors import ConfigError

from .core import ViewSpec, entity_id
from .offline.feast_store import log_root
from .offline.log import read_view_log
from .online import OnlineStore

__all__ = ["ConsistencyReport", "FeatureResult", "check_consistency", "same_value"]

_SCAN_LIMIT = 100_000


@dataclass
class FeatureResult:
    """Comparisons of one feature."""

    compared: int = 0
    mismatches: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ConsistencyReport:
    """The outcome of one check."""

    read_times_ms: list[int]
    entities: dict[str, int]
    features: dict[str, FeatureResult]
    log_caught_up: bool = True

    @property
    def mismatches(self) -> int:
        """Mismatches over every feature."""
        return sum(r.mismatches for r in self.features.values())

    @property
    def compared(self) -> int:
        """Values compared over every feature."""
        return sum(r.compared for r in self.features.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "read_times_ms": self.read_times_ms,
            "entities": self.entities,
            "compared": self.compared,
            "mismatches": self.mismatches,
            "log_caught_up": self.log_caught_up,
            "features": {
                name: {"compared": r.compared, "mismatches": r.mismatches, "examples": r.examples}
                for name, r in self.features.items()
            },
        }


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def same_value(online: Any, offline: Any) -> bool:
    """Whether two reads agree: equal values, or both missing (None or NaN)."""
    if _missing(online) or _missing(offline):
        return _missing(online) and _missing(offline)
    return bool(online == offline)


def _entity_values(view: ViewSpec, entity: str) -> tuple[Any, ...]:
    """Join key values from an entity's text (:func:`~streams.core.entity_id`)."""
    values = json.loads(entity) if len(view.join_keys) > 1 else [entity]
    types = dict(view.field_types)
    out = []
    for key, value in zip(view.join_keys, values, strict=True):
        kind = types.get(key)
        out.append(int(value) if kind in ("long", "int") else value)
    return tuple(out)


def sample_entities(
    online: OnlineStore, view: ViewSpec, count: int, rng: random.Random
) -> list[tuple[Any, ...]]:
    """Up to ``count`` entities that have tiles online, chosen by ``rng``."""
    keys = sorted(online.entities(view, _SCAN_LIMIT))
    chosen = rng.sample(keys, min(count, len(keys)))
    return [_entity_values(view, e) for e in sorted(chosen)]


def _online_store(store: Any) -> Any:
    online = store._get_provider().online_store
    if not hasattr(online, "clock"):
        raise ConfigError(
            f"the online store {type(online).__name__} is not featurestream's tiled store; "
            "set online_store.type to streams.online.feast_store.TiledRedisOnlineStore"
        )
    return online


def check_consistency(
    store: Any,
    views: Sequence[ViewSpec],
    online: OnlineStore,
    *,
    entities: int = 100,
    rounds: int = 3,
    interval_s: float = 1.0,
    seed: int = 0,
    wait_s: float = 30.0,
    max_examples: int = 5,
    clock: Clock = wall_clock_ms,
) -> ConsistencyReport:
    """Compare online and offline reads of ``views`` for sampled entities and times.

    Args:
        store: The ``feast.FeatureStore``.
        views: The stream views to check (compiled from the same store).
        online: The online store (to sample entities and read their newest event time).
        entities: Entities sampled per view.
        rounds: Read times per entity; a read time is "now" at each round.
        interval_s: Pause between rounds (windows slide meanwhile).
        seed: Sampling seed.
        wait_s: How long to wait for the offline log to hold what online reads saw.
        max_examples: Mismatching values kept per feature.
        clock: Wall clock in epoch ms.

    Raises:
        ConfigError: when no view has an entity online.
    """
    rng = random.Random(seed)  # noqa: S311 - sampling, not security
    sampled = {v.name: sample_entities(online, v, entities, rng) for v in views}
    views = [v for v in views if sampled[v.name]]
    if not views:
        raise ConfigError(
            "no entity of the views has tiles online; run featurestream run and produce events"
        )
    online_store = _online_store(store)
    online_rows: list[dict[str, Any]] = []  # per (view, entity, T): the online values
    newest: dict[tuple[str, tuple[Any, ...]], int] = {}
    read_times: list[int] = []
    for round_no in range(rounds):
        if round_no:
            time.sleep(interval_s)
        read_ms = clock()
        read_times.append(read_ms)
        online_store.clock = lambda t=read_ms: t
        try:
            for view in views:
                keys = sampled[view.name]
                refs = [f"{view.name}:{a.name}" for a in view.aggregations]
                rows = [dict(zip(view.join_keys, k, strict=True)) for k in keys]
                values = store.get_online_features(
                    features=refs, entity_rows=rows, full_feature_names=True
                ).to_dict()
                (last,) = online.read([(view, [entity_id(list(k)) for k in keys])], read_ms)
                for i, key in enumerate(keys):
                    online_rows.append(
                        {
                            "view": view,
                            "key": key,
                            "t": read_ms,
                            "values": {
                                a.name: values[f"{view.name}__{a.name}"][i]
                                for a in view.aggregations
                            },
                        }
                    )
                    last_ms = last[i][1]
                    if last_ms is not None:
                        newest[(view.name, key)] = last_ms
        finally:
            del online_store.clock  # back to the class's wall clock
    caught_up = _wait_for_log(store, views, newest, wait_s)
    features: dict[str, FeatureResult] = {
        f"{v.name}:{a.name}": FeatureResult() for v in views for a in v.aggregations
    }
    for view in views:
        mine = [r for r in online_rows if r["view"] is view]
        frame = pd.DataFrame(
            {
                **{k: [r["key"][i] for r in mine] for i, k in enumerate(view.join_keys)},
                "event_timestamp": pd.to_datetime([r["t"] for r in mine], unit="ms", utc=True),
                "_row": range(len(mine)),
            }
        )
        refs = [f"{view.name}:{a.name}" for a in view.aggregations]
        offline = (
            store.get_historical_features(entity_df=frame, features=refs, full_feature_names=True)
            .to_df()
            .sort_values("_row")
        )
        for agg in view.aggregations:
            result = features[f"{view.name}:{agg.name}"]
            column = offline[f"{view.name}__{agg.name}"].tolist()
            for row, off in zip(mine, column, strict=True):
                on = row["values"][agg.name]
                result.compared += 1
                if not same_value(on, off):
                    result.mismatches += 1
                    if len(result.examples) < max_examples:
                        result.examples.append(
                            {
                                "entity": dict(zip(view.join_keys, row["key"], strict=True)),
                                "read_time_ms": row["t"],
                                "online": on,
                                "offline": None if _missing(off) else off,
                            }
                        )
    return ConsistencyReport(
        read_times, {v.name: len(sampled[v.name]) for v in views}, features, caught_up
    )


def _wait_for_log(
    store: Any,
    views: Sequence[ViewSpec],
    newest: dict[tuple[str, tuple[Any, ...]], int],
    wait_s: float,
) -> bool:
    """Wait until the offline log holds, per entity, the newest event online reads saw;
    False when it still does not after ``wait_s``."""
    root: Path = log_root(store.config)
    deadline = time.monotonic() + wait_s
    while True:
        behind = 0
        for view in views:
            wanted = {key: ms for (name, key), ms in newest.items() if name == view.name}
            logged = read_view_log(root, view, wanted)
            behind += sum(
                1
                for key, ms in wanted.items()
                if key not in logged or logged[key].times_ms[-1] < ms
            )
        if not behind:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
