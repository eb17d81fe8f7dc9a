"""The example recommender's pure parts: inputs, fit, persistence, request parsing."""

from __future__ import annotations

import json
import random

import pytest

from serving.inference.app import parse_predict
from serving.inference.model import INPUTS, LogisticModel, vectorize
from serving.inference.train import auc


def test_vectorize_marks_missing_ratios_and_one_hot_segments() -> None:
    row = {"clicks_last_1h": 4, "price": 9.5, "ctr_1h": None, "segment": "vip"}
    x = vectorize(row)
    assert len(x) == len(INPUTS)
    named = dict(zip(INPUTS, x, strict=True))
    assert named["clicks_last_1h"] == 4 and named["price"] == 9.5
    assert named["ctr_1h"] == 0 and named["ctr_1h_missing"] == 1
    assert named["seconds_since_last_click_missing"] == 1
    assert named["segment=vip"] == 1 and named["segment=new"] == 0
    assert vectorize({"ctr_1h": float("nan")})[INPUTS.index("ctr_1h_missing")] == 1


def test_fit_learns_a_separable_signal_and_round_trips() -> None:
    rng = random.Random(1)
    rows, labels = [], []
    for _ in range(400):
        label = rng.random() < 0.5
        popularity = rng.random() * 0.1 + (0.2 if label else 0.0)
        rows.append(vectorize({"popularity": popularity, "segment": "new"}))
        labels.append(int(label))
    model = LogisticModel.fit(rows, labels)
    scores = [model.score(r) for r in rows]
    assert auc(scores, labels) == 1.0
    again = LogisticModel.from_json(model.to_json())
    assert [again.score(r) for r in rows] == scores
    stale = json.loads(model.to_json())
    stale["inputs"] = ["clicks"]
    with pytest.raises(ValueError, match="retrain"):
        LogisticModel.from_json(json.dumps(stale))


def test_auc_needs_both_classes() -> None:
    assert auc([0.1, 0.9], [0, 1]) == 1.0
    assert auc([0.5, 0.5], [0, 1]) == 0.5
    assert auc([0.1], [1]) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"item_id": 1}, "user_id must be an integer"),
        ({"user_id": 1, "item_id": "7"}, "item_id must be an integer"),
        ({"user_id": True, "item_id": 7}, "user_id must be an integer"),
        ({"user_id": 1, "item_id": 7, "item_price": "x"}, "item_price must be a number"),
        ({"user_id": 1, "item_id": 7, "request_time_ms": 1.5}, "request_time_ms"),
    ],
)
def test_predict_requests_are_checked(body: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_predict(body, 1000)
    assert parse_predict({"user_id": 1, "item_id": 2}, 1000) == {
        "user_id": 1,
        "item_id": 2,
        "item_price": None,
        "request_time_ms": 1000,
    }
