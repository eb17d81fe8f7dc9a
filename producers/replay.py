"""Events read back from files (``featurestream produce --from``), refused at the edge.

A replay is read whole and checked before anything is sent: a file that is not
events of the topic is one :class:`~featurestream.errors.ConfigError` naming the file,
the column or line, and what was expected. Accepted inputs:

* JSON Lines (``.jsonl``, ``.json``, ``.ndjson``): one event record per line, or the
  lines ``--dry-run`` writes (``{"topic", "key", "kind", "record" | "value_b64"}``).
* Parquet (``.parquet``), or a directory of them (read in name order): one column per
  field of the topic's schema and no others. Integer columns for ``long`` fields, string
  columns for ``string`` fields, integer or floating columns for ``double`` fields, no
  nulls. ``event_time`` is int epoch milliseconds, or a timestamp *with* a timezone
  (converted to epoch milliseconds; finer units are truncated). A timestamp without a
  timezone is refused: featurestream times are UTC instants, and a naive one could be
  any zone.

featurestream's own offline-log files (``{view}/date=YYYY-MM-DD/part-*.parquet``) hold
what one view applied, with that view's columns: they are named as such and refused.

Values inside the records (ids, types, ranges) are checked by the producer, which
encodes every record before the first is sent (:meth:`EventProducer.encode`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurestream.errors import ConfigError
from featurestream.events import Contract, contract_for_topic

from .synthetic import Emission

__all__ = ["ReplayRow", "read_replay"]

_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
# The offline log's layout (streams.offline.log): engine files and backfill files.
_LOG_FILE = re.compile(r"^(part-\d{9}(-\d+of\d+)?|backfill-.+-\d{5})\.parquet$")
_LOG_DAY = re.compile(r"^date=\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class ReplayRow:
    """One message of a replay and where it came from (``line 3``, ``row 7 of a.parquet``)."""

    where: str
    emission: Emission


def read_replay(path: Path, topic: str, shift_to_ms: int | None) -> list[ReplayRow]:
    """The messages of a replay file (or directory of Parquet files), in file order.

    Args:
        path: A JSON Lines or Parquet file, or a directory of Parquet files.
        topic: Topic of plain records (``--dry-run`` lines carry their own).
        shift_to_ms: When set, event times are shifted so that the newest is this time
            (gaps between events are kept); otherwise the original times are kept.

    Raises:
        ConfigError: one line naming ``path`` and what is wrong with it.
    """
    contract = contract_for_topic(topic)
    if path.is_dir():
        try:
            files = _parquet_files(path)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
        rows = [row for file in files for row in _parquet_rows(file, contract)]
    elif not path.exists():
        raise ConfigError(f"{path}: no such file or directory")
    elif path.suffix == ".parquet":
        rows = _parquet_rows(path, contract)
    elif path.suffix in _JSON_SUFFIXES:
        rows = _json_rows(path, contract)
    else:
        raise ConfigError(
            f"{path}: unknown format {path.suffix or '(no suffix)'!r}; use a .jsonl or "
            ".parquet file, or a directory of .parquet files"
        )
    return _shifted(rows, shift_to_ms)


def _shifted(rows: list[ReplayRow], shift_to_ms: int | None) -> list[ReplayRow]:
    if shift_to_ms is None:
        return rows
    times = [t for t in (_event_time(r) for r in rows) if t is not None]
    shift = shift_to_ms - max(times) if times else 0
    out = []
    for row in rows:
        t, e = _event_time(row), row.emission
        if t is not None and e.record is not None:
            e = Emission(e.topic, e.key, e.kind, record={**e.record, "event_time": t + shift})
        out.append(ReplayRow(row.where, e))
    return out


def _event_time(row: ReplayRow) -> int | None:
    # Only int times move; anything else is refused by the producer's check, unshifted.
    record = row.emission.record
    t = record.get("event_time") if record is not None else None
    return t if type(t) is int else None


def _key(contract: Contract, record: dict[str, Any]) -> bytes:
    return str(record.get(contract.key_field, "")).encode()


# ---------------------------------------------------------------------- JSON Lines
def _json_rows(path: Path, contract: Contract) -> list[ReplayRow]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"{path}:{number}: not JSON ({exc.msg} at column {exc.colno})"
            ) from exc
        rows.append(ReplayRow(where, _json_emission(obj, contract, f"{path}:{number}")))
    return rows


def _json_emission(obj: Any, contract: Contract, where: str) -> Emission:
    topic = contract.topic
    if not isinstance(obj, dict):
        raise ConfigError(
            f"{where}: expected a JSON object (an event, or a --dry-run line), "
            f"got {type(obj).__name__}"
        )
    if "record" not in obj and "value_b64" not in obj:
        return Emission(topic, _key(contract, obj), "event", record=obj)
    row_topic, kind, key = obj.get("topic", topic), obj.get("kind", "event"), obj.get("key", "")
    for name, value in (("topic", row_topic), ("kind", kind), ("key", key)):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string, got {value!r}")
    if "record" in obj:
        record = obj["record"]
        if not isinstance(record, dict):
            raise ConfigError(f"{where}: record must be a JSON object, got {type(record).__name__}")
        return Emission(row_topic, key.encode(), kind, record=record)
    encoded = obj["value_b64"]
    try:
        value = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
    except binascii.Error:
        value = None
    if value is None:
        raise ConfigError(f"{where}: value_b64 must be a base64 string, got {encoded!r}")
    return Emission(row_topic, key.encode(), kind if "kind" in obj else "bad", value=value)


# ---------------------------------------------------------------------- Parquet
def _parquet_files(folder: Path) -> list[Path]:
    if any(_LOG_DAY.match(p.name) for p in folder.iterdir()) or any(
        _LOG_DAY.match(p.name) for p in folder.glob("*/date=*")
    ):
        raise ConfigError(
            f"{folder}: a featurestream offline log folder (date=YYYY-MM-DD/ inside): it "
            "holds what the views applied, not topic events; replay a --dry-run .jsonl "
            "file or a Parquet file of the topic's fields"
        )
    files = sorted(
        p for p in folder.iterdir() if p.suffix == ".parquet" and not p.name.startswith(".")
    )
    if not files:
        raise ConfigError(
            f"{folder}: a directory without .parquet files; give a .jsonl or .parquet "
            "file, or a directory of .parquet files"
        )
    return files


def _refuse_offline_log(path: Path) -> None:
    if _LOG_FILE.match(path.name) and _LOG_DAY.match(path.parent.name):
        raise ConfigError(
            f"{path}: a featurestream offline-log file (view {path.parent.parent.name}, "
            f"{path.parent.name}): the events one view applied, with that view's columns "
            "only, not topic events; replay a --dry-run .jsonl file or a Parquet file of "
            "the topic's fields"
        )


def _parquet_rows(path: Path, contract: Contract) -> list[ReplayRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _refuse_offline_log(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not a readable Parquet file ({detail})") from exc
    columns = _checked_columns(path, table, contract)
    name = path.name
    return [
        ReplayRow(
            f"row {i} of {name}", Emission(contract.topic, _key(contract, r), "event", record=r)
        )
        for i, r in enumerate(_records(columns), start=1)
    ]


def _records(columns: dict[str, list[Any]]) -> Iterable[dict[str, Any]]:
    names = list(columns)
    for values in zip(*columns.values(), strict=True):
        yield dict(zip(names, values, strict=True))


def _expected(contract: Contract) -> str:
    return ", ".join(f"{f['name']} ({_describe(f)})" for f in contract.schema_json["fields"])


_ARROW_NAMES = {"long": "int64", "int": "int32", "double": "double", "float": "float"}


def _describe(field: dict[str, Any]) -> str:
    ftype = field["type"]
    avro = str(ftype["type"] if isinstance(ftype, dict) else ftype)
    logical = ftype.get("logicalType") if isinstance(ftype, dict) else None
    if logical == "timestamp-millis":
        return "int64 epoch milliseconds, or a timestamp with a timezone"
    if logical == "uuid":
        return "string, a UUID"
    return _ARROW_NAMES.get(avro, avro)


def _checked_columns(path: Path, table: Any, contract: Contract) -> dict[str, list[Any]]:
    fields = {f["name"]: f for f in contract.schema_json["fields"]}
    present = list(table.column_names)
    missing = [n for n in fields if n not in present]
    extra = [n for n in present if n not in fields]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no column {', '.join(missing)}")
        if extra:
            parts.append(f"columns {', '.join(extra)} that are not {contract.topic} fields")
        raise ConfigError(
            f"{path}: {' and '.join(parts)}; {contract.topic} events have the columns "
            f"{_expected(contract)}"
        )
    return {
        name: _column_values(path, contract.topic, field, table.column(name))
        for name, field in fields.items()
    }


def _column_values(path: Path, topic: str, field: dict[str, Any], column: Any) -> list[Any]:
    """The values of one column as the field's Python values, or why they cannot be."""
    import pyarrow as pa
    import pyarrow.compute as pc

    name, arrow_type = field["name"], column.type
    ftype = field["type"]
    avro = ftype["type"] if isinstance(ftype, dict) else ftype
    logical = ftype.get("logicalType") if isinstance(ftype, dict) else None
    why = ""
    if logical == "timestamp-millis" and pa.types.is_timestamp(arrow_type):
        if arrow_type.tz is None:
            why = (
                " without a timezone (featurestream times are UTC instants: store it with "
                "tz=UTC, e.g. pandas .dt.tz_localize('UTC'))"
            )
        else:
            # Parquet stores ms, us or ns: to ms, sub-millisecond digits dropped.
            column = pc.cast(column, pa.timestamp("ms", tz=arrow_type.tz), safe=False)
            column = column.cast(pa.int64())
    elif avro in ("long", "int"):
        why = "" if pa.types.is_integer(arrow_type) else " "
    elif avro in ("double", "float"):
        numeric = pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type)
        why = "" if numeric else " "
    elif avro == "string":
        value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
        text = pa.types.is_string(value_type) or pa.types.is_large_string(value_type)
        why = "" if text else " "
    elif avro == "boolean":
        why = "" if pa.types.is_boolean(arrow_type) else " "
    else:  # a type no checked-in schema uses
        why = f" and an Avro {avro} field cannot be replayed from Parquet"
    if why:
        raise ConfigError(
            f"{path}: column {name} is {arrow_type}{why.rstrip()}; {topic} events need "
            f"{_describe(field)}"
        )
    if column.null_count:
        raise ConfigError(
            f"{path}: column {name} has {column.null_count} null values; every {topic} "
            f"event needs a {name}"
        )
    values: list[Any] = column.to_pylist()
    return values
