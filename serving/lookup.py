"""Bind a request to its plan, list the online store's reads, assemble the answer (pure).

:func:`bind` checks the entity values against the registry's types and lists the
reads of the whole request (the online-store port's :class:`~streams.online.TilesRead`
of every tiled view's entity and :class:`~streams.online.FeastRowRead` of every batch
view's row). The store's reader answers them in one round trip; :func:`assemble`
turns the answers into Feast's response JSON.

Values and statuses follow ``feast serve`` on this repository (through
:class:`streams.online.feast_store.TiledRedisOnlineStore`):

* tiled views: windows merged at the read time; a missing result (``mean``,
  ``min``, ``max``, ``last`` of an empty window) is ``NOT_FOUND``; the row's event
  timestamp is the newest event applied for the entity (else 1970-01-01);
* Feast-layout views: ``PRESENT`` even when the entity is unknown (value null,
  timestamp 1970-01-01), as Feast's Redis store does;
* on-demand outputs: ``PRESENT`` with timestamp 1970-01-01, as Feast does.

Additions of this server: with ``enforce_ttl``, a batch row older than its view's
``ttl`` is ``OUTSIDE_MAX_AGE`` with a null value; with ``max_staleness_ms``, a stream
row whose newest event is older is ``OUTSIDE_MAX_AGE`` with a null value (an entity
without events keeps its empty-window values); with ``include_freshness``,
``metadata.freshness`` is ``{view: {"newest_event_age_ms": [per row]}}``: the age at
the read time of the newest event (stream views) or of the row's event timestamp
(batch views), null when there is none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from feast.value_type import ValueType

from featurestream.errors import InvalidRequest, TransformFailed
from streams.core import StoredTiles, entity_id, read_window
from streams.online import FeastRow, FeastRowRead, Read, TilesRead

from .catalog import Catalog
from .plan import Plan
from .plan import Read as PlanRead
from .request import LookupRequest
from .values import (
    EPOCH,
    check_value,
    describe_type,
    iso_from_ms,
    native_from_bytes,
    native_from_python,
    python_from_bytes,
    stored_timestamp,
    tile_value,
)

__all__ = ["BoundLookup", "assemble", "bind"]

PRESENT = "PRESENT"
NOT_FOUND = "NOT_FOUND"
OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"
_NO_TILES: dict[int, Any] = {}


@dataclass(frozen=True)
class BoundLookup:
    """A request bound to its plan: the reads to send and how to use their answers.

    Attributes:
        plan: The plan.
        request: The request.
        key_columns: ``(join key, values)`` returned first, in the order given.
        request_values: Request field -> values, for on-demand views.
        rows_of: Per plan read, the position of each row's entity in its answers.
        starts: Per plan read, the index of its first answer.
        reads: Every online-store read of the request, in answer order.
        ready_at: Per plan read of a stream view, the index of the answer that says
            whether the view's tiles are complete (None for batch views).
    """

    plan: Plan
    request: LookupRequest
    key_columns: list[tuple[str, list[Any]]]
    request_values: dict[str, list[Any]]
    rows_of: list[list[int]]
    starts: list[int]
    reads: list[Read]
    ready_at: list[int | None]

    @property
    def entity_reads(self) -> int:
        """How many of ``reads`` read entities (the readiness reads follow them)."""
        return next((i for i in self.ready_at if i is not None), len(self.reads))


def _check_column(key: str, values: list[Any], value_type: ValueType, what: str) -> None:
    for position, value in enumerate(values):
        if value is None and what == "request field":
            continue
        if value is None or not check_value(value_type, value):
            raise InvalidRequest(
                f"entities.{key}[{position}] = {_show(value)}: expected {describe_type(value_type)}"
                f" ({what} {key!r} is {value_type.name})"
            )


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return "null" if value is None else text[:60]


def _split_entities(
    plan: Plan, request: LookupRequest, catalog: Catalog
) -> tuple[list[tuple[str, list[Any]]], dict[str, list[Any]], dict[str, list[Any]]]:
    """``entities`` as (returned join key columns, request fields, join key -> values)."""
    key_columns: list[tuple[str, list[Any]]] = []
    request_values: dict[str, list[Any]] = {}
    join_values: dict[str, list[Any]] = {}
    for key, values in request.entities.items():
        field_type = plan.request_fields.get(key)
        if field_type is not None:
            _check_column(key, values, field_type, "request field")
            request_values[key] = values
            continue
        join_key = key if key in catalog.join_key_types else catalog.entity_join_keys.get(key)
        if join_key is None:
            continue
        if join_key in join_values:
            raise InvalidRequest(
                f"entities gives join key {join_key!r} twice (as {join_key!r} and as the "
                "entity name); keep one"
            )
        _check_column(key, values, catalog.join_key_types[join_key], "join key")
        join_values[join_key] = values
        key_columns.append((join_key, values))
    missing = [f for f in plan.request_fields if f not in request_values]
    if missing:
        users = sorted(
            {s.odfv.name for s in plan.odfvs for f in missing if f in s.odfv.request_fields}
        )
        raise InvalidRequest(
            f"missing request field(s) {', '.join(repr(f) for f in missing)} needed by on-demand "
            f"view(s) {', '.join(users)}; add them to entities, one value per row"
        )
    return key_columns, request_values, join_values


def _reads_of(
    read: PlanRead,
    join_values: dict[str, list[Any]],
    rows: int,
    reads: list[Read],
) -> list[int]:
    """Append one read per distinct entity of ``read``; the entity position of each row."""
    view = read.view
    keys = view.spec.join_keys if view.spec is not None else view.join_keys
    absent = [k for k in keys if k not in join_values]
    if absent:
        raise InvalidRequest(
            f"entities is missing join key(s) {', '.join(repr(k) for k in absent)} of view "
            f"{view.name!r}; got: {', '.join(join_values) or 'no join keys'}"
        )
    columns = [join_values[k] for k in keys]
    seen: dict[Any, int] = {}
    positions = []
    spec, feast_rows = view.spec, read.rows
    for row in range(rows):
        ident = columns[0][row] if len(columns) == 1 else tuple(c[row] for c in columns)
        at = seen.get(ident)
        if at is None:
            at = seen[ident] = len(seen)
            key_values: tuple[Any, ...] = (ident,) if len(columns) == 1 else ident
            if spec is not None:
                reads.append(TilesRead(spec, entity_id(key_values)))
            else:
                assert feast_rows is not None  # a batch view's plan read has its rows
                reads.append(FeastRowRead(feast_rows, key_values))
        positions.append(at)
    return positions


def bind(plan: Plan, request: LookupRequest, catalog: Catalog) -> BoundLookup:
    """Check ``request`` against ``plan`` and list its online-store reads.

    Entries of ``entities`` that are neither a join key, an entity name nor a request
    field the plan needs are ignored, as Feast does.

    Raises:
        InvalidRequest: for a value of the wrong type, a missing join key or request
            field, naming the field and what was expected.
    """
    key_columns, request_values, join_values = _split_entities(plan, request, catalog)
    rows_of: list[list[int]] = []
    starts: list[int] = []
    reads: list[Read] = []
    for read in plan.reads:
        starts.append(len(reads))
        rows_of.append(_reads_of(read, join_values, request.rows, reads))
    # Whether each stream view's tiles are complete, in the same round trip (after the
    # rows: the answers of the reads above keep their positions).
    ready_at: list[int | None] = []
    for read in plan.reads:
        if read.ready is None:
            ready_at.append(None)
        else:
            ready_at.append(len(reads))
            reads.append(read.ready)
    return BoundLookup(plan, request, key_columns, request_values, rows_of, starts, reads, ready_at)


# A decoded entity of one read: (JSON values, statuses, timestamp text, newest event ms).
_Cell = tuple[list[Any], list[str], str, int | None]


def _tiled_cells(
    read: PlanRead, answers: Sequence[Any], read_ms: int, staleness: int | None, ready: bool
) -> list[_Cell]:
    cells: list[_Cell] = []
    n = len(read.aggs)
    if not ready:
        # The view's tiles are not complete (its engine rebuilds them, or restores them
        # after the store lost them): no value, rather than a partial one.
        return [([None] * n, [NOT_FOUND] * n, EPOCH, None) for _ in answers]
    for stored in answers:
        last_ms = stored.newest_event_ms if isinstance(stored, StoredTiles) else None
        if staleness is not None and last_ms is not None and read_ms - last_ms > staleness:
            cells.append(([None] * n, [OUTSIDE_MAX_AGE] * n, iso_from_ms(last_ms), last_ms))
            continue
        tiles = stored.tiles if stored is not None else None
        values: list[Any] = []
        statuses: list[str] = []
        for agg in read.aggs:
            value = read_window(
                agg, tiles.get(agg.slot, _NO_TILES) if tiles else _NO_TILES, read_ms
            )
            value = tile_value(agg.aggregator.value_type, value)
            values.append(value)
            statuses.append(PRESENT if value is not None else NOT_FOUND)
        text = EPOCH if last_ms is None else iso_from_ms(last_ms)
        cells.append((values, statuses, text, last_ms))
    return cells


def _feast_cells(
    read: PlanRead, answers: Sequence[Any], read_ms: int, staleness: int | None, enforce_ttl: bool
) -> list[_Cell]:
    view = read.view
    ttl_ms = view.ttl_ms if enforce_ttl else None
    if view.kind != "stream":
        staleness = None
    n = len(read.features)
    cells: list[_Cell] = []
    for row in answers:
        text, ts_ms = stored_timestamp(row.timestamp)
        if ts_ms is not None and (
            (ttl_ms is not None and read_ms - ts_ms > ttl_ms)
            or (staleness is not None and read_ms - ts_ms > staleness)
        ):
            cells.append(([None] * n, [OUTSIDE_MAX_AGE] * n, text, ts_ms))
            continue
        values = [native_from_bytes(raw) for raw in row.values]
        cells.append((values, [PRESENT] * n, text, ts_ms))
    return cells


def _odfv_inputs(
    lookup: BoundLookup,
    step: Any,
    cells: list[list[_Cell]],
    answers: Sequence[Any],
) -> dict[str, Any]:
    inputs: dict[str, Any] = {k: v for k, v in lookup.key_columns}
    inputs.update(lookup.request_values)
    for read_index, feature_index, name in step.inputs:
        read = lookup.plan.reads[read_index]
        rows_of = lookup.rows_of[read_index]
        read_cells = cells[read_index]
        if read.view.tiled:
            inputs[name] = [read_cells[u][0][feature_index] for u in rows_of]
            continue
        start = lookup.starts[read_index]
        value_type = read.view.features[read.features[feature_index]]
        column: list[Any] = []
        for u in rows_of:
            if read_cells[u][1][feature_index] == OUTSIDE_MAX_AGE:
                column.append(None)
            else:
                row: FeastRow = answers[start + u]
                column.append(python_from_bytes(row.values[feature_index], value_type))
        inputs[name] = column
    return inputs


def _apply(step: Any, inputs: dict[str, Any], rows: int) -> list[list[Any]]:
    name = step.odfv.name
    try:
        out = step.odfv.transform(inputs)
    except Exception as exc:  # user code: any error it raises is the view's
        raise TransformFailed(
            f"on-demand view {name!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    columns = []
    for feature, _, value_type in step.outputs:
        if feature not in out:
            raise TransformFailed(
                f"on-demand view {name!r} returned no {feature!r}; it returned: {sorted(out)}"
            )
        vector = out[feature]
        if not isinstance(vector, list):
            vector = [vector]
        if len(vector) != rows:
            raise TransformFailed(
                f"on-demand view {name!r} returned {len(vector)} values of {feature!r} "
                f"for {rows} rows"
            )
        try:
            columns.append(native_from_python(vector, value_type))
        except (TypeError, ValueError) as exc:
            raise TransformFailed(
                f"on-demand view {name!r}: {feature!r} is not {value_type.name}: {exc}"
            ) from exc
    return columns


def _age(read_ms: int, newest_ms: int | None) -> int | None:
    return None if newest_ms is None else read_ms - newest_ms


def assemble(
    lookup: BoundLookup,
    answers: Sequence[StoredTiles | FeastRow | bool | None],
    read_ms: int,
    *,
    enforce_ttl: bool = True,
) -> dict[str, Any]:
    """The response of ``lookup`` from the answers to its reads, read at ``read_ms``.

    Raises:
        TransformFailed: when an on-demand view raises or returns unusable values.
    """
    plan = lookup.plan
    request = lookup.request
    rows = request.rows
    staleness = request.max_staleness_ms
    names: list[str] = []
    results: list[dict[str, Any]] = []
    for key, values in lookup.key_columns:
        names.append(key)
        results.append(
            {"values": values, "statuses": [PRESENT] * rows, "event_timestamps": [EPOCH] * rows}
        )
    cells: list[list[_Cell]] = []
    for index, read in enumerate(plan.reads):
        start = lookup.starts[index]
        end = lookup.starts[index + 1] if index + 1 < len(plan.reads) else lookup.entity_reads
        ready_at = lookup.ready_at[index]
        if read.view.tiled:
            ready = ready_at is None or answers[ready_at] is True
            cells.append(_tiled_cells(read, answers[start:end], read_ms, staleness, ready))
        else:
            cells.append(_feast_cells(read, answers[start:end], read_ms, staleness, enforce_ttl))
    for column in plan.columns:
        read_cells = cells[column.read]
        rows_of = lookup.rows_of[column.read]
        i = column.index
        names.append(column.name)
        if len(read_cells) == 1:
            values, statuses, text, _ = read_cells[0]
            results.append(
                {
                    "values": [values[i]] * rows,
                    "statuses": [statuses[i]] * rows,
                    "event_timestamps": [text] * rows,
                }
            )
            continue
        results.append(
            {
                "values": [read_cells[u][0][i] for u in rows_of],
                "statuses": [read_cells[u][1][i] for u in rows_of],
                "event_timestamps": [read_cells[u][2] for u in rows_of],
            }
        )
    for step in plan.odfvs:
        inputs = _odfv_inputs(lookup, step, cells, answers)
        for (_, name, _), values in zip(step.outputs, _apply(step, inputs, rows), strict=True):
            names.append(name)
            results.append(
                {"values": values, "statuses": [PRESENT] * rows, "event_timestamps": [EPOCH] * rows}
            )
    metadata: dict[str, Any] = {"feature_names": names}
    if request.include_version_metadata:
        metadata["feature_view_metadata"] = [{"name": r.prefix} for r in plan.reads]
    if request.include_freshness:
        freshness: dict[str, Any] = {}
        for read, read_cells, rows_of in zip(plan.reads, cells, lookup.rows_of, strict=True):
            freshness[read.prefix] = {
                "newest_event_age_ms": [_age(read_ms, read_cells[u][3]) for u in rows_of]
            }
        metadata["freshness"] = freshness
    return {"metadata": metadata, "results": results}
