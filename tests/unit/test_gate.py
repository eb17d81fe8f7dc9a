"""The partition gate (watermark, lateness, duplicates), judged by the brute-force reference."""

from __future__ import annotations

import pickle
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from streams.core.gate import DUPLICATE, LATE, OK, PartitionGate
from streams.core.reference import classify_partition

LATENESS = 30_000
T0 = 1_700_000_000_000


def _classify(gate: PartitionGate, events: list[tuple[str, int, int | None]]) -> list[str]:
    return [gate.admit(event_id, t, produced) for event_id, t, produced in events]


def test_a_fast_producer_clock_cannot_turn_the_next_events_late() -> None:
    # One event stamped 4.5 minutes ahead of the moment it was produced, then the
    # partition's ordinary traffic (produced as it happens).
    skewed = [("skewed", T0 + 270_000, T0)]
    normal = [(f"e{i}", T0 + i * 10, T0 + i * 10) for i in range(1, 200)]
    gate = PartitionGate(LATENESS, LATENESS)
    assert _classify(gate, skewed + normal) == [OK] * 200  # the skewed one counts too
    assert gate.watermark_ms == T0 + 199 * 10  # bounded by the produce times
    # Negative control: a watermark moved by the event time alone turns them all late.
    unbounded = PartitionGate(LATENESS, LATENESS)
    classes = _classify(unbounded, [(i, t, None) for i, t, _ in skewed + normal])
    assert classes == [OK] + [LATE] * 199


def test_a_resent_event_with_a_new_time_stamp_is_a_duplicate_within_the_horizon() -> None:
    gate = PartitionGate(LATENESS, LATENESS)
    assert gate.admit("a", T0) == OK
    assert gate.admit("b", T0 + 1_500) == OK
    # the same id, re-stamped 10 s later (another 1-second bucket): the same event
    assert gate.admit("a", T0 + 10_000) == DUPLICATE
    # 31 s apart: another event with the same id (not late: within the lateness)
    assert gate.admit("a", T0 + 31_000) == OK
    assert gate.admit("a", T0 + 35_000) == DUPLICATE  # within 30 s of the second


def test_ids_are_held_for_lateness_plus_horizon_and_survive_a_snapshot() -> None:
    gate = PartitionGate(LATENESS, LATENESS)
    gate.admit("old", T0)
    gate.admit("new", T0 + 50_000)
    assert gate.tracked_ids == 2  # "old" is within 60 s of the watermark
    resumed = PartitionGate(LATENESS, LATENESS, pickle.loads(pickle.dumps(gate.snapshot())))
    assert resumed.admit("old", T0 + 25_000) == DUPLICATE
    assert gate.admit("old", T0 + 25_000) == DUPLICATE
    gate.admit("newer", T0 + 62_000)
    assert gate.tracked_ids == 2  # "old" left: no copy of it can still be on time


# A partition's stream: (id, step in ms, how far the produce time lags, a resend?)
stream = st.lists(
    st.tuples(
        st.integers(0, 40),
        st.integers(-40_000, 20_000),
        st.sampled_from([None, 0, 0, 500, -270_000]),  # negative: stamped ahead of produce
    ),
    min_size=1,
    max_size=120,
)


@given(events=stream, horizon=st.sampled_from([LATENESS, 45_000]))
def test_the_gate_classifies_like_the_reference(
    events: list[tuple[int, int, int | None]], horizon: int
) -> None:
    t = T0
    rows: list[dict[str, Any]] = []
    produced: list[int | None] = []
    for event_id, step, lag in events:
        t += step
        rows.append({"event_id": f"e{event_id}", "event_time": t})
        produced.append(None if lag is None else t - lag)
    gate = PartitionGate(LATENESS, horizon)
    classes = [
        gate.admit(r["event_id"], r["event_time"], p) for r, p in zip(rows, produced, strict=True)
    ]
    applied, late = classify_partition(rows, LATENESS, horizon_ms=horizon, produced_ms=produced)
    assert [r for r, c in zip(rows, classes, strict=True) if c == OK] == applied
    assert [r for r, c in zip(rows, classes, strict=True) if c == LATE] == late
