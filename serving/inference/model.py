"""The recommender model: logistic regression over ``recommender_v1`` features (pure).

:func:`vectorize` is the only place feature values become model inputs, for
training rows (from ``get_historical_features``) and for requests (from
``get_online_features``) alike: the same rules for missing values, the same
one-hot categories, so a model sees at serving time exactly what it was trained on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["FEATURE_SERVICE", "INPUTS", "LogisticModel", "vectorize"]

FEATURE_SERVICE = "recommender_v1"
_NUMERIC = (
    "clicks_last_5min",
    "clicks_last_1h",
    "distinct_items_1h",
    "price",
    "popularity",
    "ctr_1h",
    "seconds_since_last_click",
)
_SEGMENTS = ("new", "casual", "loyal", "vip")
INPUTS: tuple[str, ...] = (
    *_NUMERIC,
    *(f"{n}_missing" for n in ("ctr_1h", "seconds_since_last_click")),
    *(f"segment={s}" for s in _SEGMENTS),
)


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def vectorize(row: Mapping[str, Any]) -> list[float]:
    """Model inputs from one row of ``recommender_v1`` feature values (missing -> 0 plus
    an indicator for the ratios; unknown segment -> all zeros)."""
    values = [_number(row.get(name)) for name in _NUMERIC]
    out = [0.0 if v is None else v for v in values]
    out += [float(_number(row.get(n)) is None) for n in ("ctr_1h", "seconds_since_last_click")]
    segment = row.get("segment")
    out += [float(segment == s) for s in _SEGMENTS]
    return out


@dataclass
class LogisticModel:
    """Standardized inputs, weights and bias; trained by :meth:`fit`."""

    inputs: tuple[str, ...] = INPUTS
    means: list[float] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    bias: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls, rows: Sequence[Sequence[float]], labels: Sequence[int], *, epochs: int = 400
    ) -> LogisticModel:
        """Full-batch gradient descent on the log loss (L2 0.01)."""
        x = np.asarray(rows, dtype=float)
        y = np.asarray(labels, dtype=float)
        means = x.mean(axis=0)
        scales = x.std(axis=0)
        scales[scales == 0] = 1.0
        z = (x - means) / scales
        w = np.zeros(z.shape[1])
        b = 0.0
        for _ in range(epochs):
            p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
            grad = p - y
            w -= 0.5 * (z.T @ grad / len(y) + 0.01 * w)
            b -= 0.5 * float(grad.mean())
        return cls(INPUTS, means.tolist(), scales.tolist(), w.tolist(), b)

    def score(self, inputs: Sequence[float]) -> float:
        """Probability of a click on the candidate item."""
        z = sum(
            w * (v - m) / s
            for w, v, m, s in zip(self.weights, inputs, self.means, self.scales, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-(z + self.bias)))

    def to_json(self) -> str:
        """The model as JSON."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LogisticModel:
        """A model saved by :meth:`to_json`.

        Raises:
            ValueError: when it was trained on other inputs than :data:`INPUTS`.
        """
        raw = json.loads(text)
        model = cls(**{**raw, "inputs": tuple(raw["inputs"])})
        if model.inputs != INPUTS:
            raise ValueError(f"model inputs {model.inputs} differ from {INPUTS}; retrain it")
        return model
