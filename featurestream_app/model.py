"""``featurestream train-model`` / ``serve-model``: the example recommender, end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from featurestream.errors import ConfigError
from featurestream.settings import Settings
from serving.inference import LogisticModel
from serving.inference.train import train_model, training_entities
from streams.definitions import compile_registry
from streams.offline.feast_store import log_root
from streams.offline.log import read_view_log

__all__ = ["default_model_path", "load_model", "train"]

CLICKS_VIEW = "user_click_stats"


def default_model_path(settings: Settings) -> Path:
    """Where ``train-model`` writes the model and ``serve-model`` reads it."""
    return settings.state_dir / "models" / "recommender_v1.json"


def _catalogue(store: Any) -> list[tuple[int, float]]:
    source = store.get_feature_view("item_features").batch_source
    path = Path(source.path)
    if not path.is_absolute():
        path = Path(store.repo_path) / path
    if not path.exists():
        raise ConfigError(f"no item catalogue at {path}; run featurestream seed-data")
    table = pq.read_table(path, columns=["item_id", "price"])
    return list(
        zip(table.column("item_id").to_pylist(), table.column("price").to_pylist(), strict=True)
    )


def train(store: Any, out: Path, *, max_clicks: int, seed: int = 0) -> LogisticModel:
    """Train on the newest ``max_clicks`` clicks of the offline log; write the model to ``out``."""
    spec = next((s for s in compile_registry(store) if s.name == CLICKS_VIEW), None)
    if spec is None:
        raise ConfigError(f"no stream view {CLICKS_VIEW!r} in the repository; run apply")
    clicks = [
        (key[0], item, t)
        for key, events in read_view_log(log_root(store.config), spec).items()
        for t, item in zip(events.times_ms, events.columns["item_id"], strict=True)
    ]
    clicks.sort(key=lambda c: c[2])
    model = train_model(
        store, training_entities(clicks[-max_clicks:], _catalogue(store), seed=seed)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(model.to_json())
    return model


def load_model(path: Path) -> LogisticModel:
    """The model at ``path``.

    Raises:
        ConfigError: when there is none or it does not fit the current inputs.
    """
    if not path.exists():
        raise ConfigError(f"no model at {path}; train one with featurestream train-model")
    try:
        return LogisticModel.from_json(path.read_text())
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"model {path} is unreadable: {exc}") from exc
