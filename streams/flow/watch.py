"""Watching the online store for a loss while the engine runs, writes or not.

Every view the engine writes has a marker in the store (``ready`` or ``building``,
with the store's eviction count when it was set, see
:class:`~streams.online.Marker`). A store that restarted empty has none, and one
that evicted keys to free memory counts more evictions than the marker's: either
way the store no longer holds tiles it acknowledged. The engine's writes notice a
missing marker (the write checks it atomically); this watch notices both, for an
engine with nothing to write as well: every ``interval_s`` it reads the markers and
the store's stats (kept for the engine's metrics), and the flow stops with
:class:`~featurestream.errors.OnlineStoreLost` once one view is lost.

The look happens in the flow's own thread, from the sources' :meth:`MarkerWatch.check`
(called for every batch they emit and every empty poll): a thread of its own would
wait for the interpreter lock behind a busy dataflow for seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from featurestream.errors import OnlineStoreLost, OnlineStoreUnavailable

from ..online import OnlineStore, ViewState, evicted_since
from .metrics import FlowMetrics

__all__ = ["MarkerWatch"]

log = logging.getLogger(__name__)


class MarkerWatch:
    """The markers an engine expects in the store, and whether one went missing or the
    store evicted keys since it was set.

    Args:
        states: The views whose markers must be there (none: no look, ``every_tick``
            still runs).
        interval_s: How often :meth:`check` looks.
        metrics: Where the store's stats go (None: nowhere).
        every_tick: Called every ``tick_s`` while nothing is lost (e.g. to mark views
            that caught up ready); its store errors are ignored like the look's.
        tick_s: How often ``every_tick`` runs.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        states: Iterable[ViewState],
        interval_s: float = 1.0,
        metrics: FlowMetrics | None = None,
        every_tick: Callable[[], None] | None = None,
        tick_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.expected = frozenset(states)
        self.interval_s = interval_s
        self._metrics = metrics
        self._every_tick = every_tick
        self._tick_s = tick_s
        self._clock = clock
        self._store: OnlineStore | None = None
        self._next = 0.0
        self._next_tick = 0.0
        self._lost: list[ViewState] = []
        self._why = "it restarted empty"

    def attach(self, store: OnlineStore) -> None:
        """Look at ``store`` from now on (the sink's, once it is built)."""
        self._store = store
        self._next = self._clock() + self.interval_s
        self._next_tick = self._clock() + self._tick_s

    def look(self, store: OnlineStore) -> bool:
        """Read the markers and the store's stats once; True when a view is lost.

        Raises:
            OnlineStoreUnavailable: when the store does not answer.
        """
        states = sorted(self.expected, key=lambda s: (s.view, s.state_id))
        found = store.markers(states)
        stats = store.stats()
        if self._metrics is not None:
            self._metrics.store = stats
        missing = [s for s, marker in zip(states, found, strict=True) if marker is None]
        evicted = {
            s: why
            for s, marker in zip(states, found, strict=True)
            if marker is not None and (why := evicted_since(marker.mark, stats)) is not None
        }
        if missing:
            self._why = "it restarted empty"
            cause = "restarted"
        elif evicted:
            self._why = next(iter(evicted.values()))
            cause = "evicted"
        else:
            return False
        lost = missing or list(evicted)
        log.error(
            "the online store lost tiles of views=%s: %s; restoring them",
            ",".join(s.view for s in lost),
            self._why,
        )
        if self._metrics is not None:
            self._metrics.store_losses[cause] += 1
        self._lost = lost
        return True

    def lost(self, views: Iterable[ViewState]) -> None:
        """Record views a write found lost."""
        self._lost = [*self._lost, *views]

    def check(self) -> None:
        """Look when the interval has passed; raise when a view was lost (called by the
        sources all the time: cheap between looks).

        Raises:
            OnlineStoreLost: naming the views.
        """
        store = self._store
        now = self._clock()
        if not self._lost and store is not None:
            try:
                if self.expected and now >= self._next:
                    self._next = now + self.interval_s
                    self.look(store)
                if not self._lost and self._every_tick is not None and now >= self._next_tick:
                    self._next_tick = now + self._tick_s
                    self._every_tick()
            except OnlineStoreUnavailable:
                pass  # down for now: its writes retry; a loss shows once it is back
        if self._lost:
            views = ", ".join(sorted({s.view for s in self._lost}))
            raise OnlineStoreLost(f"the online store lost the tiles of {views} ({self._why})")
