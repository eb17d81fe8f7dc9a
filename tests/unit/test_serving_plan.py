"""Lookup plans, request binding and answer assembly of the fast server (pure, no Redis).

The Feast objects are built here (no registry); answers are what the online-store
port answers (tiles as the engine's updates leave them in the in-memory store, rows
as Feast stores them).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    KafkaSource,
    RequestSource,
    ValueType,
)
from feast.aggregation import Aggregation
from feast.data_format import AvroFormat, ParquetFormat
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.on_demand_feature_view import on_demand_feature_view
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.stream_feature_view import StreamFeatureView
from feast.types import Float64, Int64, String
from google.protobuf.timestamp_pb2 import Timestamp

from featurestream.clock import fixed_clock
from featurestream.errors import DefinitionError, InvalidRequest, TransformFailed, UnknownName
from featurestream.events import contract_for_topic
from serving.catalog import Catalog, RegistrySnapshot, python_transform
from serving.lookup import assemble, bind
from serving.plan import plan_for
from serving.request import LookupRequest
from streams.core import EntityTiles, StoredTiles, TileUpdate, entity_id
from streams.online import FeastRow, FeastRowRead, TilesRead, ViewReady
from streams.online.memory import MemoryOnlineStore
from streams.online.redis.feast_layout import commands_for
from streams.online.redis.layout import tile_key

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")

PROJECT = "demo"
USER = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
ITEM = Entity(name="item", join_keys=["item_id"], value_type=ValueType.INT64)

CLICKS = StreamFeatureView(
    name="clicks",
    entities=[USER],
    source=KafkaSource(
        name="clicks",
        topic="clicks",
        timestamp_field="event_time",
        message_format=AvroFormat(schema_json=json.dumps(contract_for_topic("clicks").schema_json)),
        watermark_delay_threshold=timedelta(seconds=30),
        batch_source=FileSource(
            name="clicks_log", path="x", file_format=ParquetFormat(), timestamp_field="event_time"
        ),
    ),
    timestamp_field="event_time",
    ttl=timedelta(hours=1),
    schema=[
        Field(name="user_id", dtype=Int64),
        Field(name="clicks_5m", dtype=Int64),
        Field(name="clicks_1h", dtype=Int64),
        Field(name="last_click_ms", dtype=Float64),
    ],
    aggregations=[
        Aggregation(
            column="event_id", function="count", time_window=timedelta(minutes=5), name="clicks_5m"
        ),
        Aggregation(
            column="event_id", function="count", time_window=timedelta(hours=1), name="clicks_1h"
        ),
        Aggregation(
            column="event_time",
            function="last",
            time_window=timedelta(hours=1),
            name="last_click_ms",
        ),
    ],
    online=True,
    owner="team@x",
    tags={"team": "recsys"},
)

PROFILE = FeatureView(
    name="profile",
    entities=[USER],
    ttl=timedelta(days=1),
    schema=[Field(name="country", dtype=String), Field(name="age", dtype=Int64)],
    source=FileSource(name="profile_src", path="p.parquet", timestamp_field="ts"),
    tags={"pii": "true"},
)
ITEMS = FeatureView(
    name="items",
    entities=[ITEM],
    schema=[Field(name="price", dtype=Float64), Field(name="category", dtype=String)],
    source=FileSource(name="items_src", path="i.parquet", timestamp_field="ts"),
)
REQUEST = RequestSource(
    name="req",
    schema=[Field(name="now_ms", dtype=Int64), Field(name="offer", dtype=Float64)],
)


@on_demand_feature_view(
    sources=[CLICKS, REQUEST],
    schema=[Field(name="since_last_s", dtype=Float64)],
    mode="python",
)
def since_last(inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "since_last_s": [
            None if last is None else (now - last) / 1000.0
            for last, now in zip(inputs["last_click_ms"], inputs["now_ms"], strict=True)
        ]
    }


@on_demand_feature_view(
    sources=[CLICKS], schema=[Field(name="double_5m", dtype=Float64)], mode="pandas"
)
def pandas_view(inputs: pd.DataFrame) -> pd.DataFrame:
    return inputs


SERVICE = FeatureService(
    name="svc",
    features=[CLICKS[["clicks_1h", "clicks_5m"]], PROFILE[["country"]], ITEMS, since_last],
    tags={"pii": "true"},
)


def _catalog(**changes: Any) -> Catalog:
    fields: dict[str, Any] = {
        "project": PROJECT,
        "entity_key_serialization_version": 3,
        "versioned_online_reads": False,
        "entities": (USER, ITEM),
        "feature_views": (PROFILE, ITEMS, CLICKS),
        "on_demand_feature_views": (since_last, pandas_view),
        "feature_services": (SERVICE,),
        "fingerprint": "v1",
    }
    fields.update(changes)
    return Catalog(RegistrySnapshot(**fields))


@pytest.fixture()
def catalog() -> Catalog:
    return _catalog()


def _request(entities: dict[str, list[Any]], **kw: Any) -> LookupRequest:
    rows = len(next(iter(entities.values())))
    return LookupRequest(
        features=tuple(kw.pop("features", ())),
        feature_service=kw.pop("feature_service", None),
        entities=entities,
        rows=rows,
        **kw,
    )


def _plan(catalog: Catalog, request: LookupRequest) -> Any:
    return plan_for(
        catalog,
        features=request.features,
        feature_service=request.feature_service,
        full_feature_names=request.full_feature_names,
    )


# ---------------------------------------------------------------- plans
def test_service_plan_reads_batch_views_first_and_returns_request_order(catalog: Catalog) -> None:
    plan = plan_for(catalog, features=(), feature_service="svc", full_feature_names=False)
    assert [r.view.name for r in plan.reads] == ["profile", "items", "clicks"]
    # clicks is read for the service and as the input of since_last (last_click_ms)
    assert plan.reads[2].features == ("clicks_1h", "clicks_5m", "last_click_ms")
    assert plan.feature_names == [
        "country",
        "price",
        "category",
        "clicks_1h",
        "clicks_5m",
        "since_last_s",
    ]
    assert dict(plan.request_fields) == {"now_ms": ValueType.INT64, "offer": ValueType.DOUBLE}
    assert plan.pii_views == ("profile",)
    assert plan.service == "svc"


def test_full_feature_names_prefix_every_feature(catalog: Catalog) -> None:
    plan = plan_for(catalog, features=(), feature_service="svc", full_feature_names=True)
    assert plan.feature_names == [
        "profile__country",
        "items__price",
        "items__category",
        "clicks__clicks_1h",
        "clicks__clicks_5m",
        "since_last__since_last_s",
    ]
    step = plan.odfvs[0]
    assert {name for _, _, name in step.inputs} == {
        "clicks__clicks_5m",
        "clicks__clicks_1h",
        "clicks__last_click_ms",
    }


def test_plans_are_compiled_once_per_catalog(catalog: Catalog) -> None:
    one = plan_for(
        catalog, features=("clicks:clicks_5m",), feature_service=None, full_feature_names=False
    )
    two = plan_for(
        catalog, features=("clicks:clicks_5m",), feature_service=None, full_feature_names=False
    )
    other = plan_for(
        _catalog(), features=("clicks:clicks_5m",), feature_service=None, full_feature_names=False
    )
    assert one is two
    assert other is not one


def test_plan_cache_is_bounded() -> None:
    catalog = Catalog(_catalog().snapshot, max_plans=2)
    refs = ["clicks:clicks_5m", "clicks:clicks_1h", "profile:age"]
    first = plan_for(catalog, features=(refs[0],), feature_service=None, full_feature_names=False)
    for ref in refs[1:]:
        plan_for(catalog, features=(ref,), feature_service=None, full_feature_names=False)
    again = plan_for(catalog, features=(refs[0],), feature_service=None, full_feature_names=False)
    assert again is not first  # evicted, recompiled


@pytest.mark.parametrize(
    ("features", "needle"),
    [
        (
            ["clicks:clicks_5min"],
            "unknown feature 'clicks:clicks_5min' (did you mean clicks:clicks_5m",
        ),
        (
            ["click:clicks_5m"],
            "unknown feature view 'click' in 'click:clicks_5m' (did you mean clicks:clicks_5m",
        ),
        (["since_last:since_last"], "did you mean since_last:since_last_s"),
        (["nothing_like_it:zzz"], "known views: clicks, items, pandas_view, profile, since_last"),
    ],
)
def test_unknown_names_list_near_matches(
    catalog: Catalog, features: list[str], needle: str
) -> None:
    with pytest.raises(UnknownName) as err:
        plan_for(catalog, features=features, feature_service=None, full_feature_names=False)
    assert needle in str(err.value)


def test_unknown_service_lists_near_matches(catalog: Catalog) -> None:
    with pytest.raises(
        UnknownName, match=r"unknown feature service 'svc2' \(did you mean svc\?\); known: svc"
    ):
        plan_for(catalog, features=(), feature_service="svc2", full_feature_names=False)


@pytest.mark.parametrize(
    ("features", "error", "needle"),
    [
        (
            ["clicks_5m"],
            InvalidRequest,
            "features[0] = 'clicks_5m' is not a 'view:feature' reference",
        ),
        (["clicks@v2:clicks_5m"], InvalidRequest, "versioned references are not served"),
        ([], InvalidRequest, "no features requested"),
        (
            ["clicks:clicks_5m", "clicks:clicks_5m"],
            InvalidRequest,
            "set full_feature_names to true",
        ),
        (["pandas_view:double_5m"], DefinitionError, "python mode only"),
    ],
)
def test_bad_feature_lists_say_what_is_wrong(
    catalog: Catalog, features: list[str], error: type[Exception], needle: str
) -> None:
    with pytest.raises(error) as err:
        plan_for(catalog, features=features, feature_service=None, full_feature_names=False)
    assert needle in str(err.value)


def test_versioned_latest_is_the_current_version(catalog: Catalog) -> None:
    plan = plan_for(
        catalog,
        features=("clicks@latest:clicks_5m",),
        feature_service=None,
        full_feature_names=False,
    )
    assert plan.feature_names == ["clicks_5m"]


def test_on_demand_views_of_pii_sources_are_pii() -> None:
    clicks = copy.copy(CLICKS)
    clicks.tags = {"pii": "true"}
    catalog = _catalog(feature_views=(PROFILE, ITEMS, clicks))
    odfv = plan_for(
        catalog,
        features=("since_last:since_last_s",),
        feature_service=None,
        full_feature_names=False,
    )
    assert odfv.pii_views == ("clicks", "since_last")
    items = plan_for(
        catalog, features=("items:price",), feature_service=None, full_feature_names=False
    )
    assert items.pii_views == ()


def test_features_listing_has_kinds_windows_and_no_join_keys(catalog: Catalog) -> None:
    rows = {r["name"]: r for r in json.loads(catalog.features_json)["features"]}
    assert rows["clicks:clicks_5m"]["kind"] == "stream"
    assert (rows["clicks:clicks_5m"]["aggregation"], rows["clicks:clicks_5m"]["window"]) == (
        "count",
        "5min",
    )
    assert rows["clicks:clicks_5m"]["entity"] == "user_id"
    assert rows["profile:country"]["kind"] == "batch"
    assert rows["profile:country"]["tags"] == {"pii": "true"}
    assert rows["since_last:since_last_s"]["kind"] == "on_demand"
    assert rows["pandas_view:double_5m"]["servable"] is False
    assert "clicks:user_id" not in rows
    services = json.loads(catalog.features_json)["feature_services"]
    assert services[0]["name"] == "svc"
    assert services[0]["features"][:2] == ["clicks:clicks_1h", "clicks:clicks_5m"]


# ---------------------------------------------------------------- binding
def test_bind_builds_feast_and_tile_keys_once_per_distinct_entity(catalog: Catalog) -> None:
    request = _request(
        {
            "user_id": [1, 2, 1],
            "item_id": [7, 7, 7],
            "now_ms": [10, 10, 10],
            "offer": [1.0, 2, 3.5],
            "unrelated": ["ignored", "like", "feast"],
        },
        feature_service="svc",
    )
    lookup = bind(_plan(catalog, request), request, catalog)
    assert [k for k, _ in lookup.key_columns] == ["user_id", "item_id"]
    assert lookup.rows_of == [[0, 1, 0], [0, 0, 0], [0, 1, 0]]
    profile_key = (
        serialize_entity_key(
            EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=1)]), 3
        )
        + PROJECT.encode()
    )
    assert lookup.entity_reads == 2 + 1 + 2
    assert len(lookup.reads) == 2 + 1 + 2 + 1  # and whether the stream view is ready
    assert lookup.reads[-1] == ViewReady(_catalog().views["clicks"].spec)
    first, fourth = lookup.reads[0], lookup.reads[3]
    assert isinstance(first, FeastRowRead) and first.key_values == (1,)
    assert (first.rows.view, first.rows.features) == ("profile", ("country",))
    assert isinstance(fourth, TilesRead) and fourth.entity == entity_id([1])
    # The Redis commands of those reads (streams.online.redis.layout).
    commands = commands_for(lookup.reads)
    assert commands[0] == (
        "HMGET",
        profile_key,
        _mmh3("profile:country"),
        "_ts:profile",
    )
    assert commands[3] == ("HGETALL", tile_key(PROJECT, "clicks", entity_id([1])))
    # the markers of every stream view read, in one MGET
    assert commands[-1][0] == "MGET" and len(commands[-1]) == 2
    assert "_online:clicks:" in commands[-1][1]
    assert len(commands) == 2 + 1 + 2 + 1


@pytest.mark.parametrize(
    ("entities", "needle"),
    [
        ({"user_id": ["1"]}, 'entities.user_id[0] = "1": expected an integer'),
        ({"user_id": [True]}, "entities.user_id[0] = True: expected an integer"),
        ({"user_id": [None]}, "entities.user_id[0] = null: expected an integer"),
        ({"user_id": [2**63]}, "expected an integer"),
        ({"user_id": [1], "now_ms": ["x"], "offer": [1.0]}, 'entities.now_ms[0] = "x"'),
        (
            {"user_id": [1], "offer": [1.0]},
            "missing request field(s) 'now_ms' needed by on-demand view(s) since_last",
        ),
        (
            {"now_ms": [1], "offer": [1.0]},
            "entities is missing join key(s) 'user_id' of view 'clicks'",
        ),
        (
            {"user": [1], "user_id": [1], "now_ms": [1], "offer": [1.0]},
            "gives join key 'user_id' twice",
        ),
    ],
)
def test_bind_rejects_values_of_the_wrong_type(
    catalog: Catalog, entities: dict[str, list[Any]], needle: str
) -> None:
    request = _request(entities, features=("clicks:clicks_5m", "since_last:since_last_s"))
    with pytest.raises(InvalidRequest) as err:
        bind(_plan(catalog, request), request, catalog)
    assert needle in str(err.value)


def test_entity_names_are_accepted_for_join_keys(catalog: Catalog) -> None:
    request = _request({"user": [5]}, features=("clicks:clicks_5m",))
    lookup = bind(_plan(catalog, request), request, catalog)
    assert lookup.key_columns == [("user_id", [5])]


# ---------------------------------------------------------------- assembling
READ_MS = 1_700_000_000_000


def _tiles(*event_times_ms: int) -> StoredTiles | None:
    """What the online store holds after the engine's updates for these click events of
    one user."""
    spec = _catalog().views["clicks"].spec
    assert spec is not None
    state = EntityTiles()
    store = MemoryOnlineStore(clock=fixed_clock(READ_MS))
    for n, ms in enumerate(event_times_ms):
        update: TileUpdate = state.apply(spec, "k", {"event_time": ms, "event_id": f"e{n}"})
        store.write([update], project=PROJECT)
    ((stored,),) = store.read_tiles([(spec, ["k"])])
    return stored


def _row(*raw: bytes | None) -> FeastRow:
    """A batch view's row as Feast stores it: values, then the timestamp."""
    return FeastRow(tuple(raw[:-1]), raw[-1])


