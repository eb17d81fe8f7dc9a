"""The body of ``POST /get-online-features``, parsed and checked (pure).

The fields are Feast's (``features``, ``feature_service``, ``entities``,
``full_feature_names``, ``include_feature_view_version_metadata``) plus two of this
server's: ``max_staleness_ms`` and ``include_freshness``. Type checks of entity
values against the registry happen when the request is bound to its plan
(:mod:`serving.lookup`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from featurestream.errors import InvalidRequest, RequestTooLarge

from .catalog import near

__all__ = ["LookupRequest", "parse_request"]

_FIELDS = (
    "features",
    "feature_service",
    "entities",
    "full_feature_names",
    "include_feature_view_version_metadata",
    "max_staleness_ms",
    "include_freshness",
)


@dataclass(frozen=True)
class LookupRequest:
    """A checked lookup request.

    Attributes:
        features: ``view:feature`` references (ignored when ``feature_service`` is set).
        feature_service: A feature service name, or None.
        entities: Join key or request field -> one value per row, in the order given.
        rows: Number of rows (every list has this length).
        full_feature_names: Name features ``view__feature``.
        include_version_metadata: Add ``metadata.feature_view_metadata`` (as Feast).
        max_staleness_ms: Stream values whose newest event is older are returned as
            ``OUTSIDE_MAX_AGE`` with a null value (None: no limit).
        include_freshness: Add ``metadata.freshness``.
    """

    features: tuple[str, ...]
    feature_service: str | None
    entities: dict[str, list[Any]]
    rows: int
    full_feature_names: bool = False
    include_version_metadata: bool = False
    max_staleness_ms: int | None = None
    include_freshness: bool = False


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false, got {orjson.dumps(value).decode()}")
    return value


def parse_request(body: bytes, *, max_entities: int) -> LookupRequest:
    """Parse and check a request body.

    Raises:
        InvalidRequest: naming the field that is wrong and why.
        RequestTooLarge: when a list holds more than ``max_entities`` rows.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"the body must be a JSON object with 'entities' and 'features' or "
            f"'feature_service', got a JSON {type(data).__name__}"
        )
    unknown = [k for k in data if k not in _FIELDS]
    if unknown:
        hints = {k: near(k, _FIELDS, n=1) for k in unknown}
        detail = ", ".join(
            f"{k!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for k, h in hints.items()
        )
        raise InvalidRequest(f"unknown field(s) {detail}; known fields: {', '.join(_FIELDS)}")

    features = data.get("features") or []
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise InvalidRequest("features must be a list of 'view:feature' strings")
    service = data.get("feature_service")
    if service is not None and not isinstance(service, str):
        raise InvalidRequest("feature_service must be a string (the feature service name)")

    entities = data.get("entities")
    if not isinstance(entities, dict) or not entities:
        raise InvalidRequest(
            "entities must be a non-empty object of join key -> list of values, "
            'e.g. {"user_id": [1, 2]}'
        )
    lengths: dict[str, int] = {}
    for key, values in entities.items():
        if not isinstance(values, list):
            raise InvalidRequest(
                f"entities.{key} must be a list of values (one per row), "
                f"got {orjson.dumps(values).decode()[:80]}"
            )
        if len(values) > max_entities:
            raise RequestTooLarge(
                f"entities.{key} has {len(values)} values; this server serves at most "
                f"{max_entities} entities per request: split the request"
            )
        if not values:
            raise InvalidRequest(f"entities.{key} is empty; give at least one value")
        lengths[key] = len(values)
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        raise InvalidRequest(
            f"entities lists must have the same length (one value per row), got {detail}"
        )

    staleness = data.get("max_staleness_ms")
    if staleness is not None and (
        type(staleness) is not int or staleness < 0  # bool is not a staleness
    ):
        raise InvalidRequest(
            f"max_staleness_ms must be an integer >= 0 (milliseconds), got "
            f"{orjson.dumps(staleness).decode()}"
        )
    return LookupRequest(
        features=tuple(features),
        feature_service=service or None,
        entities=entities,
        rows=next(iter(lengths.values())),
        full_feature_names=_flag(data, "full_feature_names"),
        include_version_metadata=_flag(data, "include_feature_view_version_metadata"),
        max_staleness_ms=staleness,
        include_freshness=_flag(data, "include_freshness"),
    )
