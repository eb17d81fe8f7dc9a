"""The append-only offline log: every applied event of every view, as Parquet.

Layout: ``{root}/{view}/date=YYYY-MM-DD/part-{seq:09d}.parquet`` with an explicit
schema per view (join keys, ``event_time`` as UTC timestamp in ms, ``event_id``,
the aggregated columns). File numbers are deterministic per view: they are kept
in the sink's Bytewax snapshot, and a resumed run first deletes the files
numbered after its snapshot and then writes them again, so a replay overwrites
instead of duplicating. Backfills write ``backfill-{run}-{n}.parquet`` files beside
them (see :func:`write_backfill`). A run without a snapshot keeps the files already there
and numbers after them; readers read a row written again (same ``event_id`` and event
time) once.
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from featurestream.errors import ConfigError

from ..core import ViewSpec

__all__ = ["EntityEvents", "ViewLogWriter", "log_schema", "read_view_log", "write_backfill"]

ARROW_TYPES = {
    # Avro primitive type -> Arrow type (the log's and the backfill's explicit schemas)
    "long": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "float": pa.float32(),
    "string": pa.string(),
    "boolean": pa.bool_(),
}


def _file_pattern(suffix: str) -> re.Pattern[str]:
    """Names of one writer's files: ``part-{seq}{suffix}.parquet`` (suffix ``-0of2`` for the
    first of two engine processes, empty for one)."""
    return re.compile(rf"^part-(\d{{9}}){re.escape(suffix)}\.parquet$")


_FLUSH_ROWS = 50_000
_FLUSH_S = 2.0


def log_schema(view: ViewSpec) -> pa.Schema:
    """The explicit Parquet schema of ``view``'s log."""
    types = dict(view.field_types)
    fields = [pa.field(k, ARROW_TYPES[types[k]], nullable=False) for k in view.join_keys]
    fields += [
        pa.field("event_time", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
    ]
    # Join keys, the event time and the event id are stored once, in their own columns,
    # even when an aggregation reads them.
    stored = {*view.join_keys, "event_id", view.timestamp_field}
    fields += [pa.field(c, ARROW_TYPES[types[c]]) for c in view.columns if c not in stored]
    return pa.schema(fields)


@functools.lru_cache(maxsize=1024)
def _day(day: int) -> str:
    return datetime.fromtimestamp(day * 86_400, tz=UTC).strftime("%Y-%m-%d")


def _tables(
    schema: pa.Schema, records: Sequence[Mapping[str, Any]], time_field: str
) -> list[tuple[str, pa.Table]]:
    """Applied events (decoded records) as one table per UTC date of their event time."""
    by_day: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        by_day[record[time_field] // 86_400_000].append(record)
    out = []
    for day in sorted(by_day):
        rows = by_day[day]
        if time_field == "event_time":
            table = pa.Table.from_pylist(rows, schema=schema)
        else:
            columns = {
                name: [r[time_field] for r in rows]
                if name == "event_time"
                else [r.get(name) for r in rows]
                for name in schema.names
            }
            table = pa.Table.from_pydict(columns, schema=schema)
        out.append((_day(day), table))
    return out


def _write_atomically(table: pa.Table, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp"  # dot files are not read as part of the log
    pq.write_table(table, tmp)
    os.replace(tmp, final)


def write_backfill(
    root: Path, view: ViewSpec, records: Sequence[Mapping[str, Any]], run_id: str
) -> list[Path]:
    """Write a backfill's events (decoded records) of ``view`` into the log, replacing an
    earlier run ``run_id``.

    Files are ``{root}/{view}/date=D/backfill-{run_id}-{n}.parquet``: never numbered
    like the engine's files, so a resumed engine never deletes them, and a repeated
    backfill with the same ``run_id`` overwrites its own files. The backfill leaves out
    copies of events the log already holds (``streams.backfill``).
    """
    folder = root / view.name
    if folder.is_dir():
        for path in folder.glob(f"date=*/backfill-{run_id}-*.parquet"):
            path.unlink()
    written = []
    for n, (date, table) in enumerate(_tables(log_schema(view), records, view.timestamp_field)):
        path = folder / f"date={date}" / f"backfill-{run_id}-{n:05d}.parquet"
        _write_atomically(table, path)
        written.append(path)
    return written


class ViewLogWriter:
    """Appends one view's applied events to the log (the engine's writer).

    Rows are buffered and written as one file per UTC date every ``_FLUSH_S`` or
    ``_FLUSH_ROWS``. The next file number is the writer's state (the engine keeps it
    in its snapshots): a writer resumed from ``next_seq`` first deletes the files a
    crashed run numbered from it (they are written again).

    Args:
        root: Root of the log.
        view: The view.
        next_seq: The number of the next file (None: after those already there).
        suffix: Tells the files of one engine process apart (``-0of2``), or empty.
    """

    def __init__(self, root: Path, view: ViewSpec, next_seq: int | None, suffix: str) -> None:
        self._dir = root / view.name
        self._suffix = suffix
        self._file = _file_pattern(suffix)
        self._view = view
        self._schema = log_schema(view)
        self._names = self._schema.names
        self._rows: list[Mapping[str, Any]] = []
        self._last_flush = time.monotonic()
        if next_seq is None:
            # No snapshot: keep the history already logged and number new files after
            # it (readers read a row written again once, so a rebuild from the topics is safe).
            self._seq = self._highest() + 1
            self._drop_from(self._seq)
        else:
            self._seq = next_seq
            self._drop_from(next_seq)

    def _highest(self) -> int:
        numbers = (
            [
                int(m.group(1))
                for p in self._dir.glob("date=*/part-*.parquet")
                if (m := self._file.match(p.name))
            ]
            if self._dir.is_dir()
            else []
        )
        return max(numbers, default=-1)

    def _drop_from(self, seq: int) -> None:
        """Delete files a crashed run wrote after its last snapshot (they are rewritten)."""
        if not self._dir.is_dir():
            return
        for path in self._dir.glob("date=*/.part-*.tmp"):
            if self._file.match(path.name[1:-4]):
                path.unlink()  # a write a crash interrupted
        for path in self._dir.glob("date=*/part-*.parquet"):
            match = self._file.match(path.name)
            if match and int(match.group(1)) >= seq:
                path.unlink()

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Buffer ``rows`` (decoded records); flush when it is time."""
        self._rows.extend(rows)
        if len(self._rows) >= _FLUSH_ROWS or time.monotonic() - self._last_flush > _FLUSH_S:
            self._flush()

    def _flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        for date, table in _tables(self._schema, rows, self._view.timestamp_field):
            name = f"part-{self._seq:09d}{self._suffix}.parquet"
            _write_atomically(table, self._dir / f"date={date}" / name)
            self._seq += 1

    def snapshot(self) -> int:
        """Flush; the number of the next file."""
        self._flush()
        return self._seq

    def close(self) -> None:
        """Flush what is buffered."""
        self._flush()


class EntityEvents:
    """One entity's applied events of one view, sorted by event time (columns)."""

    __slots__ = ("columns", "times_ms")

    def __init__(self, times_ms: list[int], columns: dict[str, list[Any]]) -> None:
        self.times_ms = times_ms
        self.columns = columns

    def records(self, view: ViewSpec, key: tuple[Any, ...]) -> Iterator[dict[str, Any]]:
        """The events as the records the stream applied (what the view reads of them)."""
        keys = dict(zip(view.join_keys, key, strict=True))
        columns = self.columns
        for i, t in enumerate(self.times_ms):
            event = {c: columns[c][i] for c in view.columns}
            event.update(keys)
            event[view.timestamp_field] = t
            yield event


def read_view_log(
    root: Path,
    view: ViewSpec,
    entities: Iterable[tuple[Any, ...]] | None = None,
    since_ms: int | None = None,
    *,
    until_ms: int | None = None,
    skip: str | None = None,
) -> dict[tuple[Any, ...], EntityEvents]:
    """The applied events of ``view`` per entity (join key values); only those at or after
    ``since_ms`` and before ``until_ms`` when given, and not in files whose names start
    with ``skip``.

    The log holds each applied event once; a row written again (an engine rebuilding
    from the topics, a backfill over what the stream logged: the same ``event_id`` at
    the same event time) is read once. Rows with one ``event_id`` at different event
    times are distinct events (see ``streams.core.gate``: the stream applied both).

    Raises:
        ConfigError: when a log file is unreadable.
    """
    folder = root / view.name
    if not folder.is_dir():
        return {}
    try:
        schema = log_schema(view).append(pa.field("date", pa.string()))
        if skip is None:
            dataset = ds.dataset(folder, format="parquet", partitioning="hive", schema=schema)
        else:
            files = [
                str(p)
                for p in sorted(folder.glob("date=*/*.parquet"))
                if not p.name.startswith(skip)
            ]
            dataset = ds.dataset(
                files,
                format="parquet",
                partitioning=ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive"),
                partition_base_dir=str(folder),
                schema=schema,
            )
        flt = None
        wanted = None if entities is None else list(entities)
        if wanted is not None and len(view.join_keys) == 1:
            key = view.join_keys[0]
            flt = ds.field(key).isin([e[0] for e in wanted])
        if since_ms is not None:
            since = ds.field("event_time") >= pa.scalar(since_ms, pa.timestamp("ms", tz="UTC"))
            flt = since if flt is None else flt & since
        if until_ms is not None:
            until = ds.field("event_time") < pa.scalar(until_ms, pa.timestamp("ms", tz="UTC"))
            flt = until if flt is None else flt & until
        table = dataset.to_table(filter=flt)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"offline log of {view.name} at {folder} is unreadable: {exc}") from exc
    table = table.sort_by([("event_time", "ascending"), ("event_id", "ascending")])
    keys = [table.column(k).to_pylist() for k in view.join_keys]
    times = table.column("event_time").cast(pa.int64()).to_pylist()
    ids = table.column("event_id").to_pylist()
    stored: dict[str, list[Any]] = {"event_id": ids, view.timestamp_field: times}
    stored.update({k: keys[i] for i, k in enumerate(view.join_keys)})
    cols = {c: stored[c] if c in stored else table.column(c).to_pylist() for c in view.columns}
    out: dict[tuple[Any, ...], EntityEvents] = {}
    seen: set[tuple[str, int]] = set()
    wanted_set = None if wanted is None else set(wanted)
    for i, event_id in enumerate(ids):
        row = (event_id, times[i])
        if row in seen:
            continue
        seen.add(row)
        entity = tuple(k[i] for k in keys)
        if wanted_set is not None and entity not in wanted_set:
            continue
        events = out.get(entity)
        if events is None:
            events = out[entity] = EntityEvents([], {c: [] for c in view.columns})
        events.times_ms.append(times[i])
        for c in view.columns:
            events.columns[c].append(cols[c][i])
    return out
