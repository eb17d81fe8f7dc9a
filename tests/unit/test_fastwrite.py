"""The compiled encoder writes exactly what fastavro writes."""

from __future__ import annotations

import io
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.events import load_contracts
from featurestream.events.fastwrite import compile_writer

LONGS = st.integers(-(2**63), 2**63 - 1)
VALUES: dict[str, Any] = {
    "long": LONGS,
    "int": st.integers(-(2**31), 2**31 - 1),
    "string": st.text(max_size=40),
    "double": st.floats(allow_nan=False),
    "boolean": st.booleans(),
}


def _fastavro(schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, schema, record)
    return buf.getvalue()


@pytest.mark.parametrize("contract", load_contracts(), ids=lambda c: c.topic)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_contract_encodings_equal_fastavro(contract: Any, data: st.DataObject) -> None:
    record = {}
    for field in contract.parsed["fields"]:
        kind = field["type"] if isinstance(field["type"], str) else field["type"]["type"]
        record[field["name"]] = data.draw(VALUES[kind])
    writer = compile_writer(contract.parsed)
    assert writer is not None
    assert writer(record) == _fastavro(contract.parsed, record)


def test_defaults_fill_missing_fields_like_fastavro() -> None:
    schema = parse_schema(
        {
            "type": "record",
            "name": "R",
            "fields": [
                {"name": "a", "type": "long"},
                {"name": "b", "type": "string", "default": "x"},
                {"name": "c", "type": "boolean", "default": True},
            ],
        }
    )
    writer = compile_writer(schema)
    assert writer is not None
    assert writer({"a": 5}) == _fastavro(schema, {"a": 5, "b": "x", "c": True})


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ({"event_id": "e", "user_id": 1, "item_id": 2, "page": "p"}, KeyError),
        ({"event_id": "e", "user_id": "1", "item_id": 2, "page": "p", "event_time": 3}, TypeError),
        ({"event_id": "e", "user_id": True, "item_id": 2, "page": "p", "event_time": 3}, TypeError),
        (
            {"event_id": "e", "user_id": 2**63, "item_id": 2, "page": "p", "event_time": 3},
            ValueError,
        ),
        ({"event_id": 5, "user_id": 1, "item_id": 2, "page": "p", "event_time": 3}, TypeError),
    ],
)
def test_values_that_do_not_fit_raise(record: dict[str, Any], error: type[Exception]) -> None:
    writer = compile_writer(load_contracts()[0].parsed)
    assert writer is not None
    with pytest.raises(error):
        writer(record)


def test_unsupported_schemas_fall_back_to_fastavro() -> None:
    nested = parse_schema(
        {
            "type": "record",
            "name": "N",
            "fields": [{"name": "tags", "type": {"type": "array", "items": "string"}}],
        }
    )
    assert compile_writer(nested) is None
