"""The compiled decoder reads exactly what fastavro reads, and fails the same way.

Judge: ``fastavro.schemaless_reader`` called directly, on bodies written by
``fastavro.schemaless_writer`` and on arbitrary bytes.
"""

from __future__ import annotations

import io
import math
import struct
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

import featurestream.events.codec as codec_module
from featurestream.errors import DecodeError
from featurestream.events import SINGLE_OBJECT_MAGIC, AvroCodec, load_contracts, parse_contract
from featurestream.events.fastread import compile_reader

PROPERTY = settings(max_examples=200, deadline=None)
CODEC = AvroCodec(load_contracts())

LONG_EDGES = [
    0,
    -1,
    1,
    63,
    -64,
    64,
    -65,
    8191,
    -8192,
    8192,
    2**31 - 1,
    -(2**31),
    2**63 - 1,
    -(2**63),
]
LONGS = st.one_of(st.sampled_from(LONG_EDGES), st.integers(-(2**63), 2**63 - 1))
INTS = st.integers(-(2**31), 2**31 - 1)
TEXT = st.one_of(
    st.sampled_from(["", "é", "日本語", "\U0001f600", "a\x00b"]), st.text(max_size=300)
)

# Every type the compiled reader handles, unions with null included.
ALL_TYPES = parse_schema(
    {
        "type": "record",
        "name": "AllTypes",
        "namespace": "tests.fastread",
        "fields": [
            {"name": "nothing", "type": "null"},
            {"name": "flag", "type": "boolean"},
            {"name": "small", "type": "int"},
            {"name": "big", "type": "long"},
            {"name": "ratio", "type": "float"},
            {"name": "amount", "type": "double"},
            {"name": "blob", "type": "bytes"},
            {"name": "text", "type": "string"},
            {
                "name": "color",
                "type": {"type": "enum", "name": "Color", "symbols": ["R", "G", "B"]},
            },
            {"name": "tag", "type": {"type": "fixed", "name": "Tag", "size": 3}},
            {"name": "note", "type": ["null", "string"]},
            {"name": "score", "type": ["null", "long", "double"]},
            {"name": "last", "type": ["string", "null"]},
        ],
    }
)

# Unions and enums first, so that random bytes reach their branch index (negative too).
UNIONS = parse_schema(
    {
        "type": "record",
        "name": "Unions",
        "namespace": "tests.fastread",
        "fields": [
            {"name": "color", "type": {"type": "enum", "name": "Hue", "symbols": ["R", "G"]}},
            {"name": "note", "type": ["null", "string"]},
            {"name": "score", "type": ["null", "long", "double"]},
        ],
    }
)


def _values(ftype: Any) -> st.SearchStrategy[Any]:
    """Valid values of one (parsed) field type."""
    if isinstance(ftype, list):
        return st.one_of(*(_values(branch) for branch in ftype))
    kind = ftype["type"] if isinstance(ftype, dict) else ftype
    simple: dict[str, st.SearchStrategy[Any]] = {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": INTS,
        "long": LONGS,
        "float": st.floats(width=32),
        "double": st.floats(),  # NaN and infinities included
        "bytes": st.binary(max_size=300),
        "string": TEXT,
    }
    if kind == "enum":
        return st.sampled_from(ftype["symbols"])
    if kind == "fixed":
        return st.binary(min_size=ftype["size"], max_size=ftype["size"])
    return simple[kind]


def _records(parsed: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f["name"]: _values(f["type"]) for f in parsed["fields"]})


