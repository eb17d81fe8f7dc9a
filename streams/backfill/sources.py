"""Historical events for a backfill: Parquet or JSON Lines files, or a Kafka replay.

Every source hands each event to a :class:`~streams.backfill.History` after the
same checks the stream applies: file rows are encoded and decoded with the
topic's contract (a row that does not fit is counted by reason, like a
dead letter), Kafka messages are decoded by the same codec and judged by the
same future-time rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featurestream.errors import ConfigError, EventError
from featurestream.events import AvroCodec, Contract

from ..core.classify import check_event_id, check_event_time
from ..kafka import replay
from ..offline.log import ARROW_TYPES
from .history import History

__all__ = ["EventSource", "FileEvents", "KafkaEvents", "topic_of_columns"]

_SUFFIXES = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_BATCH = 65_536


class EventSource(Protocol):
    """Where a backfill reads its events."""

    @property
    def description(self) -> str:
        """What is read, for messages."""
        ...

    def topics(self) -> tuple[str, ...]:
        """The topics whose events this source holds."""
        ...

    def feed(self, history: History, codec: AvroCodec) -> None:
        """Hand every event to ``history``."""
        ...


def topic_of_columns(columns: Sequence[str], contracts: Sequence[Contract], where: str) -> str:
    """The topic whose contract the column names fit: every field without a default present.

    When several contracts fit equally well, the one whose topic ``where`` (the file's
    path) names wins.

    Raises:
        ConfigError: when no contract fits, or several do equally well.
    """
    names = set(columns)
    fits = []
    for contract in contracts:
        required = {f["name"] for f in contract.parsed["fields"] if "default" not in f}
        if required <= names:
            fits.append((len(names & set(contract.field_names)), contract.topic))
    if not fits:
        known = {c.topic: list(c.field_names) for c in contracts}
        raise ConfigError(
            f"{where}: columns {sorted(names)} fit no event contract; expected the fields of "
            f"one of {known}"
        )
    fits.sort(reverse=True)
    best = [topic for score, topic in fits if score == fits[0][0]]
    named = [topic for topic in best if topic in Path(where).name]
    if len(best) > 1 and len(named) == 1:
        return named[0]  # same fields (clicks and impressions): the file is named after one
    if len(best) > 1:
        raise ConfigError(
            f"{where}: columns fit several event contracts {[t for _, t in fits]}; "
            "name the topic with --topic"
        )
    return fits[0][1]


class FileEvents:
    """Events from Parquet (``.parquet``) or JSON Lines (``.jsonl``, ``.ndjson``, ``.json``).

    Args:
        paths: Files, or folders whose files of those kinds are all read (sorted).
        contracts: The event contracts (to tell a file's topic from its columns).
        topic: The topic every file holds; None to infer it per file.
    """

    def __init__(
        self, paths: Sequence[Path], contracts: Sequence[Contract], topic: str | None = None
    ) -> None:
        self._contracts = tuple(contracts)
        self._topic = topic
        files: list[Path] = []
        for path in paths:
            if path.is_dir():
                files += sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
            elif path.is_file():
                if path.suffix not in _SUFFIXES:
                    raise ConfigError(
                        f"{path}: unknown file kind {path.suffix!r}; expected one of "
                        f"{sorted(_SUFFIXES)}"
                    )
                files.append(path)
            else:
                raise ConfigError(f"{path}: no such file or folder")
        if not files:
            raise ConfigError(
                f"no event files in {[str(p) for p in paths]}; expected {sorted(_SUFFIXES)}"
            )
        self._files = files
        self._file_topics = {f: self._topic_of(f) for f in files}

    @property
    def description(self) -> str:
        return ", ".join(str(f) for f in self._files[:3]) + (
            f" and {len(self._files) - 3} more files" if len(self._files) > 3 else ""
        )

    def topics(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self._file_topics.values()))

    def _topic_of(self, path: Path) -> str:
        if self._topic is not None:
            return self._topic
        if _SUFFIXES[path.suffix] == "parquet":
            try:
                columns = pq.read_schema(path).names
            except (pa.ArrowInvalid, OSError) as exc:
                raise ConfigError(f"{path}: not a readable Parquet file: {exc}") from exc
        else:
            with path.open("rb") as fh:
                first = next((line for line in fh if line.strip()), b"{}")
            try:
                parsed = orjson.loads(first)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"{path}: first line is not JSON: {exc}") from exc
            if not isinstance(parsed, dict):
                raise ConfigError(f"{path}: lines must be JSON objects, got {first[:80]!r}")
            columns = list(parsed)
        return topic_of_columns(columns, self._contracts, str(path))

    def feed(self, history: History, codec: AvroCodec) -> None:
        contracts = {c.topic: c for c in self._contracts}
        for path in self._files:
            topic = self._file_topics[path]
            contract = contracts[topic]
            for batch, checked in self._batches(path, contract):
                for row in batch:
                    if row is None:
                        history.reject("not_json")
                        continue
                    try:
                        # the rules of the stream: an id of its own, a type-checked record
                        record = row if checked else codec.decode(topic, codec.encode(topic, row))
                        check_event_id(record, contract)
                    except EventError as exc:
                        history.reject(exc.kind)
                        continue
                    history.add(topic, record)

    def _batches(
        self, path: Path, contract: Contract
    ) -> Iterator[tuple[list[dict[str, Any] | None], bool]]:
        """Batches of rows, each with whether it is already checked: a Parquet batch that
        passes the contract's checks as a whole (types, no nulls, bounds) needs no
        row-by-row check; any other is checked row by row (for the reasons)."""
        if _SUFFIXES[path.suffix] == "jsonl":
            for rows in _json_lines(path):
                yield rows, False
            return
        try:
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=_BATCH):
                plain = _plain(batch)
                checked = _checked(plain, contract)
                if checked is not None:
                    yield [*checked], True
                else:
                    yield plain.to_pylist(), False
        except (pa.ArrowInvalid, OSError) as exc:
            raise ConfigError(f"{path}: not a readable Parquet file: {exc}") from exc


def _same_kind(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether encoding accepts values of ``source`` for ``target`` as they are: integers
    for integer and floating fields, floats for floating ones, strings, booleans."""
    if pa.types.is_integer(target):
        return bool(pa.types.is_integer(source))
    if pa.types.is_floating(target):
        return bool(pa.types.is_integer(source) or pa.types.is_floating(source))
    if pa.types.is_string(target):
        return bool(pa.types.is_string(source) or pa.types.is_large_string(source))
    return bool(source == target)


def _checked(batch: pa.RecordBatch, contract: Contract) -> list[dict[str, Any]] | None:
    """The batch's records when every row fits ``contract``, else None (check row by row).

    The same rules as encoding each row: every field present, of its type (casts must
    be lossless), not null, and within its ``featurestream.min`` bound.
    """
    names = batch.schema.names
    columns = []
    for name, kind in contract.field_types.items():
        target = ARROW_TYPES.get(kind)
        if target is None or name not in names:
            return None
        column = batch.column(names.index(name))
        if column.null_count or not _same_kind(column.type, target):
            return None
        try:
            column = pc.cast(column, target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        columns.append(column)
    table = pa.Table.from_arrays(columns, names=list(contract.field_types))
    for name, minimum in contract.minimums:
        column = table.column(name)
        if pa.types.is_floating(column.type) and not pc.all(pc.is_finite(column)).as_py():
            return None
        if pc.any(pc.less(column, minimum)).as_py():
            return None
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def _plain(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Timestamp columns as epoch milliseconds (the contracts' ``timestamp-millis``)."""
    columns = []
    for column in batch.columns:
        if pa.types.is_timestamp(column.type):
            tz = column.type.tz or "UTC"
            # Sub-millisecond precision is truncated: event times are milliseconds.
            ms = pc.cast(column, pa.timestamp("ms", tz=tz), safe=False)
            columns.append(pc.cast(ms, pa.int64()))
        else:
            columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _json_lines(path: Path) -> Iterator[list[dict[str, Any] | None]]:
    batch: list[dict[str, Any] | None] = []
    with path.open("rb") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = None
            batch.append(row if isinstance(row, dict) else None)
            if len(batch) >= _BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


class KafkaEvents:
    """A replay of Kafka topics from a time on, to the end of every partition (what was
    produced before the replay started).

    Messages are read from the first one produced at ``from_ms - MAX_FUTURE_MS``
    (no event time can be further ahead of its produce time, so nothing in range
    is missed); without a time index the replay starts at the beginning.

    Args:
        bootstrap_servers: Kafka bootstrap servers.
        topics: Topics to replay.
        from_ms: Event times before this are not needed.
    """

    def __init__(self, bootstrap_servers: str, topics: Sequence[str], from_ms: int) -> None:
        self._bootstrap = bootstrap_servers
        self._topics = tuple(topics)
        self._from_ms = from_ms

    @property
    def description(self) -> str:
        return f"Kafka topics {list(self._topics)} at {self._bootstrap}"

    def topics(self) -> tuple[str, ...]:
        return self._topics

    def feed(self, history: History, codec: AvroCodec) -> None:
        for topic, (offset, value, produced_ms) in replay(
            self._bootstrap, self._topics, self._from_ms
        ):
            time_field = history.time_field(topic)
            try:
                record = codec.decode(topic, value, offset=offset)
                if time_field is not None:
                    check_event_time(record, time_field, produced_ms)
                check_event_id(record, codec.reader(topic))
            except EventError as exc:
                history.reject(exc.kind)
                continue
            history.add(topic, record)
