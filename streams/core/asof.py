"""Point-in-time values from an entity's applied events (the offline read path).

A read at time ``t`` of a window ``W`` with tiles of ``g`` covers the events with
``floor(t/g)*g - W <= event_time <= t``, the same formula as online, folded with
the same aggregators.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from typing import Any

from .spec import AggregationSpec

__all__ = ["value_as_of"]


def value_as_of(
    agg: AggregationSpec, times_ms: Sequence[int], values: Sequence[Any], read_time_ms: int
) -> Any:
    """The value of ``agg`` at ``read_time_ms``.

    Args:
        agg: The aggregation.
        times_ms: Event times of one entity's applied events, sorted ascending.
        values: The aggregated column of the same events (same order).
        read_time_ms: The read time ``t``.
    """
    start = (read_time_ms // agg.tile_ms) * agg.tile_ms - agg.window_ms
    lo = bisect_left(times_ms, start)
    hi = bisect_right(times_ms, read_time_ms)
    aggregator = agg.aggregator
    if agg.function == "count":
        return max(0, hi - lo)
    partial = aggregator.initialize()
    for i in range(lo, hi):
        value = values[i]
        if value is None:
            continue
        partial = aggregator.add(partial, (times_ms[i], value) if agg.function == "last" else value)
    return aggregator.result(partial)
