"""``featurestream serve-model``: ``POST /predict`` scores a candidate item for a user.

The request names the user and the item (and optionally the item price and the
request time); the service reads ``recommender_v1`` online through Feast's API
(exact stream windows, batch and on-demand features), turns them into model inputs
with the same :func:`~serving.inference.model.vectorize` used in training and
answers with the score and the features used.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from featurestream.clock import Clock, wall_clock_ms

from .model import FEATURE_SERVICE, LogisticModel, vectorize

__all__ = ["build_model_app", "parse_predict"]


class _BadRequest(ValueError):
    pass


def parse_predict(body: Any, now_ms: int) -> dict[str, Any]:
    """The entity row of a ``/predict`` body.

    Raises:
        ValueError: naming the field that is missing or of the wrong type.
    """
    if not isinstance(body, dict):
        raise _BadRequest("body must be a JSON object with user_id and item_id")
    row: dict[str, Any] = {}
    for name in ("user_id", "item_id"):
        value = body.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise _BadRequest(f"{name} must be an integer, got {value!r}")
        row[name] = value
    price = body.get("item_price")
    if price is not None and (not isinstance(price, int | float) or isinstance(price, bool)):
        raise _BadRequest(f"item_price must be a number, got {price!r}")
    row["item_price"] = None if price is None else float(price)
    at = body.get("request_time_ms", now_ms)
    if not isinstance(at, int) or isinstance(at, bool):
        raise _BadRequest(f"request_time_ms must be epoch milliseconds, got {at!r}")
    row["request_time_ms"] = at
    return row


def build_model_app(store: Any, model: LogisticModel, clock: Clock = wall_clock_ms) -> Starlette:
    """The app (no I/O until a request arrives); ``clock`` gives a request's time when it
    names none."""
    service = store.get_feature_service(FEATURE_SERVICE)

    def read(row: dict[str, Any]) -> dict[str, list[Any]]:
        result: dict[str, list[Any]] = store.get_online_features(
            features=service, entity_rows=[row]
        ).to_dict()
        return result

    async def predict(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            row = parse_predict(body, clock())
        except ValueError as exc:  # malformed JSON is a ValueError too
            return JSONResponse({"error": str(exc)}, status_code=422)
        online = await run_in_threadpool(read, row)  # Feast's SDK blocks
        features = {k: v[0] for k, v in online.items() if k not in ("user_id", "item_id")}
        return JSONResponse(
            {
                "user_id": row["user_id"],
                "item_id": row["item_id"],
                "score": model.score(vectorize(features)),
                "features": features,
                "model": {"service": FEATURE_SERVICE, **model.metrics},
            }
        )

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health)]
    )
