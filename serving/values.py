"""Values as Feast's feature server writes them in JSON (pure functions, no I/O).

The JSON forms follow ``feast.feature_server_utils.convert_response_to_dict``:
numbers and strings as themselves, non-finite floats as ``"NaN"`` /
``"Infinity"`` / ``"-Infinity"``, timestamps as RFC 3339 with ``Z`` and as many
fraction digits as needed (0, 3, 6 or 9), the unset timestamp as
``1970-01-01T00:00:00Z``. Scalars take a fast path; every other type goes through
Feast's own converters so the output is the same.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from feast.feature_server_utils import _value_to_native
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type, python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

__all__ = [
    "EPOCH",
    "check_value",
    "describe_type",
    "iso_from_ms",
    "native_from_bytes",
    "native_from_python",
    "python_from_bytes",
    "stored_timestamp",
    "tile_value",
]

EPOCH = "1970-01-01T00:00:00Z"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_CACHE_LIMIT = 65_536

_SCALAR_FIELDS = frozenset({"int64_val", "int32_val", "string_val", "bool_val"})
_FLOAT_FIELDS = frozenset({"double_val", "float_val"})


def _finite(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _native(proto: ValueProto) -> Any:
    which = proto.WhichOneof("val")
    if which is None or which == "null_val":
        return None
    if which in _SCALAR_FIELDS:
        return getattr(proto, which)
    if which in _FLOAT_FIELDS:
        return _finite(getattr(proto, which))
    return _value_to_native(proto)


_native_cache: dict[bytes, Any] = {}


def native_from_bytes(raw: bytes | None) -> Any:
    """The JSON value of a ``ValueProto`` as Feast's Redis store keeps it (None: missing)."""
    if raw is None:
        return None
    try:
        return _native_cache[raw]
    except KeyError:
        pass
    value = _native(ValueProto.FromString(raw))
    if isinstance(value, (list, dict)):
        return value  # mutable: never shared between responses
    if len(_native_cache) >= _CACHE_LIMIT:
        _native_cache.clear()
    _native_cache[raw] = value
    return value


def python_from_bytes(raw: bytes | None, value_type: ValueType) -> Any:
    """The Python value Feast's ``OnlineResponse.to_dict`` gives an on-demand function."""
    if raw is None:
        return None
    return feast_value_type_to_python_type(ValueProto.FromString(raw), value_type)


def tile_value(value_type: str, value: Any) -> Any:
    """A window value as the tile store's Feast plugin returns it (int64 or double)."""
    if value is None:
        return None
    if value_type == "int64":
        return int(value)
    return _finite(float(value))


def _double(value: Any) -> Any:
    if value is None:
        return None
    out = float(value)
    if math.isnan(out):
        return None  # Feast writes NaN from Python as a missing value
    return _finite(out)


def _int(value: Any) -> Any:
    return None if value is None else int(value)


def _str(value: Any) -> Any:
    return None if value is None else str(value)


def _bool(value: Any) -> Any:
    return None if value is None else bool(value)


_FAST: dict[ValueType, Callable[[Any], Any]] = {
    ValueType.DOUBLE: _double,
    ValueType.INT64: _int,
    ValueType.STRING: _str,
    ValueType.BOOL: _bool,
}


def native_from_python(values: Sequence[Any], value_type: ValueType) -> list[Any]:
    """JSON values of an on-demand function's output column of ``value_type``.

    Raises:
        TypeError, ValueError: when a value does not fit the declared type.
    """
    fast = _FAST.get(value_type)
    if fast is not None:
        return [fast(v) for v in values]
    return [_native(p) for p in python_values_to_proto_values(list(values), value_type)]


_iso_cache: dict[int, str] = {}


def iso_from_ms(ms: int) -> str:
    """RFC 3339 text of an epoch-milliseconds time, as Feast formats a row's event time."""
    try:
        return _iso_cache[ms]
    except KeyError:
        pass
    seconds, rest = divmod(ms, 1000)
    t = time.gmtime(seconds)
    text = (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:"
        f"{t.tm_sec:02d}" + (f".{rest:03d}Z" if rest else "Z")
    )
    if len(_iso_cache) >= _CACHE_LIMIT:
        _iso_cache.clear()
    _iso_cache[ms] = text
    return text


_stored_cache: dict[bytes, tuple[str, int | None]] = {}


def stored_timestamp(raw: bytes | None) -> tuple[str, int | None]:
    """``(RFC 3339 text, epoch ms or None)`` of a row timestamp in Feast's Redis layout.

    Follows Feast's round trip: seconds + nanos as a float, a datetime with
    microseconds, then a protobuf ``Timestamp`` formatted with adaptive precision.
    """
    if not raw:
        return EPOCH, None
    try:
        return _stored_cache[raw]
    except KeyError:
        pass
    stored = Timestamp.FromString(raw)
    moment = datetime.fromtimestamp(stored.seconds + stored.nanos / 1_000_000_000.0, tz=UTC)
    ts = Timestamp()
    ts.FromDatetime(moment)
    if ts.seconds == 0 and ts.nanos == 0:
        text = EPOCH
    else:
        base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts.seconds))
        nanos = ts.nanos
        if nanos == 0:
            text = base + "Z"
        elif nanos % 1_000_000 == 0:
            text = f"{base}.{nanos // 1_000_000:03d}Z"
        elif nanos % 1_000 == 0:
            text = f"{base}.{nanos // 1_000:06d}Z"
        else:
            text = f"{base}.{nanos:09d}Z"
    out = (text, ts.seconds * 1000 + ts.nanos // 1_000_000)
    if len(_stored_cache) >= _CACHE_LIMIT:
        _stored_cache.clear()
    _stored_cache[raw] = out
    return out


_TYPE_WORDS = {
    ValueType.INT64: "an integer",
    ValueType.INT32: "a 32-bit integer",
    ValueType.UNIX_TIMESTAMP: "an integer (epoch seconds)",
    ValueType.DOUBLE: "a number",
    ValueType.FLOAT: "a number",
    ValueType.STRING: "a string",
    ValueType.BOOL: "true or false",
}


def describe_type(value_type: ValueType) -> str:
    """What a JSON value of ``value_type`` looks like, for error messages."""
    return _TYPE_WORDS.get(value_type, value_type.name.lower())


def check_value(value_type: ValueType, value: Any) -> bool:
    """True when the JSON value ``value`` is valid for ``value_type`` (null is checked apart)."""
    kind = type(value)
    if value_type in (ValueType.INT64, ValueType.UNIX_TIMESTAMP):
        return kind is int and _INT64_MIN <= value <= _INT64_MAX
    if value_type == ValueType.INT32:
        return kind is int and _INT32_MIN <= value <= _INT32_MAX
    if value_type in (ValueType.DOUBLE, ValueType.FLOAT):
        return kind is float or kind is int
    if value_type == ValueType.STRING:
        return kind is str
    if value_type == ValueType.BOOL:
        return kind is bool
    return True
