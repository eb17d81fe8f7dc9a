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

__all__ = ["TiledHistory", "value_as_of"]


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
    if aggregator.counter:
        return max(0, hi - lo)
    partial = aggregator.initialize()
    for i in range(lo, hi):
        value = aggregator.contribution(times_ms[i], values[i])
        if value is not None:
            partial = aggregator.add(partial, value)
    return aggregator.result(partial)


class TiledHistory:
    """One entity's events of one aggregation, folded into tiles once for many reads.

    ``value(t)`` equals :func:`value_as_of` but merges the whole tiles of the window
    (at most ``W / g`` of them, as the online read does) and adds only the events of
    the read's own tile up to ``t``: a training set with many rows per entity costs
    tiles, not events.
    """

    __slots__ = ("_agg", "_ends", "_index", "_partials", "_starts", "_times", "_values")

    def __init__(self, agg: AggregationSpec, times_ms: Sequence[int], values: Sequence[Any]):
        self._agg = agg
        self._times = times_ms
        self._values = values
        aggregator = agg.aggregator
        self._index: list[int] = []  # tile indices with events, ascending
        self._starts: list[int] = []  # position of each tile's first event
        self._ends: list[int] = []
        self._partials: list[Any] = []
        g = agg.tile_ms
        for pos, t in enumerate(times_ms):
            tile = t // g
            if not self._index or self._index[-1] != tile:
                self._index.append(tile)
                self._starts.append(pos)
                self._ends.append(pos)
                self._partials.append(aggregator.initialize())
            self._ends[-1] = pos + 1
            self._partials[-1] = self._add(self._partials[-1], pos)

    def _add(self, partial: Any, pos: int) -> Any:
        aggregator = self._agg.aggregator
        value = aggregator.contribution(self._times[pos], self._values[pos])
        return partial if value is None else aggregator.add(partial, value)

    def values(self, read_times_ms: Sequence[int]) -> list[Any]:
        """The values at many read times: the read's own tile is folded incrementally over
        the sorted reads, and whole tiles are merged once per distinct read tile."""
        agg = self._agg
        aggregator = agg.aggregator
        out: list[Any] = [None] * len(read_times_ms)
        whole_for = -(2**62)
        whole: Any = None
        tile_for = -(2**62)
        tile_acc: Any = None
        pos = 0
        for i in sorted(range(len(read_times_ms)), key=read_times_ms.__getitem__):
            t = read_times_ms[i]
            last = t // agg.tile_ms
            hi = bisect_left(self._index, last)
            if last != whole_for:
                lo = bisect_left(self._index, last - agg.window_ms // agg.tile_ms)
                whole = aggregator.initialize()
                for k in range(lo, hi):
                    whole = aggregator.merge(whole, self._partials[k])
                whole_for = last
            acc = whole
            if hi < len(self._index) and self._index[hi] == last:
                if tile_for != last:
                    tile_for, tile_acc, pos = last, aggregator.initialize(), self._starts[hi]
                end = bisect_right(self._times, t, self._starts[hi], self._ends[hi])
                while pos < end:
                    tile_acc = self._add(tile_acc, pos)
                    pos += 1
                acc = aggregator.merge(whole, tile_acc)
            out[i] = aggregator.result(acc)
        return out

    def value(self, read_time_ms: int) -> Any:
        """The value of the aggregation at ``read_time_ms``."""
        agg = self._agg
        aggregator = agg.aggregator
        last = read_time_ms // agg.tile_ms
        first = last - agg.window_ms // agg.tile_ms
        lo = bisect_left(self._index, first)
        hi = bisect_left(self._index, last)
        acc = aggregator.initialize()
        for i in range(lo, hi):
            acc = aggregator.merge(acc, self._partials[i])
        if hi < len(self._index) and self._index[hi] == last:
            end = bisect_right(self._times, read_time_ms, self._starts[hi], self._ends[hi])
            if end == self._ends[hi]:
                acc = aggregator.merge(acc, self._partials[hi])
            else:
                for pos in range(self._starts[hi], end):
                    acc = self._add(acc, pos)
        return aggregator.result(acc)
