"""Per-partition event-time watermark, lateness and duplicate detection (pure).

Events are keyed by entity, so all events of an entity are ordered by offset in
one Kafka partition. Each partition therefore keeps its own watermark. It moves
only with consumed events, never with the wall clock, so a backlog read after an
outage is judged by its own event times and is not turned late by the pause.
Because it depends only on the partition's content, replays, restarts, several
processes and the reference all classify every event identically.

* watermark: the newest ``min(event time, produce time)`` consumed. An event may
  move it only as far as the moment it was produced (its Kafka timestamp), so one
  producer whose clock runs minutes fast cannot turn the next events of the
  partition late; the event itself is applied (up to ``MAX_FUTURE_MS`` ahead of its
  produce time; further ahead it is a dead letter, see ``streams.core.classify``).
  Without a produce time, the event time alone.
* late: ``event_time < watermark - allowed_lateness`` (the watermark before this
  event); not applied online, sent to the late-events topic.
* duplicate: two messages with one ``event_id`` whose event times are within
  ``horizon`` of each other are one event; the copy applied first counts, the others
  are duplicates (a client resending with a fresh time stamp sends a copy). Copies
  further apart are separate events. The same rule holds offline, in backfills and
  in restores. The gate holds the ids (with their event times) of the events within
  ``lateness + horizon`` of the watermark: any copy that is not late and is within
  the horizon of an applied one is among them. Memory: reported by
  :attr:`PartitionGate.tracked_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DUPLICATE", "LATE", "OK", "GateState", "PartitionGate"]

OK = "ok"
LATE = "late"
DUPLICATE = "duplicate"
_BUCKET_MS = 1000
_NO_EVENT = -(2**62)


@dataclass
class GateState:
    """Picklable snapshot of a :class:`PartitionGate` (stored by Bytewax recovery):
    the watermark and the ids held, each with the event times it was applied at."""

    watermark_ms: int
    ids: dict[str, int | tuple[int, ...]]


class PartitionGate:
    """Classifies the events of one partition in offset order.

    Args:
        lateness_ms: Allowed lateness.
        horizon_ms: How far apart in event time two copies of one event may be;
            at least ``lateness_ms``.
        state: A snapshot to resume from.
    """

    __slots__ = (
        "_buckets",
        "_evicted_below",
        "_ids",
        "_keep_ms",
        "horizon_ms",
        "lateness_ms",
        "watermark_ms",
    )

    def __init__(self, lateness_ms: int, horizon_ms: int, state: GateState | None = None) -> None:
        if horizon_ms < lateness_ms:
            raise ValueError(
                f"duplicate horizon {horizon_ms} ms is shorter than the allowed lateness "
                f"{lateness_ms} ms: duplicates of on-time events could be counted twice"
            )
        self.lateness_ms = lateness_ms
        self.horizon_ms = horizon_ms
        self._keep_ms = lateness_ms + horizon_ms
        self.watermark_ms = _NO_EVENT if state is None else state.watermark_ms
        # Every id held, with the event times it was applied at (one lookup whatever the
        # copy's event time), and per 1-second bucket of event time the ids applied in it
        # (to drop them once they are older than lateness + horizon).
        # (one int per id; a tuple for the rare id applied at several distant times).
        self._ids: dict[str, int | tuple[int, ...]] = {} if state is None else dict(state.ids)
        self._buckets: dict[int, set[str]] = {}
        for event_id, times in self._ids.items():
            for t in (times,) if isinstance(times, int) else times:
                self._buckets.setdefault(t // _BUCKET_MS, set()).add(event_id)
        self._evicted_below = min(self._buckets, default=_NO_EVENT)

    def admit(self, event_id: str, event_time_ms: int, produced_ms: int | None = None) -> str:
        """Classify one event (``ok``, ``late`` or ``duplicate``) and advance the watermark.

        Args:
            event_id: The event's id.
            event_time_ms: Its event time.
            produced_ms: When it was produced (the message's Kafka timestamp), if known.
        """
        if event_time_ms < self.watermark_ms - self.lateness_ms:
            return LATE
        held = self._ids.get(event_id)
        if held is None:
            self._ids[event_id] = event_time_ms
        else:
            times = (held,) if isinstance(held, int) else held
            if any(abs(event_time_ms - t) <= self.horizon_ms for t in times):
                return DUPLICATE
            self._ids[event_id] = (*times, event_time_ms)
        bucket = event_time_ms // _BUCKET_MS
        ids = self._buckets.get(bucket)
        if ids is None:
            self._buckets[bucket] = {event_id}
        else:
            ids.add(event_id)
        moved = event_time_ms if produced_ms is None else min(event_time_ms, produced_ms)
        if moved > self.watermark_ms:
            self.watermark_ms = moved
            self._evict()
        return OK

    def _evict(self) -> None:
        keep_from = (self.watermark_ms - self._keep_ms) // _BUCKET_MS
        if keep_from <= self._evicted_below:
            return
        floor_ms = keep_from * _BUCKET_MS
        for bucket in [b for b in self._buckets if b < keep_from]:
            for event_id in self._buckets.pop(bucket):
                held = self._ids.pop(event_id, ())
                kept = tuple(
                    t for t in ((held,) if isinstance(held, int) else held) if t >= floor_ms
                )
                if kept:
                    self._ids[event_id] = kept[0] if len(kept) == 1 else kept
        self._evicted_below = keep_from

    @property
    def tracked_ids(self) -> int:
        """Event ids held for duplicate detection (the memory this takes)."""
        return len(self._ids)

    def snapshot(self) -> GateState:
        """The state to resume from."""
        return GateState(self.watermark_ms, dict(self._ids))
