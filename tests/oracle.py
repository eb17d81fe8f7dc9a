"""The judge of every aggregate: a brute-force reference over raw events.

It restates the contract, not the engine: for window W and tile size g, a read at
time t covers the events with ``floor(t/g)*g - W <= event_time <= t``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def window_value(
    events: Iterable[Mapping[str, Any]],
    *,
    function: str,
    column: str,
    window_ms: int,
    tile_ms: int,
    read_time_ms: int,
    time_field: str = "event_time",
) -> Any:
    """The value of one aggregation at ``read_time_ms`` over ``events`` of one entity."""
    start = (read_time_ms // tile_ms) * tile_ms - window_ms
    rows = [e for e in events if start <= e[time_field] <= read_time_ms]
    values = [e[column] for e in rows if e.get(column) is not None]
    if function == "count":
        return len(rows)
    if function == "count_distinct":
        return len(set(values))
    if function == "sum":
        return math.fsum(float(v) for v in values)
    if not values:
        return None
    if function == "mean":
        return math.fsum(float(v) for v in values) / len(values)
    if function == "min":
        return float(min(values))
    if function == "max":
        return float(max(values))
    if function == "last":
        return float(max(rows, key=lambda e: (e[time_field], float(e[column])))[column])
    raise ValueError(f"oracle does not know {function!r}")


def view_values(
    events: Iterable[Mapping[str, Any]], view: Any, read_time_ms: int
) -> dict[str, Any]:
    """Every aggregation of a ``ViewSpec`` for one entity's events."""
    events = list(events)
    return {
        a.name: window_value(
            events,
            function=a.function,
            column=a.column,
            window_ms=a.window_ms,
            tile_ms=a.tile_ms,
            read_time_ms=read_time_ms,
            time_field=view.timestamp_field,
        )
        for a in view.aggregations
    }


def classify_partition(
    events: Iterable[Mapping[str, Any]], lateness_ms: int, time_field: str = "event_time"
) -> tuple[list[Any], list[Any]]:
    """Brute force over one partition's events in offset order: ``(applied, late)``.

    Late: older than the newest event applied so far minus the lateness. Duplicate
    (dropped, in neither list): an event id applied before.
    """
    applied: list[Any] = []
    late: list[Any] = []
    newest = None
    ids: set[str] = set()
    for e in events:
        if newest is not None and e[time_field] < newest - lateness_ms:
            late.append(e)
            continue
        if e["event_id"] in ids:
            continue
        ids.add(e["event_id"])
        applied.append(e)
        newest = e[time_field] if newest is None else max(newest, e[time_field])
    return applied, late