def _value(**kw: Any) -> bytes:
    return Value(**kw).SerializeToString()


def _ts(ms: int) -> bytes:
    ts = Timestamp()
    ts.FromDatetime(datetime.fromtimestamp(ms / 1000, tz=UTC))
    return ts.SerializeToString()


def _answer(
    catalog: Catalog, request: LookupRequest, answers: list[Any], *, ready: bool = True, **kw: Any
) -> Any:
    """Assemble the answer from ``answers`` to the entity reads (every stream view's
    tiles complete, or none with ``ready=False``)."""
    lookup = bind(_plan(catalog, request), request, catalog)
    assert len(answers) == lookup.entity_reads
    readiness = [ready] * (len(lookup.reads) - lookup.entity_reads)
    answer = assemble(lookup, [*answers, *readiness], READ_MS, **kw)
    names = answer["metadata"]["feature_names"]
    return answer, dict(zip(names, answer["results"], strict=True))


def test_assemble_follows_feast_statuses_and_timestamps(catalog: Catalog) -> None:
    request = _request(
        {"user_id": [1, 2], "now_ms": [READ_MS, READ_MS], "offer": [1.0, 1.0]},
        features=(
            "profile:country",
            "clicks:clicks_5m",
            "clicks:last_click_ms",
            "since_last:since_last_s",
        ),
    )
    newest = READ_MS - 61_000
    replies = [
        _row(_value(string_val="DE"), _ts(READ_MS - 1000)),  # profile, user 1
        _row(None, None),  # profile, user 2: unknown
        _tiles(READ_MS - 120_000, newest),  # clicks, user 1
        None,  # clicks, user 2: no events
    ]
    answer, cols = _answer(catalog, request, replies)
    assert answer["metadata"]["feature_names"] == [
        "user_id",
        "country",
        "clicks_5m",
        "last_click_ms",
        "since_last_s",
    ]
    assert cols["user_id"]["event_timestamps"] == ["1970-01-01T00:00:00Z"] * 2
    assert cols["country"] == {
        "values": ["DE", None],
        "statuses": ["PRESENT", "PRESENT"],  # Feast's Redis store: unknown entity is PRESENT/null
        "event_timestamps": ["2023-11-14T22:13:19Z", "1970-01-01T00:00:00Z"],
    }
    assert cols["clicks_5m"]["values"] == [2, 0]
    assert cols["clicks_5m"]["statuses"] == ["PRESENT", "PRESENT"]
    assert cols["clicks_5m"]["event_timestamps"] == ["2023-11-14T22:12:19Z", "1970-01-01T00:00:00Z"]
    assert cols["last_click_ms"]["values"] == [float(newest), None]
    assert cols["last_click_ms"]["statuses"] == ["PRESENT", "NOT_FOUND"]
    assert cols["since_last_s"] == {
        "values": [61.0, None],
        "statuses": ["PRESENT", "PRESENT"],
        "event_timestamps": ["1970-01-01T00:00:00Z"] * 2,
    }


