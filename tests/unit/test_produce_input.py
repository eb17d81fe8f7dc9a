"""Input that should be refused is refused at the edge, in one line, and counted.

* ``event_id``: the schemas declare it a ``uuid``. Producers (the dataclasses and
  :class:`EventProducer`) refuse an id that is not one; the engine dead-letters such an
  event (``invalid_id``) instead of counting events that share a blank id once.
* ``event_time``: an int of epoch milliseconds; a float is refused, never rounded.
* ``featurestream produce --from``: a file that is not the topic's events (wrong column
  types, other columns, a naive timestamp, featurestream's own offline log, not Parquet
  at all) is one ConfigError naming the file and the column; a timestamp with a timezone
  is converted to epoch milliseconds; a directory is its Parquet files in name order.

Judges: the checked-in schemas (through the contracts), the offline log's own writer
(``streams.offline.log``), and the values the tests wrote. Each protection has its
negative control: switched off, the bad input passes.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import producers.events
import producers.producer
import streams.core.classify
from featurestream.errors import ConfigError, DecodeError, InvalidEvent
from featurestream.events import AvroCodec, contract_for_topic, is_uuid, load_contracts
from producers import Click, EventProducer, Purchase
from producers.events import check_record
from producers.replay import read_replay
from streams.core.classify import PartitionClassifier, TopicView
from streams.offline.log import ViewLogWriter, write_backfill
from tests.support import SPEND_VIEW

CODEC = AvroCodec(load_contracts())
T0 = 1_790_000_000_000


def _click(event_id: str = "", t: int = T0, user: int = 7) -> dict[str, Any]:
    return {
        "event_id": event_id or str(uuid.uuid4()),
        "user_id": user,
        "item_id": 3,
        "page": "home",
        "event_time": t,
    }


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip() == text
    return text


# ------------------------------------------------------------------ event ids


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2c1f5a0e-7e0b-4a53-9c1a-3b7d8f1e2a44", True),
        ("2C1F5A0E-7E0B-4A53-9C1A-3B7D8F1E2A44", True),
        (str(uuid.UUID(int=0)), True),
        ("", False),
        ("e1", False),
        ("null", False),
        ("2c1f5a0e7e0b4a539c1a3b7d8f1e2a44", False),  # no dashes
        ("{2c1f5a0e-7e0b-4a53-9c1a-3b7d8f1e2a44}", False),
        ("2c1f5a0e-7e0b-4a53-9c1a-3b7d8f1e2a44\n", False),
        ("2c1f5a0e-7e0b-4a53-9c1a-3b7d8f1e2a4g", False),
        (42, False),
        (None, False),
    ],
)
def test_is_uuid(value: object, ok: bool) -> None:
    assert is_uuid(value) is ok


def test_every_contract_declares_event_id_a_uuid() -> None:
    for contract in load_contracts():
        assert contract.uuid_fields == ("event_id",)


@pytest.mark.parametrize("event_id", ["", "e1", "null", " "])
def test_the_producer_refuses_an_event_id_that_is_not_a_uuid(event_id: str) -> None:
    producer = EventProducer("127.0.0.1:1")  # encode does no I/O
    with pytest.raises(InvalidEvent) as info:
        producer.encode("clicks", {**_click(), "event_id": event_id})
    assert info.value.kind == "invalid_id"
    assert _one_line(info.value).startswith(f"invalid_id: event_id={event_id!r} is not a UUID")
    assert producer.stats.sent == 0


def test_without_the_id_check_the_producer_encodes_a_blank_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Negative control: the codec alone carries any string.
    monkeypatch.setattr(producers.producer, "check_record", lambda contract, record: None)
    _key, value = EventProducer("127.0.0.1:1").encode("clicks", {**_click(), "event_id": ""})
    assert CODEC.decode("clicks", value)["event_id"] == ""


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("event_id", "", "invalid_id"),
        ("event_id", "not-a-uuid", "invalid_id"),
        ("event_time", 1_790_000_000_000.0, "schema_mismatch"),
        ("event_time", 1_790_000_000.5, "schema_mismatch"),
        ("event_time", True, "schema_mismatch"),
        ("event_time", -1, "out_of_range"),
    ],
)
def test_an_event_dataclass_that_breaks_its_contract_cannot_be_made(
    field: str, value: Any, kind: str
) -> None:
    purchase = Purchase(str(uuid.uuid4()), 1, 2, 9.5, "EUR", T0).to_record()
    for make, record in ((Click, _click()), (Purchase, purchase)):
        with pytest.raises(InvalidEvent) as info:
            make(**{**record, field: value})
        assert info.value.kind == kind
        assert field in _one_line(info.value)


def test_a_float_event_time_is_refused_never_rounded() -> None:
    with pytest.raises(InvalidEvent) as info:
        check_record(contract_for_topic("clicks"), {**_click(), "event_time": 1_790_000_000.25})
    assert _one_line(info.value) == (
        "schema_mismatch: event_time must be an int of epoch milliseconds (UTC), "
        "got float 1790000000.25"
    )


def _classify(records: list[dict[str, Any]]) -> Any:
    classifier = PartitionClassifier(
        "clicks", 0, CODEC, "event_time", [TopicView("v", 30_000)], 30_000
    )
    messages = [(i, CODEC.encode("clicks", r), T0 + i) for i, r in enumerate(records)]
    return classifier.classify(messages)


@pytest.mark.parametrize("checked", [True, False])
def test_the_engine_dead_letters_an_event_without_a_usable_id(
    monkeypatch: pytest.MonkeyPatch, checked: bool
) -> None:
    if not checked:  # negative control: ids are not checked (what the engine did before)
        monkeypatch.setattr(streams.core.classify, "is_uuid", lambda value: True)
    good = [_click(t=T0 + i) for i in range(2)]
    blank = [_click(t=T0 + 10 + i) | {"event_id": ""} for i in range(3)]
    other = [_click(t=T0 + 20) | {"event_id": "e1"}]
    batch = _classify([*good, *blank, *other])
    if checked:
        assert batch.accepted == good
        assert [r.kind for r in batch.rejected] == ["invalid_id"] * 4
        assert [r.offset for r in batch.rejected] == [2, 3, 4, 5]
        assert batch.rejected[0].reason.startswith("event_id='' is not a UUID")
        assert batch.duplicates == 0
    else:  # three blank ids counted as one event, the other two dropped as its copies
        assert batch.accepted == [*good, blank[0], other[0]]
        assert batch.duplicates == 2
        assert batch.rejected == []


def test_a_blank_id_is_dead_lettered_even_where_the_schema_does_not_say_uuid() -> None:
    from streams.core.classify import check_event_id

    with pytest.raises(DecodeError) as info:
        check_event_id({"event_id": ""}, None)
    assert info.value.kind == "invalid_id"
    check_event_id({"event_id": "e1"}, None)  # any non-empty id where no uuid is declared


# ------------------------------------------------------------------ replay files


def _table(rows: list[dict[str, Any]], **types: pa.DataType) -> pa.Table:
    columns = {k: [r[k] for r in rows] for k in rows[0]}
    return pa.table(
        {k: pa.array(v, type=types.get(k)) for k, v in columns.items()},
    )


def _write(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _refused(path: Path, topic: str = "clicks") -> str:
    with pytest.raises(ConfigError) as info:
        read_replay(path, topic, None)
    return _one_line(info.value)


ROWS = [_click(t=T0 + i, user=10 + i) for i in range(3)]


def test_a_parquet_file_of_the_topic_fields_is_replayed_as_written(tmp_path: Path) -> None:
    rows = read_replay(_write(tmp_path / "a.parquet", _table(ROWS)), "clicks", None)
    assert [r.emission.record for r in rows] == ROWS
    assert [r.emission.key for r in rows] == [b"10", b"11", b"12"]
    assert [r.where for r in rows] == [
        "row 1 of a.parquet",
        "row 2 of a.parquet",
        "row 3 of a.parquet",
    ]


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", ["UTC", "Europe/Dublin"])
def test_a_timestamp_with_a_timezone_becomes_epoch_milliseconds(
    tmp_path: Path, unit: str, tz: str
) -> None:
    times = [
        datetime(2026, 11, 23, 10, 0, s, 250_000 if unit != "s" else 0, tzinfo=UTC)
        for s in range(3)
    ]
    table = _table(ROWS).set_column(
        4, "event_time", pa.array(times, type=pa.timestamp(unit, tz=tz))
    )
    rows = read_replay(_write(tmp_path / "t.parquet", table), "clicks", None)
    expected = [int(t.timestamp() * 1000) for t in times]
    assert [r.emission.record["event_time"] for r in rows if r.emission.record] == expected


def test_a_timestamp_without_a_timezone_is_refused(tmp_path: Path) -> None:
    times = [datetime(2026, 11, 23, 10, 0, s) for s in range(3)]  # noqa: DTZ001 - the input
    table = _table(ROWS).set_column(4, "event_time", pa.array(times, type=pa.timestamp("ms")))
    message = _refused(_write(tmp_path / "naive.parquet", table))
    assert "column event_time is timestamp[ms] without a timezone" in message
    assert "tz=UTC" in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"user_id": pa.array(["1", "2", "3"])},
            "column user_id is string; clicks events need int64",
        ),
        (
            {"item_id": pa.array([1.0, 2.0, 3.0])},
            "column item_id is double; clicks events need int64",
        ),
        (
            {"event_time": pa.array([float(T0)] * 3)},
            "column event_time is double; clicks events need int64 epoch milliseconds, "
            "or a timestamp with a timezone",
        ),
        ({"page": pa.array([1, 2, 3])}, "column page is int64; clicks events need string"),
        ({"user_id": pa.array([1, None, 3])}, "column user_id has 1 null values"),
        (
            {"event_time": pa.array([date(2026, 1, 1)] * 3)},
            "column event_time is date32[day]",
        ),
    ],
)
def test_a_column_of_the_wrong_type_is_named_with_the_type_expected(
    tmp_path: Path, change: dict[str, pa.Array], expected: str
) -> None:
    table = _table(ROWS)
    for name, values in change.items():
        table = table.set_column(table.column_names.index(name), name, values)
    assert expected in _refused(_write(tmp_path / "wrong.parquet", table))


def test_columns_that_are_not_the_topic_fields_are_named(tmp_path: Path) -> None:
    unrelated = _refused(_write(tmp_path / "u.parquet", pa.table({"a": [1], "b": ["x"]})))
    assert unrelated.startswith(
        f"{tmp_path / 'u.parquet'}: no column event_id, user_id, item_id, page, event_time "
        "and columns a, b that are not clicks fields; clicks events have the columns "
        "event_id (string, a UUID), user_id (int64)"
    )
    extra = _refused(_write(tmp_path / "e.parquet", _table([{**r, "score": 1.5} for r in ROWS])))
    assert "columns score that are not clicks fields" in extra and "no column" not in extra
    missing = _refused(_write(tmp_path / "m.parquet", _table(ROWS).drop_columns(["page"])))
    assert "no column page;" in missing


def test_a_double_field_takes_integer_columns(tmp_path: Path) -> None:
    purchase = Purchase(str(uuid.uuid4()), 1, 2, 9.0, "EUR", T0).to_record()
    table = _table([purchase]).set_column(3, "amount", pa.array([9], pa.int64()))
    rows = read_replay(_write(tmp_path / "p.parquet", table), "purchases", None)
    assert rows[0].emission.record == {**purchase, "amount": 9}


def test_offline_log_files_are_named_and_refused(tmp_path: Path) -> None:
    root = tmp_path / "offline_log"
    records = [
        {"event_id": str(uuid.uuid4()), "user_id": 1, "item_id": 2, "amount": 3.0, "event_time": T0}
    ]
    (backfill,) = write_backfill(root, SPEND_VIEW, records, "run1")
    writer = ViewLogWriter(root, SPEND_VIEW, None, "")
    writer.write(records)
    writer.close()
    (engine_file,) = (root / SPEND_VIEW.name).glob("date=*/part-*.parquet")
    for path in (backfill, engine_file):
        message = _refused(path, "purchases")
        assert f"{path}: a featurestream offline-log file (view spend, date=" in message
    for folder in (root, root / SPEND_VIEW.name):
        assert "a featurestream offline log folder" in _refused(folder, "purchases")


def test_without_the_layout_check_an_offline_log_file_is_refused_by_its_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Negative control: what names the file is the layout check; its columns alone
    # (view columns, a timestamp event_time) are not the topic's.
    import producers.replay

    monkeypatch.setattr(producers.replay, "_refuse_offline_log", lambda path: None)
    records = [
        {"event_id": str(uuid.uuid4()), "user_id": 1, "item_id": 2, "amount": 3.0, "event_time": T0}
    ]
    (path,) = write_backfill(tmp_path / "log", SPEND_VIEW, records, "r")
    message = _refused(path, "purchases")
    assert "offline-log" not in message and "no column currency" in message


def test_a_directory_is_its_parquet_files_in_name_order(tmp_path: Path) -> None:
    _write(tmp_path / "d" / "b.parquet", _table(ROWS[1:]))
    _write(tmp_path / "d" / "a.parquet", _table(ROWS[:1]))
    (tmp_path / "d" / "notes.txt").write_text("not read")
    rows = read_replay(tmp_path / "d", "clicks", None)
    assert [r.emission.record for r in rows] == ROWS
    assert rows[0].where == "row 1 of a.parquet" and rows[1].where == "row 1 of b.parquet"
    (tmp_path / "empty").mkdir()
    assert "a directory without .parquet files" in _refused(tmp_path / "empty")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("x.parquet", b"not parquet at all", "not a readable Parquet file (Could not open"),
        ("x.parquet", b"", "not a readable Parquet file"),
        ("x.csv", b"a,b\n", "unknown format '.csv'; use a .jsonl or .parquet file"),
        ("x.jsonl", b'{"event_id": 1\n', "x.jsonl:1: not JSON"),
        ("x.jsonl", b"[1, 2]\n", "x.jsonl:1: expected a JSON object"),
        ("x.jsonl", b'{"record": [1]}\n', "x.jsonl:1: record must be a JSON object"),
        ("x.jsonl", b'{"value_b64": "!!"}\n', "x.jsonl:1: value_b64 must be a base64 string"),
        ("x.jsonl", b'{"topic": 5, "record": {}}\n', "x.jsonl:1: topic must be a string"),
        ("x.jsonl", b"\xff\xfe{}\n", "not UTF-8 text"),
    ],
)
def test_a_file_that_is_not_events_is_one_line(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert expected in _refused(path)


def test_a_missing_path_is_one_line(tmp_path: Path) -> None:
    assert (
        _refused(tmp_path / "nope.parquet")
        == f"{tmp_path / 'nope.parquet'}: no such file or directory"
    )


def test_json_records_keep_their_values_for_the_producer_to_judge(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    lines = [ROWS[0], {**ROWS[1], "event_time": T0 / 1000}, {**ROWS[2], "event_id": ""}]
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    rows = read_replay(path, "clicks", T0 + 1_000)
    records = [r.emission.record for r in rows]
    # shifted so that the newest int time (the third's) is the one asked for
    assert records[0] == {**ROWS[0], "event_time": T0 + 998}
    assert records[2] == {**ROWS[2], "event_id": "", "event_time": T0 + 1_000}
    assert records[1] == {**ROWS[1], "event_time": T0 / 1000}  # not rounded, not shifted
    producer = EventProducer("127.0.0.1:1")
    assert producer.encode("clicks", records[0])
    for record, kind in ((records[1], "schema_mismatch"), (records[2], "invalid_id")):
        with pytest.raises(InvalidEvent) as info:
            producer.encode("clicks", record)
        assert info.value.kind == kind


def test_dry_run_lines_are_read_back(tmp_path: Path) -> None:
    path = tmp_path / "dry.jsonl"
    path.write_text(
        json.dumps({"topic": "clicks", "key": "10", "kind": "late", "record": ROWS[0]})
        + "\n"
        + json.dumps({"topic": "clicks", "key": "11", "kind": "empty", "value_b64": ""})
        + "\n"
    )
    late, bad = (r.emission for r in read_replay(path, "purchases", None))
    assert (late.topic, late.key, late.kind, late.record) == ("clicks", b"10", "late", ROWS[0])
    assert (bad.topic, bad.key, bad.kind, bad.value) == ("clicks", b"11", "empty", b"")


def test_check_record_is_what_the_dataclasses_use(monkeypatch: pytest.MonkeyPatch) -> None:
    # Negative control of the dataclass check: switched off, a blank id is an event.
    monkeypatch.setattr(producers.events, "check_record", lambda contract, record: None)
    assert Click("", 1, 2, "home", T0).event_id == ""
