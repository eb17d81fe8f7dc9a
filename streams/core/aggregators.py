"""Aggregators: tiny pure objects with a fixed life cycle.

``initialize() -> partial``, ``add(partial, value) -> partial``,
``merge(a, b) -> partial`` and ``result(partial) -> value``. A tile holds one
partial; a window value is ``result`` of ``merge`` over its tiles. The same
objects run in the stream, in backfill and at read time.

Partials are immutable values (int, float, tuple) so a merge never
aliases a tile; sums are held exactly, so merge order never changes a result.
``encode``/``decode`` turn partials into the bytes stored online.

An aggregator describes itself, so no code outside this module asks for its
name: :attr:`Aggregator.reads` says what an event contributes (the event itself,
its column's value, or the value with the event time), :attr:`Aggregator.counter`
says its partial is the number of events (held as a plain integer).

Empty windows: ``count`` and ``count_distinct`` are 0, ``sum`` is 0.0,
``mean``/``min``/``max``/``last`` are missing (None).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import orjson

__all__ = ["AGGREGATORS", "Aggregator", "Partial", "Reads", "aggregator_for"]

Partial = Any
Reads = Literal["event", "value", "timed_value"]


@dataclass(frozen=True)
class Aggregator:
    """One aggregation function as data: its life cycle and its online encoding."""

    function: str
    initialize: Callable[[], Partial]
    add: Callable[[Partial, Any], Partial]
    merge: Callable[[Partial, Partial], Partial]
    result: Callable[[Partial], Any]
    encode: Callable[[Partial], bytes]
    decode: Callable[[bytes], Partial]
    value_type: str  # "int64" or "float64": the Feast dtype of the result
    reads: Reads = "value"
    """What one event contributes (see :meth:`contribution`): ``event`` (the event
    itself, whatever its column holds), ``value`` (the column's value; events where it
    is missing add nothing) or ``timed_value`` (``(event time ms, value)``)."""
    counter: bool = False
    """The partial is the number of events, a plain int (stored compactly)."""

    def contribution(self, event_time_ms: int, value: Any) -> Any:
        """What an event with ``value`` in the aggregated column adds to a partial
        (``add``'s second argument), or None when it adds nothing."""
        if self.reads == "event":
            return event_time_ms
        if value is None:
            return None
        if self.reads == "timed_value":
            return (event_time_ms, value)
        return value

    def fold(self, values: Iterable[Any]) -> Partial:
        """``add`` every value to a fresh partial (the reference path for tests)."""
        partial = self.initialize()
        for value in values:
            partial = self.add(partial, value)
        return partial

    def merge_all(self, partials: Iterable[Partial]) -> Partial:
        """``merge`` any number of partials, starting from ``initialize()``."""
        acc = self.initialize()
        for partial in partials:
            acc = self.merge(acc, partial)
        return acc


def _float(value: Any) -> float:
    out = float(value)
    if math.isnan(out):
        raise ValueError("NaN cannot be aggregated")
    return out


def _grow(partials: tuple[float, ...], x: float) -> tuple[float, ...]:
    """Add ``x`` to an exact sum held as non-overlapping floats (Shewchuk's msum step)."""
    out = []
    for part in partials:
        small = part
        if abs(x) < abs(part):
            x, small = part, x
        hi = x + small
        lo = small - (hi - x)
        if lo:
            out.append(lo)
        x = hi
    out.append(x)
    return tuple(out)


def _exact_merge(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, ...]:
    for x in b:
        a = _grow(a, x)
    return a


def _enc_floats(p: tuple[float, ...]) -> bytes:
    return ",".join(repr(x) for x in p).encode()


def _dec_floats(b: bytes) -> tuple[float, ...]:
    return tuple(float(x) for x in b.split(b",")) if b else ()


def _enc_opt_float(p: float | None) -> bytes:
    return b"" if p is None else repr(p).encode()


def _dec_opt_float(b: bytes) -> float | None:
    return None if not b else float(b)


def _opt(
    fn: Callable[[float, float], float],
) -> Callable[[float | None, float | None], float | None]:
    def merged(a: float | None, b: float | None) -> float | None:
        if a is None:
            return b
        if b is None:
            return a
        return fn(a, b)

    return merged


_min = _opt(min)
_max = _opt(max)


def _last_add(p: tuple[int, float] | None, v: tuple[int, Any]) -> tuple[int, float] | None:
    # value is (event_time_ms, value): the newest event wins, ties to the larger value
    # so that the result does not depend on arrival order.
    cand = (int(v[0]), _float(v[1]))
    return cand if p is None or cand > p else p


def _last_merge(
    a: tuple[int, float] | None, b: tuple[int, float] | None
) -> tuple[int, float] | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


COUNT = Aggregator(
    function="count",
    initialize=lambda: 0,
    add=lambda p, _v: p + 1,
    merge=lambda a, b: a + b,
    result=lambda p: p,
    encode=lambda p: str(p).encode(),
    decode=int,
    value_type="int64",
    reads="event",
    counter=True,
)

# Sums are exact: a partial is the exact sum as non-overlapping floats, so merging
# tiles in any order and any split gives the correctly rounded sum (math.fsum).
SUM = Aggregator(
    function="sum",
    initialize=tuple,
    add=lambda p, v: _grow(p, _float(v)),
    merge=_exact_merge,
    result=math.fsum,
    encode=_enc_floats,
    decode=_dec_floats,
    value_type="float64",
)

MEAN = Aggregator(
    function="mean",
    initialize=lambda: ((), 0),
    add=lambda p, v: (_grow(p[0], _float(v)), p[1] + 1),
    merge=lambda a, b: (_exact_merge(a[0], b[0]), a[1] + b[1]),
    result=lambda p: math.fsum(p[0]) / p[1] if p[1] else None,
    encode=lambda p: _enc_floats(p[0]) + b";" + str(p[1]).encode(),
    decode=lambda b: (_dec_floats(b.split(b";")[0]), int(b.split(b";")[1])),
    value_type="float64",
)

MIN = Aggregator(
    function="min",
    initialize=lambda: None,
    add=lambda p, v: _min(p, _float(v)),
    merge=_min,
    result=lambda p: p,
    encode=_enc_opt_float,
    decode=_dec_opt_float,
    value_type="float64",
)

MAX = Aggregator(
    function="max",
    initialize=lambda: None,
    add=lambda p, v: _max(p, _float(v)),
    merge=_max,
    result=lambda p: p,
    encode=_enc_opt_float,
    decode=_dec_opt_float,
    value_type="float64",
)


def _order(v: Any) -> tuple[str, Any]:
    # A total order even over mixed types (a column has one type, but the object must
    # not care).
    return (type(v).__name__, v)


def _distinct_add(p: tuple[Any, ...], v: Any) -> tuple[Any, ...]:
    if v in p:  # equality, as the check below: a value seen again (the common case)
        return p
    i = bisect_left(p, _order(v), key=_order)
    if i < len(p) and p[i] == v:
        return p
    return (*p[:i], v, *p[i:])


def _distinct_merge(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
    if not a:
        return b
    if not b:
        return a
    return tuple(sorted(set(a).union(b), key=_order))


# A distinct partial is the sorted tuple of the values seen: far smaller than a set
# for the few values a tile usually holds, and still exact to merge.
COUNT_DISTINCT = Aggregator(
    function="count_distinct",
    initialize=tuple,
    add=_distinct_add,
    merge=_distinct_merge,
    result=len,
    encode=orjson.dumps,
    decode=lambda b: tuple(sorted(orjson.loads(b), key=_order)),
    value_type="int64",
)

LAST = Aggregator(
    function="last",
    initialize=lambda: None,
    add=_last_add,
    merge=_last_merge,
    result=lambda p: None if p is None else p[1],
    encode=lambda p: b"" if p is None else f"{p[0]},{p[1]!r}".encode(),
    decode=lambda b: None if not b else (int(b.split(b",")[0]), float(b.split(b",")[1])),
    value_type="float64",
    reads="timed_value",
)

AGGREGATORS: dict[str, Aggregator] = {
    a.function: a for a in (COUNT, SUM, MEAN, MIN, MAX, COUNT_DISTINCT, LAST)
}


def aggregator_for(function: str) -> Aggregator:
    """The aggregator of a Feast ``Aggregation.function`` name.

    Raises:
        KeyError: with the known names, when the function is not supported.
    """
    try:
        return AGGREGATORS[function]
    except KeyError:
        raise KeyError(
            f"unknown aggregation function {function!r}; known: {sorted(AGGREGATORS)}"
        ) from None