def test_a_stream_view_whose_tiles_are_not_complete_is_not_found(catalog: Catalog) -> None:
    request = _request({"user_id": [1]}, features=("clicks:clicks_5m", "profile:country"))
    answers = [_row(_value(string_val="DE"), _ts(READ_MS - 1000)), _tiles(READ_MS - 1000)]
    _, cols = _answer(catalog, request, answers, ready=False)
    # a view its engine is still building (or restoring) answers no value, not a partial one
    assert (cols["clicks_5m"]["values"], cols["clicks_5m"]["statuses"]) == ([None], ["NOT_FOUND"])
    assert cols["country"]["values"] == ["DE"]  # batch views are served as ever
    _, cols = _answer(catalog, request, answers)
    assert (cols["clicks_5m"]["values"], cols["clicks_5m"]["statuses"]) == ([1], ["PRESENT"])


def test_max_staleness_marks_old_stream_rows_and_freshness_reports_ages(catalog: Catalog) -> None:
    request = _request(
        {"user_id": [1, 2, 3]},
        features=("clicks:clicks_1h", "profile:age"),
        max_staleness_ms=60_000,
        include_freshness=True,
    )
    replies = [
        _row(_value(int64_val=30), _ts(READ_MS - 5000)),
        _row(_value(int64_val=40), _ts(READ_MS - 5000)),
        _row(None, None),
        _tiles(READ_MS - 10_000),  # fresh
        _tiles(READ_MS - 600_000),  # 10 min old: stale
        None,
    ]
    answer, cols = _answer(catalog, request, replies)
    assert cols["clicks_1h"]["values"] == [1, None, 0]
    assert cols["clicks_1h"]["statuses"] == ["PRESENT", "OUTSIDE_MAX_AGE", "PRESENT"]
    assert cols["age"]["statuses"] == ["PRESENT"] * 3  # batch views are not stream values
    assert answer["metadata"]["freshness"] == {
        "profile": {"newest_event_age_ms": [5000, 5000, None]},
        "clicks": {"newest_event_age_ms": [10_000, 600_000, None]},
    }


