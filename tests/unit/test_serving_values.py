"""JSON values of the fast server against Feast's own converters (the oracle), and RESP."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import hiredis
import pytest
from feast.feature_server_utils import _timestamp_to_str, _value_to_native
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from serving.values import (
    check_value,
    iso_from_ms,
    native_from_bytes,
    native_from_python,
    stored_timestamp,
    tile_value,
)
from streams.online.redis.resp import pack_commands

MS = st.integers(min_value=0, max_value=4_102_444_800_000)  # up to 2100


@given(MS)
def test_row_times_format_like_feast(ms: int) -> None:
    # Feast: datetime.fromtimestamp(last_ms / 1000) -> Timestamp.FromDatetime -> text
    ts = Timestamp()
    ts.FromDatetime(datetime.fromtimestamp(ms / 1000, tz=UTC))
    assert iso_from_ms(ms) == _timestamp_to_str(ts)


@given(st.integers(min_value=0, max_value=4_102_444_800), st.integers(0, 999_999_999))
def test_stored_timestamps_format_like_feast(seconds: int, nanos: int) -> None:
    stored = Timestamp(seconds=seconds, nanos=nanos)
    # Feast's Redis store: float seconds -> datetime (microseconds) -> Timestamp
    moment = datetime.fromtimestamp(seconds + nanos / 1_000_000_000.0, tz=UTC)
    expected = Timestamp()
    expected.FromDatetime(moment)
    text, ms = stored_timestamp(stored.SerializeToString())
    assert text == _timestamp_to_str(expected)
    if seconds or nanos:
        assert ms == expected.seconds * 1000 + expected.nanos // 1_000_000
    else:  # the zero Timestamp serializes to b"": an unset time, as for Feast
        assert ms is None


def test_missing_timestamps_are_the_epoch() -> None:
    assert stored_timestamp(None) == ("1970-01-01T00:00:00Z", None)
    assert iso_from_ms(0) == "1970-01-01T00:00:00Z"


VALUES = st.one_of(
    st.builds(lambda v: Value(int64_val=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: Value(int32_val=v), st.integers(-(2**31), 2**31 - 1)),
    st.builds(lambda v: Value(double_val=v), st.floats()),
    st.builds(lambda v: Value(float_val=v), st.floats(width=32)),
    st.builds(lambda v: Value(string_val=v), st.text()),
    st.builds(lambda v: Value(bool_val=v), st.booleans()),
    st.builds(lambda v: Value(unix_timestamp_val=v), st.integers(0, 2**40)),
    st.builds(lambda v: Value(bytes_val=v), st.binary()),
    st.just(Value()),
)


def _same(a: Any, b: Any) -> bool:
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


@given(VALUES)
def test_stored_values_convert_like_feast(value: Value) -> None:
    assert _same(native_from_bytes(value.SerializeToString()), _value_to_native(value))


def test_list_values_are_never_shared_between_answers() -> None:
    raw = Value(int64_list_val={"val": [1, 2]}).SerializeToString()
    first = native_from_bytes(raw)
    assert first == [1, 2]
    assert native_from_bytes(raw) is not first


@pytest.mark.parametrize(
    ("value_type", "values"),
    [
        (ValueType.DOUBLE, [1, 2.5, None, float("nan"), float("inf"), True]),
        (ValueType.INT64, [1, None, 2.0]),
        (ValueType.STRING, ["a", None]),
        (ValueType.BOOL, [True, None]),
        (ValueType.FLOAT, [0.1, None]),
        (ValueType.INT32, [3, None]),
    ],
)
def test_on_demand_outputs_convert_like_feast(value_type: ValueType, values: list[Any]) -> None:
    expected = [_value_to_native(p) for p in python_values_to_proto_values(values, value_type)]
    assert native_from_python(values, value_type) == expected


def test_tile_values_are_int64_or_double() -> None:
    assert tile_value("int64", 3) == 3
    assert tile_value("float64", 3) == 3.0 and isinstance(tile_value("float64", 3), float)
    assert tile_value("float64", None) is None


@pytest.mark.parametrize(
    ("value_type", "good", "bad"),
    [
        (ValueType.INT64, [0, -(2**63), 2**63 - 1], [True, 1.0, "1", 2**63]),
        (ValueType.INT32, [2**31 - 1], [2**31]),
        (ValueType.DOUBLE, [1, 1.5], [True, "1"]),
        (ValueType.STRING, ["x", ""], [1, None]),
        (ValueType.BOOL, [True], [1]),
    ],
)
def test_json_values_are_checked_against_feast_types(
    value_type: ValueType, good: list[Any], bad: list[Any]
) -> None:
    assert all(check_value(value_type, v) for v in good)
    assert not any(check_value(value_type, v) for v in bad)


def test_commands_are_packed_as_resp() -> None:
    packed = pack_commands([("HMGET", b"k\x00", "f", 7), ("PING",)])
    assert (
        packed == b"*4\r\n$5\r\nHMGET\r\n$2\r\nk\x00\r\n$1\r\nf\r\n$1\r\n7\r\n*1\r\n$4\r\nPING\r\n"
    )
    # what a RESP parser reads back is the commands
    reader = hiredis.Reader()
    reader.feed(packed)
    assert reader.gets() == [b"HMGET", b"k\x00", b"f", b"7"]
    assert reader.gets() == [b"PING"]
