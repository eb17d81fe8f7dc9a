"""Compiling real Feast objects (built here, no registry) into engine specs."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from feast import Entity, Field, FileSource, KafkaSource, ValueType
from feast.aggregation import Aggregation
from feast.data_format import AvroFormat, JsonFormat, ParquetFormat, StreamFormat
from feast.stream_feature_view import StreamFeatureView
from feast.types import Float64, Int64

from featurestream.errors import ConfigError, DefinitionError
from featurestream.events import contract_for_topic
from streams.core import AggregationSpec, ViewSpec
from streams.definitions import cached_views, compile_view, select_views

pytestmark = pytest.mark.filterwarnings(
    "ignore:Stream feature views are experimental:RuntimeWarning"
)

USER = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
CLICK_SCHEMA = contract_for_topic("clicks").schema_json


def _avro(schema: dict[str, Any] = CLICK_SCHEMA) -> AvroFormat:
    return AvroFormat(schema_json=json.dumps(schema))


def _source(
    topic: str = "clicks",
    message_format: StreamFormat | None = None,
    lateness: timedelta | None = timedelta(seconds=30),
) -> KafkaSource:
    return KafkaSource(
        name=f"{topic}_source",
        topic=topic,
        timestamp_field="event_time",
        message_format=message_format if message_format is not None else _avro(),
        watermark_delay_threshold=lateness,
        batch_source=FileSource(
            name=f"{topic}_log",
            path=f"data/offline/{topic}",
            file_format=ParquetFormat(),
            timestamp_field="event_time",
        ),
    )


def _agg(
    name: str | None = "clicks_5m",
    function: str = "count",
    column: str = "event_id",
    window: timedelta = timedelta(minutes=5),
) -> Aggregation:
    return Aggregation(column=column, function=function, time_window=window, name=name)


DEFAULT_AGGS = (
    _agg("clicks_5m", "count", "event_id", timedelta(minutes=5)),
    _agg("clicks_1h", "count", "event_id", timedelta(hours=1)),
    _agg("items_1h", "count_distinct", "item_id", timedelta(hours=1)),
)
FEATURES = ("clicks_5m", "clicks_1h", "items_1h")


def _view(
    aggregations: tuple[Aggregation, ...] = DEFAULT_AGGS,
    *,
    name: str = "user_clicks",
    source: KafkaSource | None = None,
    hop: timedelta | None = None,
    features: tuple[str, ...] = FEATURES,
) -> StreamFeatureView:
    return StreamFeatureView(
        name=name,
        entities=[USER],
        source=source if source is not None else _source(),
        timestamp_field="event_time",
        ttl=timedelta(hours=1),
        schema=[
            Field(name="user_id", dtype=Int64),
            *(Field(name=f, dtype=Float64 if "spent" in f else Int64) for f in features),
        ],
        aggregations=list(aggregations),
        tiling_hop_size=hop,
        online=True,
    )


# ------------------------------------------------------------------ good definitions


def test_compile_view_with_default_tiles() -> None:
    spec = compile_view("shop", _view(), ["user_id"])
    assert spec == ViewSpec(
        project="shop",
        name="user_clicks",
        topic="clicks",
        join_keys=("user_id",),
        timestamp_field="event_time",
        allowed_lateness_ms=30_000,
        aggregations=(
            # default tile: W/60
            AggregationSpec("clicks_5m", "count", "event_id", 300_000, 5_000),
            AggregationSpec("clicks_1h", "count", "event_id", 3_600_000, 60_000),
            AggregationSpec("items_1h", "count_distinct", "item_id", 3_600_000, 60_000),
        ),
        # types of the join keys and aggregated columns, from the event contract
        field_types=(("user_id", "long"), ("event_id", "string"), ("item_id", "long")),
    )


@pytest.mark.parametrize(
    ("window", "tile_ms"),
    [
        (timedelta(minutes=5), 5_000),
        (timedelta(hours=1), 60_000),
        (timedelta(seconds=30), 1_000),
        (timedelta(seconds=1), 1_000),
    ],
)
def test_default_tile_is_a_sixtieth_of_the_window(window: timedelta, tile_ms: int) -> None:
    spec = compile_view("p", _view((_agg("f", window=window),), features=("f",)), ["user_id"])
    assert [(a.window_ms, a.tile_ms) for a in spec.aggregations] == [
        (round(window.total_seconds() * 1000), tile_ms)
    ]


def test_tiling_hop_size_sets_every_tile() -> None:
    spec = compile_view("p", _view(hop=timedelta(seconds=10)), ["user_id"])
    assert [a.tile_ms for a in spec.aggregations] == [10_000, 10_000, 10_000]
    assert [a.window_ms for a in spec.aggregations] == [300_000, 3_600_000, 3_600_000]
    # same function, column and tile: the two counts share one slot
    assert len(spec.slots) == 2


@pytest.mark.parametrize(
    ("lateness", "lateness_ms"),
    [
        (timedelta(seconds=30), 30_000),
        (timedelta(milliseconds=1_500), 1_500),
        (timedelta(minutes=2), 120_000),
        (None, 0),
    ],
)
def test_lateness_is_the_watermark_delay_threshold(
    lateness: timedelta | None, lateness_ms: int
) -> None:
    spec = compile_view("p", _view(source=_source(lateness=lateness)), ["user_id"])
    assert spec.allowed_lateness_ms == lateness_ms


@pytest.mark.parametrize("function", ["count", "sum", "mean", "min", "max", "last"])
def test_every_function_compiles(function: str) -> None:
    spec = compile_view("p", _view((_agg("f", function, "item_id"),), features=("f",)), ["user_id"])
    assert [(a.name, a.function, a.column) for a in spec.aggregations] == [
        ("f", function, "item_id")
    ]


# ------------------------------------------------------------------ bad definitions

_OTHER_SCHEMA = {
    **CLICK_SCHEMA,
    "fields": [f for f in CLICK_SCHEMA["fields"] if f["name"] != "page"],
}

BAD: list[Any] = [
    pytest.param(
        lambda: _view((_agg("clicks_5m", function="median"),)),
        "unknown aggregation function 'median'",
        id="unknown-function",
    ),
    pytest.param(lambda: _view((_agg(None),)), "has no name", id="aggregation-without-name"),
    pytest.param(
        lambda: _view((_agg("not_in_schema"),)),
        "'not_in_schema' is not a schema field",
        id="name-not-in-schema",
    ),
    pytest.param(
        lambda: _view(hop=timedelta(seconds=7)),
        "not a whole number of tiles of 7000 ms",
        id="window-not-a-multiple-of-the-hop",
    ),
    pytest.param(
        lambda: _view((_agg("clicks_5m", window=timedelta(seconds=210)),)),
        "not a whole number of tiles of 4000 ms",
        id="window-not-a-multiple-of-the-default-tile",
    ),
    pytest.param(
        lambda: _view(source=_source(message_format=_avro(_OTHER_SCHEMA))),
        "differs from the checked-in contract",
        id="avro-schema-differs",
    ),
    pytest.param(
        lambda: _view(
            source=_source(message_format=_avro(contract_for_topic("purchases").schema_json))
        ),
        "differs from the checked-in contract",
        id="avro-schema-of-another-topic",
    ),
    pytest.param(
        lambda: _view(source=_source(message_format=AvroFormat(schema_json="{not json"))),
        "AvroFormat schema is not valid",
        id="avro-schema-not-json",
    ),
    pytest.param(
        lambda: _view(source=_source(message_format=JsonFormat(schema_json="{}"))),
        "AvroFormat",
        id="json-format",
    ),
    pytest.param(
        lambda: _view(source=_source(message_format=JsonFormat(json.dumps(CLICK_SCHEMA)))),
        "must use AvroFormat",
        id="json-format-carrying-the-avro-schema",
    ),
    pytest.param(
        lambda: _view(source=_source(topic="no_such_topic")),
        "unknown topic 'no_such_topic'",
        id="topic-without-contract",
    ),
    pytest.param(
        lambda: _view((_agg("clicks_5m", "sum", "amount"),)),
        "['amount'] are not fields of featurestream.events.Click",
        id="column-not-an-event-field",
    ),
    pytest.param(lambda: _view(()), "has no aggregations", id="no-aggregations"),
]


@pytest.mark.parametrize(("build", "fragment"), BAD)
def test_bad_definitions_raise_definition_error(build: Any, fragment: str) -> None:
    view = build()
    with pytest.raises(DefinitionError) as info:
        compile_view("p", view, ["user_id"])
    message = str(info.value)
    assert "'user_clicks'" in message
    assert fragment in message
    assert isinstance(info.value, ConfigError)


def test_join_key_not_an_event_field() -> None:
    with pytest.raises(DefinitionError) as info:
        compile_view("p", _view(), ["customer_id"])
    assert "'user_clicks'" in str(info.value)
    assert "['customer_id'] are not fields" in str(info.value)


# ------------------------------------------------------------------ select_views

SPECS = tuple(
    ViewSpec("p", name, "clicks", ("user_id",), "event_time", 0, ()) for name in ("a", "b", "c")
)


def test_select_views_by_name_in_the_order_asked() -> None:
    assert [s.name for s in select_views(SPECS, ["c", "a"])] == ["c", "a"]


def test_select_views_without_names_is_all() -> None:
    assert select_views(SPECS, []) == SPECS


def test_select_views_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(DefinitionError) as info:
        select_views(SPECS, ["a", "nope"])
    message = str(info.value)
    assert "['nope']" in message
    assert "known: ['a', 'b', 'c']" in message


# ------------------------------------------------------------------ the engine's view cache

CACHED = ViewSpec(
    project="p",
    name="clicks_stats",
    topic="clicks",
    join_keys=("user_id",),
    timestamp_field="event_time",
    allowed_lateness_ms=5_000,
    aggregations=(
        AggregationSpec("n_5m", "count", "event_id", 300_000, 5_000),
        AggregationSpec("items_1h", "count_distinct", "item_id", 3_600_000, 60_000),
    ),
    field_types=(("user_id", "long"), ("item_id", "long")),
)


def _repo(root: Path, registry: str = "data/registry.db") -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "feature_store.yaml").write_text(f"project: p\nregistry: {registry}\n")
    (root / "data" / "registry.db").write_bytes(b"registry v1")
    return root


def test_cached_views_compile_once_per_registry_content(tmp_path: Path) -> None:
    repo = _repo(tmp_path / "repo")
    calls: list[int] = []

    def compile_all() -> tuple[tuple[ViewSpec, ...], Path]:
        calls.append(1)
        return (CACHED,), tmp_path / "log"

    first = cached_views(repo, tmp_path / "cache", compile_all)
    again = cached_views(repo, tmp_path / "cache", compile_all)
    assert first == again == ((CACHED,), tmp_path / "log")
    assert again[0][0].state_id == CACHED.state_id
    assert len(calls) == 1
    # feast apply rewrote the registry: compiled afresh.
    (repo / "data" / "registry.db").write_bytes(b"registry v2")
    cached_views(repo, tmp_path / "cache", compile_all)
    assert len(calls) == 2
    # An unreadable entry is recompiled, not an error.
    for entry in (tmp_path / "cache").glob("views-*.json"):
        entry.write_text("{not json")
    assert cached_views(repo, tmp_path / "cache", compile_all) == first
    assert len(calls) == 3


def test_registries_that_are_not_local_files_are_always_compiled(tmp_path: Path) -> None:
    calls: list[int] = []

    def compile_all() -> tuple[tuple[ViewSpec, ...], Path]:
        calls.append(1)
        return (CACHED,), tmp_path / "log"

    for registry in ("${REGISTRY_PATH}", "s3://bucket/registry.db", "data/missing.db"):
        repo = _repo(tmp_path / registry.replace("/", "_").replace("$", "_"), registry)
        cached_views(repo, tmp_path / "cache", compile_all)
        cached_views(repo, tmp_path / "cache", compile_all)
    assert len(calls) == 6
