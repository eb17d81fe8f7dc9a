"""Request validation, API keys and settings of the fast server (pure)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import pytest
from feast.value_type import ValueType

from featurestream.errors import (
    ConfigError,
    Forbidden,
    InvalidRequest,
    RequestTooLarge,
    Unauthenticated,
)
from serving.auth import KeyTable, authorize_plan, authorize_selection, bearer_token
from serving.plan import Plan
from serving.request import parse_request
from serving.settings import ServerSettings, parse_api_keys


def _parse(body: Any, max_entities: int = 10) -> Any:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return parse_request(raw, max_entities=max_entities)


def test_a_feast_request_parses() -> None:
    request = _parse(
        {
            "features": ["v:a", "v:b"],
            "entities": {"user_id": [1, 2], "request_time_ms": [5, 6]},
            "full_feature_names": True,
        }
    )
    assert request.features == ("v:a", "v:b")
    assert request.feature_service is None
    assert request.rows == 2
    assert request.full_feature_names is True
    assert list(request.entities) == ["user_id", "request_time_ms"]  # order kept
    assert (request.max_staleness_ms, request.include_freshness) == (None, False)


def test_the_extensions_parse() -> None:
    request = _parse(
        {
            "feature_service": "svc",
            "entities": {"user_id": [1]},
            "max_staleness_ms": 0,
            "include_freshness": True,
            "include_feature_view_version_metadata": True,
        }
    )
    assert (request.feature_service, request.max_staleness_ms) == ("svc", 0)
    assert request.include_freshness and request.include_version_metadata


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"features": ["v:a"], "entities": {"user_id": [1]', "the body is not valid JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        ({"feature": ["v:a"], "entities": {"u": [1]}}, "'feature' (did you mean 'features'?)"),
        ({"features": "v:a", "entities": {"u": [1]}}, "features must be a list"),
        ({"features": [1], "entities": {"u": [1]}}, "features must be a list"),
        ({"feature_service": 3, "entities": {"u": [1]}}, "feature_service must be a string"),
        ({"features": ["v:a"]}, "entities must be a non-empty object"),
        ({"features": ["v:a"], "entities": []}, "entities must be a non-empty object"),
        ({"features": ["v:a"], "entities": {"u": 1}}, "entities.u must be a list"),
        ({"features": ["v:a"], "entities": {"u": []}}, "entities.u is empty"),
        (
            {"features": ["v:a"], "entities": {"u": [1, 2], "i": [1]}},
            "same length (one value per row), got u: 2, i: 1",
        ),
        (
            {"features": ["v:a"], "entities": {"u": [1]}, "full_feature_names": "yes"},
            "true or false",
        ),
        ({"features": ["v:a"], "entities": {"u": [1]}, "max_staleness_ms": -1}, "integer >= 0"),
        ({"features": ["v:a"], "entities": {"u": [1]}, "max_staleness_ms": True}, "integer >= 0"),
        ({"features": ["v:a"], "entities": {"u": [1]}, "max_staleness_ms": 1.5}, "integer >= 0"),
    ],
)
def test_bad_bodies_say_which_field_and_why(body: Any, needle: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        _parse(body)
    assert needle in str(err.value)


def test_too_many_entities_is_too_large() -> None:
    with pytest.raises(RequestTooLarge, match="11 values; this server serves at most 10"):
        _parse({"features": ["v:a"], "entities": {"u": list(range(11))}})
    assert _parse({"features": ["v:a"], "entities": {"u": list(range(10))}}).rows == 10


# ---------------------------------------------------------------- auth
KEYS = parse_api_keys(
    orjson.dumps(
        {
            "key-recsys-01": ["svc"],
            "key-analyst-1": ["features"],
            "key-pii-00001": ["pii"],
            "key-admin-001": "*",
        }
    ).decode()
)


def _plan(service: str | None = None, pii: tuple[str, ...] = ()) -> Plan:
    return Plan(
        reads=(),
        columns=(),
        odfvs=(),
        request_fields={"x": ValueType.INT64},
        pii_views=pii,
        service=service,
        full_feature_names=False,
    )


def test_keys_are_checked_and_their_grants_returned() -> None:
    table = KeyTable(KEYS)
    assert table.enabled
    assert table.grants("key-recsys-01") == frozenset({"svc"})
    with pytest.raises(Unauthenticated, match="needs an API key"):
        table.grants(None)
    with pytest.raises(Unauthenticated, match="not valid"):
        table.grants("key-recsys-02")
    assert not KeyTable({}).enabled


@pytest.mark.parametrize(
    ("authorization", "api_key", "token"),
    [
        ("Bearer abc", None, "abc"),
        ("bearer   abc ", None, "abc"),
        ("Basic abc", None, None),
        (None, "xyz", "xyz"),
        ("Basic abc", "xyz", "xyz"),
        (None, None, None),
    ],
)
def test_bearer_token_or_api_key_header(
    authorization: str | None, api_key: str | None, token: str | None
) -> None:
    assert bearer_token(authorization, api_key) == token


def test_service_grants() -> None:
    authorize_selection(KEYS["key-recsys-01"], "svc")
    authorize_plan(KEYS["key-recsys-01"], _plan(service="svc", pii=("profile",)))
    with pytest.raises(Forbidden, match="not granted feature service 'other'"):
        authorize_selection(KEYS["key-recsys-01"], "other")
    with pytest.raises(Forbidden, match="may not read raw feature lists"):
        authorize_selection(KEYS["key-recsys-01"], None)
    authorize_selection(KEYS["key-admin-001"], "other")


def test_raw_lists_need_features_and_pii_needs_pii() -> None:
    authorize_selection(KEYS["key-analyst-1"], None)
    authorize_plan(KEYS["key-analyst-1"], _plan())
    with pytest.raises(Forbidden, match=r"features of profile \(tagged pii\) need an API key"):
        authorize_plan(KEYS["key-analyst-1"], _plan(pii=("profile",)))
    authorize_selection(KEYS["key-pii-00001"], None)  # pii implies features
    authorize_plan(KEYS["key-pii-00001"], _plan(pii=("profile",)))
    authorize_plan(KEYS["key-admin-001"], _plan(pii=("profile",)))
    with pytest.raises(Forbidden):
        authorize_selection(KEYS["key-analyst-1"], "svc")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"short": "*"}', "key #1 is shorter than 8 characters"),
        ('{"long-enough-key": []}', "non-empty list"),
        ('{"long-enough-key": "svc"}', 'must be "*" or a non-empty list'),
    ],
)
def test_api_key_files_are_checked_without_echoing_keys(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_api_keys(text)
    assert needle in str(err.value)
    assert "long-enough-key" not in str(err.value)


def test_settings_are_checked_and_keys_kept_out_of_repr() -> None:
    settings = ServerSettings(api_keys=KEYS)
    assert settings.auth_enabled
    assert "key-admin-001" not in repr(settings)
    for bad in ({"max_entities": 0}, {"redis_timeout_ms": -1}, {"registry_refresh_s": 0}):
        with pytest.raises(ConfigError):
            replace(settings, **bad)
    with pytest.raises(ConfigError, match="redis_client"):
        ServerSettings(redis_client="sync")  # type: ignore[arg-type]
