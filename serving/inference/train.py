"""Training data for the recommender from the offline log, point in time correct.

Each click ``(user, item, t)`` gives a positive row and a row for a random other
item (negative) at ``t - 1 ms``: what was known just before the click. Features
come from ``get_historical_features`` over the whole ``recommender_v1`` service
(batch, stream and on-demand views), the same service the model is served with.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from featurestream.errors import ConfigError

from .model import FEATURE_SERVICE, LogisticModel, vectorize

__all__ = ["auc", "train_model", "training_entities"]


def training_entities(
    clicks: Sequence[tuple[int, int, int]], items: Sequence[tuple[int, float]], *, seed: int = 0
) -> pd.DataFrame:
    """The entity dataframe: one positive and one negative row per click.

    Args:
        clicks: ``(user_id, item_id, event_time_ms)`` of applied clicks.
        items: ``(item_id, price)`` of the catalogue (candidates for negatives).
        seed: Seed of the negative sampling.
    """
    if not clicks:
        raise ConfigError("no clicks in the offline log to train on; run the engine first")
    if len(items) < 2:
        raise ConfigError("the catalogue needs two items or more; run featurestream seed-data")
    rng = random.Random(seed)  # noqa: S311 - sampling, not security
    price = dict(items)
    ids = [i for i, _ in items]
    rows: list[dict[str, Any]] = []
    for user, item, t in clicks:
        other = item
        while other == item:
            other = rng.choice(ids)
        for candidate, label in ((item, 1), (other, 0)):
            rows.append(
                {
                    "user_id": user,
                    "item_id": candidate,
                    "event_timestamp": t - 1,
                    "request_time_ms": t - 1,
                    "item_price": price.get(candidate, 0.0),
                    "label": label,
                }
            )
    frame = pd.DataFrame(rows)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], unit="ms", utc=True)
    return frame


def auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """Area under the ROC curve (None without both classes)."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(labels)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if not n_pos or not n_neg:
        return None
    # Mann-Whitney U from average ranks (ties share their rank): O(n log n) memory-light.
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    sorted_s = s[order]
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def train_model(store: Any, entities: pd.DataFrame, *, holdout: float = 0.2) -> LogisticModel:
    """Fit the model on training data for ``entities``; the last ``holdout`` (by time) is
    kept out and reported as ``metrics``."""
    service = store.get_feature_service(FEATURE_SERVICE)
    frame = (
        store.get_historical_features(
            entity_df=entities.drop(columns=["label"]).assign(_row=range(len(entities))),
            features=service,
        )
        .to_df()
        .sort_values("_row")
    )
    records = frame.to_dict("records")
    labels = entities["label"].tolist()
    order = np.argsort(entities["event_timestamp"].to_numpy(), kind="stable")
    cut = int(len(order) * (1 - holdout))
    train_idx, test_idx = order[:cut], order[cut:]
    x = [vectorize(r) for r in records]
    model = LogisticModel.fit([x[i] for i in train_idx], [labels[i] for i in train_idx])
    model.metrics = {
        "rows": len(records),
        "train_rows": len(train_idx),
        "holdout_rows": len(test_idx),
        "holdout_auc": auc([model.score(x[i]) for i in test_idx], [labels[i] for i in test_idx]),
        "trained_until_ms": int(entities["event_timestamp"].max().value // 1_000_000),
    }
    return model