def _body(parsed: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, parsed, record)
    return buf.getvalue()


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types; floats compared by bits (NaN, -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def _fastavro(parsed: Any, data: bytes, pos: int) -> tuple[dict[str, Any], int]:
    stream = io.BytesIO(data)
    stream.seek(pos)
    record = schemaless_reader(stream, parsed, None)
    return record, stream.tell()


def _outcome(read: Any, *args: Any) -> tuple[str, Any]:
    """``("ok", (record, end))`` or the failure class the codec maps the exception to."""
    try:
        return "ok", read(*args)
    except (EOFError, IndexError) as exc:
        if isinstance(exc, IndexError) and "list" in str(exc):
            return "error", "schema_mismatch"
        return "error", "truncated"
    except UnicodeDecodeError:
        return "error", "schema_mismatch"


def _same_outcome(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] == "error":
        return bool(a[1] == b[1])
    return _same(a[1][0], b[1][0]) and a[1][1] == b[1][1]


# ------------------------------------------------------------------ valid bodies


@pytest.mark.parametrize(
    "parsed",
    [*(c.parsed for c in load_contracts()), ALL_TYPES],
    ids=[*(c.topic for c in load_contracts()), "all-types"],
)
@PROPERTY
@given(data=st.data())
def test_valid_bodies_read_exactly_as_fastavro(parsed: Any, data: st.DataObject) -> None:
    read = compile_reader(parsed)
    assert read is not None
    prefix = data.draw(st.binary(max_size=12), label="prefix")
    body = _body(parsed, data.draw(_records(parsed), label="record"))
    record, end = read(prefix + body, len(prefix))
    expected, expected_end = _fastavro(parsed, prefix + body, len(prefix))
    assert _same(record, expected), (record, expected)
    assert end == expected_end == len(prefix) + len(body)


def test_nan_infinities_and_nulls_read_like_fastavro() -> None:
    record = {
        "nothing": None,
        "flag": True,
        "small": -(2**31),
        "big": -(2**63),
        "ratio": float("-inf"),
        "amount": float("nan"),
        "blob": b"",
        "text": "",
        "color": "B",
        "tag": b"\x00\xff\x00",
        "note": None,
        "score": None,
        "last": None,
    }
    read = compile_reader(ALL_TYPES)
    assert read is not None
    got, _ = read(_body(ALL_TYPES, record), 0)
    assert _same(got, _fastavro(ALL_TYPES, _body(ALL_TYPES, record), 0)[0])
    assert math.isnan(got["amount"])
    assert (got["note"], got["score"], got["last"]) == (None, None, None)


# ------------------------------------------------------------------ arbitrary bytes


def _mangled(parsed: Any) -> st.SearchStrategy[bytes]:
    """Bytes near valid bodies (cut, extended, one byte changed) and random bytes."""
    bodies = _records(parsed).map(lambda r: _body(parsed, r))

    def cut(body: bytes) -> st.SearchStrategy[bytes]:
        return st.integers(0, len(body)).map(lambda n: body[:n])

    def flip(body: bytes) -> st.SearchStrategy[bytes]:
        if not body:
            return st.just(body)
        return st.tuples(st.integers(0, len(body) - 1), st.integers(0, 255)).map(
            lambda t: body[: t[0]] + bytes([t[1]]) + body[t[0] + 1 :]
        )

    return st.one_of(
        st.binary(max_size=80),
        st.lists(
            st.sampled_from([0x00, 0x01, 0x02, 0x7F, 0x80, 0xFF, 0xC3, 0xE9]), max_size=40
        ).map(bytes),
        bodies.flatmap(cut),
        bodies.flatmap(flip),
        st.tuples(bodies, st.binary(min_size=1, max_size=8)).map(lambda t: t[0] + t[1]),
    )


@pytest.mark.parametrize("parsed", [ALL_TYPES, UNIONS], ids=["all-types", "unions"])
@PROPERTY
@given(data=st.data())
def test_any_bytes_fail_or_succeed_like_fastavro(parsed: Any, data: st.DataObject) -> None:
    read = compile_reader(parsed)
    assert read is not None
    body = data.draw(_mangled(parsed), label="body")
    ours = _outcome(read, body, 0)
    assert _same_outcome(ours, _outcome(_fastavro, parsed, body, 0)), ours


@PROPERTY
@given(body=st.lists(st.integers(0x80, 0xFF), max_size=30).map(bytes), last=st.integers(0, 0x7F))
def test_long_varints_wrap_like_fastavro(body: bytes, last: int) -> None:
    # fastavro's C reader takes varints of any length and wraps past 64 bits.
    parsed = parse_schema(
        {"type": "record", "name": "L", "fields": [{"name": "v", "type": "long"}]}
    )
    read = compile_reader(parsed)
    assert read is not None
    data = body + bytes([last])
    assert read(data, 0) == _fastavro(parsed, data, 0)
    assert _outcome(read, body, 0) == _outcome(_fastavro, parsed, body, 0) == ("error", "truncated")


def _codec_outcome(topic: str, data: bytes) -> tuple[str, Any]:
    try:
        return "ok", CODEC.decode(topic, data)
    except DecodeError as err:
        return "error", err.kind


def _fastavro_codec_outcome(topic: str, data: bytes) -> tuple[str, Any]:
    """What the codec gave before the compiled reader: fastavro, mapped by kind."""
    contract = CODEC.reader(topic)
    kind, result = _outcome(_fastavro, contract.parsed, data, 10)
    if kind == "error":
        return kind, result
    record, end = result
    if end != len(data):
        return "error", "schema_mismatch"
    if contract.out_of_range(record) is not None:
        return "error", "out_of_range"
    return "ok", record


@pytest.mark.parametrize("contract", load_contracts(), ids=lambda c: c.topic)
@PROPERTY
@given(data=st.data())
def test_codec_decodes_any_body_like_the_fastavro_path(contract: Any, data: st.DataObject) -> None:
    body = data.draw(_mangled(contract.parsed), label="body")
    framed = SINGLE_OBJECT_MAGIC + contract.fingerprint + body
    ours = _codec_outcome(contract.topic, framed)
    oracle = _fastavro_codec_outcome(contract.topic, framed)
    assert ours[0] == oracle[0], (ours, oracle)
    assert _same(ours[1], oracle[1]), (ours, oracle)


@pytest.mark.parametrize(
    ("body", "error", "kind"),
    [
        (b"", EOFError, "truncated"),
        (b"\x80", EOFError, "truncated"),  # cut inside a varint
        (b"\x48abc", EOFError, "truncated"),  # string of 36 bytes, 3 there
        (b"\x03abc", EOFError, "truncated"),  # negative string length
        (b"\x04\xff\xfe", UnicodeDecodeError, "schema_mismatch"),
    ],
)
def test_bad_click_bodies_raise_what_fastavro_raises(
    body: bytes, error: type[Exception], kind: str
) -> None:
    contract = CODEC.reader("clicks")
    read = compile_reader(contract.parsed)
    assert read is not None
    with pytest.raises(error):
        read(body, 0)
    with pytest.raises(DecodeError) as info:
        CODEC.decode("clicks", SINGLE_OBJECT_MAGIC + contract.fingerprint + body)
    assert info.value.kind == kind


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("note", b"\x04"),  # branch 2 of a 2-branch union
        ("score", b"\x07"),  # branch -4 of a 3-branch union
        ("color", b"\x06"),  # symbol 3 of 3
    ],
)
def test_bad_union_branch_or_enum_index_is_a_list_index_error(field: str, body: bytes) -> None:
    parsed = parse_schema(
        {
            "type": "record",
            "name": "One",
            "fields": [f for f in ALL_TYPES["fields"] if f["name"] == field],
        }
    )
    read = compile_reader(parsed)
    assert read is not None
    with pytest.raises(IndexError, match="list index out of range"):
        read(body, 0)
    with pytest.raises(IndexError, match="list index out of range"):  # the judge agrees
        _fastavro(parsed, body, 0)


