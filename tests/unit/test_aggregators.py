"""Aggregators: a table per function, and the algebra every tile merge relies on.

The table is written by hand from the definitions in the module docstring. The
properties are judged against ``fold`` over all the values (the reference path):
merge is associative, any split into consecutive chunks gives the same result,
and the order of the values never matters (``last`` breaks time ties by value).
Results are compared, not partials: two partials may hold the same value in
different forms. Sums are drawn as integer-valued floats so that float addition
is exact in any order and results can be compared with ``==``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core import AGGREGATORS, aggregator_for

FUNCTIONS = ("count", "sum", "mean", "min", "max", "count_distinct", "last")

PROPERTY = settings(max_examples=60, deadline=None)

# ------------------------------------------------------------------ table

TABLE: list[tuple[str, list[Any], Any]] = [
    ("count", [], 0),
    ("count", ["e1"], 1),
    ("count", ["e1", "e1", "e2"], 3),
    ("count", [None, 0, "x"], 3),
    ("sum", [], 0.0),
    ("sum", [2], 2.0),
    ("sum", [1, 2.5, -0.5], 3.0),
    ("sum", ["4", 1], 5.0),
    ("mean", [], None),
    ("mean", [7], 7.0),
    ("mean", [1, 2, 3, 4], 2.5),
    ("mean", [-1, 1], 0.0),
    ("min", [], None),
    ("min", [5], 5.0),
    ("min", [3, -1, 2], -1.0),
    ("min", [2, 2, 9], 2.0),
    ("max", [], None),
    ("max", [5], 5.0),
    ("max", [3, -1, 2], 3.0),
    ("max", [-7, -3, -9], -3.0),
    ("count_distinct", [], 0),
    ("count_distinct", [4], 1),
    ("count_distinct", [1, 2, 2, 3, 1], 3),
    ("count_distinct", ["a", "b", "a"], 2),
    ("last", [], None),
    ("last", [(10, 1.0)], 1.0),
    ("last", [(10, 1.0), (30, 3.0), (20, 2.0)], 3.0),
    ("last", [(30, 3.0), (10, 1.0)], 3.0),
    ("last", [(10, 5.0), (5, 9.0)], 5.0),
    # Same event time: the larger value wins, whatever the arrival order.
    ("last", [(10, 1.0), (10, 5.0), (10, 2.0)], 5.0),
    ("last", [(10, 5.0), (10, 1.0)], 5.0),
]


def test_table_covers_every_aggregator() -> None:
    assert {row[0] for row in TABLE} == set(AGGREGATORS) == set(FUNCTIONS)


@pytest.mark.parametrize(("function", "inputs", "expected"), TABLE)
def test_table(function: str, inputs: list[Any], expected: Any) -> None:
    agg = aggregator_for(function)
    result = agg.result(agg.fold(inputs))
    assert result == expected
    if expected is not None:
        # The result type is the Feast dtype the aggregator declares.
        assert type(result) is {"int64": int, "float64": float}[agg.value_type]


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("count", 0),
        ("sum", 0.0),
        ("mean", None),
        ("min", None),
        ("max", None),
        ("count_distinct", 0),
        ("last", None),
    ],
)
def test_empty_window(function: str, expected: Any) -> None:
    agg = aggregator_for(function)
    assert agg.result(agg.initialize()) == expected
    assert agg.result(agg.merge_all([])) == expected
    assert agg.result(agg.merge(agg.initialize(), agg.initialize())) == expected


@pytest.mark.parametrize(
    ("function", "value"),
    [
        ("sum", math.nan),
        ("mean", math.nan),
        ("min", math.nan),
        ("max", math.nan),
        ("last", (10, math.nan)),
    ],
)
def test_nan_is_rejected(function: str, value: Any) -> None:
    agg = aggregator_for(function)
    with pytest.raises(ValueError, match="NaN"):
        agg.add(agg.initialize(), value)


def test_unknown_function_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as info:
        aggregator_for("median")
    message = info.value.args[0]
    assert "'median'" in message
    assert all(f in message for f in FUNCTIONS)


# ------------------------------------------------------------------ strategies

_exact_floats = st.integers(-(10**6), 10**6).map(float)
_floats = st.floats(allow_nan=False, allow_infinity=False)

VALUES: dict[str, st.SearchStrategy[Any]] = {
    "count": st.one_of(st.integers(), st.text(max_size=3)),
    "sum": _exact_floats,
    "mean": _exact_floats,
    "min": _floats,
    "max": _floats,
    "count_distinct": st.one_of(st.integers(0, 20), st.sampled_from(["a", "b", "c", ""])),
    # A narrow time range so that equal event times (ties) are common.
    "last": st.tuples(st.integers(0, 20), st.one_of(_exact_floats, _floats)),
}


def _values(function: str, max_size: int = 30) -> st.SearchStrategy[list[Any]]:
    return st.lists(VALUES[function], max_size=max_size)


def test_strategies_cover_every_aggregator() -> None:
    assert set(VALUES) == set(AGGREGATORS)


# ------------------------------------------------------------------ properties


@pytest.mark.parametrize("function", FUNCTIONS)
@PROPERTY
@given(data=st.data())
def test_merge_is_associative(function: str, data: st.DataObject) -> None:
    agg = aggregator_for(function)
    a, b, c = (agg.fold(data.draw(_values(function), label=n)) for n in "abc")
    assert agg.result(agg.merge(agg.merge(a, b), c)) == agg.result(agg.merge(a, agg.merge(b, c)))


@pytest.mark.parametrize("function", FUNCTIONS)
@PROPERTY
@given(data=st.data())
def test_initialize_is_the_identity_of_merge(function: str, data: st.DataObject) -> None:
    agg = aggregator_for(function)
    p = agg.fold(data.draw(_values(function)))
    assert agg.result(agg.merge(agg.initialize(), p)) == agg.result(p)
    assert agg.result(agg.merge(p, agg.initialize())) == agg.result(p)


@pytest.mark.parametrize("function", FUNCTIONS)
@PROPERTY
@given(data=st.data())
def test_any_split_gives_the_same_result(function: str, data: st.DataObject) -> None:
    agg = aggregator_for(function)
    values = data.draw(_values(function))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(values)), max_size=6), label="cuts"))
    bounds = [0, *cuts, len(values)]
    chunks = [values[lo:hi] for lo, hi in itertools.pairwise(bounds)]
    whole = agg.fold(values)
    split = agg.merge_all(agg.fold(chunk) for chunk in chunks)
    assert agg.result(split) == agg.result(whole)


@pytest.mark.parametrize("function", FUNCTIONS)
@PROPERTY
@given(data=st.data())
def test_order_does_not_matter(function: str, data: st.DataObject) -> None:
    agg = aggregator_for(function)
    values = data.draw(_values(function))
    shuffled = data.draw(st.permutations(values), label="permutation")
    assert agg.result(agg.fold(shuffled)) == agg.result(agg.fold(values))


@pytest.mark.parametrize("function", FUNCTIONS)
@PROPERTY
@given(data=st.data())
def test_encode_decode_round_trip(function: str, data: st.DataObject) -> None:
    agg = aggregator_for(function)
    partial = agg.fold(data.draw(_values(function)))
    encoded = agg.encode(partial)
    assert isinstance(encoded, bytes)
    decoded = agg.decode(encoded)
    assert decoded == partial
    assert agg.result(decoded) == agg.result(partial)
    # A decoded partial keeps merging like the original (tiles are read back and merged).
    assert agg.result(agg.merge(decoded, partial)) == agg.result(agg.merge(partial, partial))


@pytest.mark.parametrize("function", FUNCTIONS)
def test_encode_decode_round_trip_of_the_empty_partial(function: str) -> None:
    agg = aggregator_for(function)
    assert agg.decode(agg.encode(agg.initialize())) == agg.initialize()


@PROPERTY
@given(values=st.lists(st.tuples(st.integers(0, 5), _floats), min_size=1, max_size=30))
def test_last_is_the_newest_event_ties_to_the_larger_value(
    values: list[tuple[int, float]],
) -> None:
    agg = aggregator_for("last")
    newest = max(t for t, _ in values)
    assert agg.result(agg.fold(values)) == max(v for t, v in values if t == newest)


@PROPERTY
@given(values=st.lists(_exact_floats, max_size=30))
def test_mean_is_sum_over_count(values: list[float]) -> None:
    mean = aggregator_for("mean").result(aggregator_for("mean").fold(values))
    if not values:
        assert mean is None
    else:
        assert mean is not None
        assert math.isclose(mean, math.fsum(values) / len(values), rel_tol=1e-12, abs_tol=1e-12)


@PROPERTY
@given(
    values=st.lists(st.floats(-1e15, 1e15, allow_nan=False), max_size=30),
    data=st.data(),
)
def test_sum_and_mean_are_exact_in_any_split_and_order(
    values: list[float], data: st.DataObject
) -> None:
    # The module promises the correctly rounded sum (math.fsum) whatever the merge order.
    shuffled = data.draw(st.permutations(values), label="permutation")
    cut = data.draw(st.integers(0, len(values)), label="cut")
    for function in ("sum", "mean"):
        agg = aggregator_for(function)
        merged = agg.merge(agg.fold(shuffled[:cut]), agg.fold(shuffled[cut:]))
        assert agg.result(merged) == agg.result(agg.fold(values))
    assert aggregator_for("sum").result(aggregator_for("sum").fold(shuffled)) == math.fsum(values)