def test_ttl_is_enforced_on_batch_rows_unless_disabled(catalog: Catalog) -> None:
    request = _request({"user_id": [1]}, features=("profile:age",))
    two_days = 2 * 86_400_000
    replies = [_row(_value(int64_val=30), _ts(READ_MS - two_days))]
    _, cols = _answer(catalog, request, replies)
    assert (cols["age"]["values"], cols["age"]["statuses"]) == ([None], ["OUTSIDE_MAX_AGE"])
    _, cols = _answer(catalog, request, replies, enforce_ttl=False)  # Feast 0.67's behaviour
    assert (cols["age"]["values"], cols["age"]["statuses"]) == ([30], ["PRESENT"])


def test_failing_on_demand_views_are_transform_errors(catalog: Catalog) -> None:
    request = _request(
        {"user_id": [1], "now_ms": ["not used"], "offer": [1.0]},
        features=("since_last:since_last_s",),
    )
    with pytest.raises(InvalidRequest):  # the type is checked before the UDF sees it
        _answer(catalog, request, [None])
    request = _request(
        {"user_id": [1], "now_ms": [None], "offer": [1.0]}, features=("since_last:since_last_s",)
    )
    with pytest.raises(TransformFailed, match="on-demand view 'since_last' raised TypeError"):
        _answer(catalog, request, [_tiles(READ_MS - 1000)])


def test_python_transform_equals_feast_transform_dict() -> None:
    inputs = {
        "user_id": [1, 2],
        "now_ms": [READ_MS, READ_MS],
        "offer": [1.0, 2.0],
        "clicks__last_click_ms": [READ_MS - 1500.0, None],
        "clicks__clicks_5m": [3, 0],
        "clicks__clicks_1h": [3, 0],
    }
    assert python_transform(since_last)(inputs) == since_last.transform_dict(inputs)
    short = {k.removeprefix("clicks__"): v for k, v in inputs.items()}
    assert python_transform(since_last)(short) == since_last.transform_dict(short)