@pytest.mark.parametrize(
    ("field", "body", "value"),
    [
        ("note", b"\x01\x02a", "a"),  # branch -1: the last one
        ("score", b"\x05", None),  # branch -3 of 3: the first one
        ("color", b"\x01", "B"),  # symbol -1: the last one
    ],
)
def test_negative_indexes_count_from_the_end_like_fastavro(
    field: str, body: bytes, value: Any
) -> None:
    parsed = parse_schema(
        {
            "type": "record",
            "name": "One",
            "fields": [f for f in ALL_TYPES["fields"] if f["name"] == field],
        }
    )
    read = compile_reader(parsed)
    assert read is not None
    assert read(body, 0) == _fastavro(parsed, body, 0) == ({field: value}, len(body))


# ------------------------------------------------------------------ which path runs


def test_the_codec_reads_its_own_contracts_without_fastavro(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_fastavro(*args: Any) -> Any:
        raise AssertionError("fastavro was used")

    click = {"event_id": "e", "user_id": 7, "item_id": 3, "page": "home", "event_time": 1}
    data = CODEC.encode("clicks", click)
    monkeypatch.setattr(codec_module, "schemaless_reader", no_fastavro)
    assert CODEC.decode("clicks", data) == click
    # Negative control: a schema the compiled reader does not handle goes to fastavro.
    tags = parse_contract(
        {
            "type": "record",
            "name": "Tagged",
            "featurestream.topic": "tagged",
            "featurestream.key": "user_id",
            "fields": [
                {"name": "user_id", "type": "long"},
                {"name": "tags", "type": {"type": "array", "items": "string"}},
            ],
        }
    )
    codec = AvroCodec((tags,))
    with pytest.raises(AssertionError, match="fastavro was used"):
        codec.decode("tagged", codec.encode("tagged", {"user_id": 1, "tags": ["a"]}))


_UNSUPPORTED: list[Any] = [
    pytest.param({"type": "array", "items": "string"}, id="array"),
    pytest.param({"type": "map", "values": "long"}, id="map"),
    pytest.param(
        {"type": "record", "name": "Inner", "fields": [{"name": "x", "type": "long"}]}, id="record"
    ),
    pytest.param(["null", {"type": "array", "items": "long"}], id="union-with-array"),
    pytest.param({"type": "long", "logicalType": "timestamp-millis"}, id="logical-type"),
]


@pytest.mark.parametrize("ftype", _UNSUPPORTED)
def test_unsupported_schemas_fall_back_to_fastavro(ftype: Any) -> None:
    parsed = parse_schema(
        {"type": "record", "name": "U", "fields": [{"name": "f", "type": ftype}]},
        _write_hint=False,
    )
    assert compile_reader(parsed) is None


def test_named_type_reference_falls_back_to_fastavro() -> None:
    parsed = parse_schema(
        {
            "type": "record",
            "name": "Twice",
            "fields": [
                {"name": "a", "type": {"type": "enum", "name": "E", "symbols": ["X"]}},
                {"name": "b", "type": "E"},
            ],
        }
    )
    assert compile_reader(parsed) is None
    assert compile_reader(parse_schema("long")) is None
