"""Historical events for a backfill: Parquet or JSON Lines files, or a Kafka replay.

Every source hands each event to a :class:`~streams.backfill.History` after the
same checks the stream applies: file rows are encoded and decoded with the
topic's contract (a row that does not fit is counted by reason, like a
dead letter), Kafka messages are decoded by the same codec and judged by the
same future-time rule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from featurestream.errors import BrokerUnavailable, ConfigError, EventError
from featurestream.events import MAX_FUTURE_MS, AvroCodec, Contract

from ..offline.log import ARROW_TYPES
from .history import History

__all__ = ["EventSource", "FileEvents", "KafkaEvents", "topic_of_columns"]

log = logging.getLogger(__name__)

_SUFFIXES = {".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
_BATCH = 65_536
_QUIET_S = 1.0
_STALL_S = 60.0


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
            for batch, checked in self._batches(path, contracts[topic]):
                for row in batch:
                    if checked and row is not None:
                        history.add(topic, row)
                        continue
                    if row is None:
                        history.reject("not_json")
                        continue
                    try:
                        record = codec.decode(topic, codec.encode(topic, row))
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
        consumer = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": "featurestream-backfill",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "log_level": 0,
            }
        )
        try:
            self._replay(consumer, history, codec)
        except KafkaException as exc:
            raise BrokerUnavailable(f"replay from {self._bootstrap}: {exc}") from exc
        finally:
            consumer.close()

    def _start_offsets(self, consumer: Consumer) -> list[TopicPartition]:
        metadata = consumer.list_topics(timeout=10)
        wanted = []
        for topic in self._topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                raise ConfigError(f"topic {topic!r} does not exist at {self._bootstrap}")
            since = max(0, self._from_ms - MAX_FUTURE_MS)
            wanted += [TopicPartition(topic, p, since) for p in sorted(meta.partitions)]
        try:
            found = consumer.offsets_for_times(wanted, timeout=10)
        except KafkaException as exc:
            log.info("no time index (%s): replaying from the beginning", exc)
            return [TopicPartition(t.topic, t.partition, OFFSET_BEGINNING) for t in wanted]
        out = []
        for tp in found:
            if tp.error is not None or tp.offset < 0:
                # -1: no message at or after the time (or no index): read it all to be safe.
                out.append(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
            else:
                out.append(tp)
        return out

    def _replay(self, consumer: Consumer, history: History, codec: AvroCodec) -> None:
        """Read each partition up to what was produced before the replay started: to its
        end, or to its first message produced later (so live traffic cannot keep the
        replay going). Stops with an error when nothing arrives for ``_STALL_S``."""
        started_ms = time.time_ns() // 1_000_000
        parts = self._start_offsets(consumer)
        consumer.assign(parts)
        open_parts = {(tp.topic, tp.partition) for tp in parts}
        at_end: set[tuple[str, int]] = set()
        quiet_since = stalled_since = time.monotonic()
        while open_parts:
            messages = consumer.consume(10_000, 0.1)
            now = time.monotonic()
            if not messages:
                if open_parts <= at_end and now - quiet_since > _QUIET_S:
                    return
                if now - stalled_since > _STALL_S:
                    raise BrokerUnavailable(
                        f"replay from {self._bootstrap} stalled: nothing for {_STALL_S:.0f} s "
                        f"from {sorted(open_parts - at_end)}"
                    )
                continue
            quiet_since = stalled_since = now
            for msg in messages:
                err = msg.error()
                where = (str(msg.topic()), int(msg.partition() or 0))
                if where not in open_parts:
                    continue
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(where)
                        continue
                    if err.retriable() or err.code() == KafkaError._TRANSPORT:
                        continue
                    raise BrokerUnavailable(f"replay {where}: {err}")
                at_end.discard(where)  # the end reported earlier was not the end
                kind, produced = msg.timestamp()
                if kind != TIMESTAMP_NOT_AVAILABLE and produced >= started_ms:
                    open_parts.discard(where)  # produced after the replay started
                    continue
                topic = str(msg.topic())
                try:
                    record = codec.decode(
                        topic,
                        msg.value(),
                        partition=int(msg.partition() or 0),
                        offset=int(msg.offset() or 0),
                    )
                except EventError as exc:
                    history.reject(exc.kind)
                    continue
                time_field = history.time_field(topic)
                if (
                    time_field is not None
                    and kind != TIMESTAMP_NOT_AVAILABLE
                    and produced >= 0
                    and record[time_field] > produced + MAX_FUTURE_MS
                ):
                    history.reject("out_of_range")
                    continue
                history.add(topic, record)
