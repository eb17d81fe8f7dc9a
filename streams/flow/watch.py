"""Watching the online store for a loss while the engine runs, writes or not.

Every view the engine writes has a marker in the store (``ready`` or ``building``).
A store that restarted empty has none: the engine's writes notice it (the write
checks the marker atomically), and, for an engine with nothing to write, this
watch does: a thread reads the markers every ``interval_s`` and the flow's sources
stop the flow with :class:`~featurestream.errors.OnlineStoreLost` once one is gone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from featurestream.errors import OnlineStoreLost, OnlineStoreUnavailable

from ..online import OnlineStore, ViewState

__all__ = ["MarkerWatch"]

log = logging.getLogger(__name__)


class MarkerWatch:
    """The markers an engine expects in the store, and whether one went missing.

    Args:
        states: The views whose markers must be there.
        interval_s: How often the thread reads them.
    """

    def __init__(self, states: Iterable[ViewState], interval_s: float = 1.0) -> None:
        self.expected = frozenset(states)
        self.interval_s = interval_s
        self._lost: list[ViewState] = []
        self._stop = threading.Event()

    def start(self, store: OnlineStore) -> None:
        """Read the markers in a daemon thread until :meth:`stop`."""
        if not self.expected:
            return
        threading.Thread(target=self._run, args=(store,), name="marker-watch", daemon=True).start()

    def stop(self) -> None:
        """End the thread."""
        self._stop.set()

    def _run(self, store: OnlineStore) -> None:
        states = sorted(self.expected, key=lambda s: (s.view, s.state_id))
        while not self._stop.wait(self.interval_s):
            try:
                found = store.markers(states)
            except OnlineStoreUnavailable:
                continue  # down for now: its writes retry; a loss shows once it is back
            missing = [s for s, marker in zip(states, found, strict=True) if marker is None]
            if missing:
                log.warning(
                    "the online store lost its markers views=%s: it restarted empty",
                    ",".join(s.view for s in missing),
                )
                self._lost = missing
                return

    def lost(self, views: Iterable[ViewState]) -> None:
        """Record views a write found lost."""
        self._lost = [*self._lost, *views]

    def check(self) -> None:
        """Raise when a marker went missing (called by the sources, cheaply, all the time).

        Raises:
            OnlineStoreLost: naming the views.
        """
        if self._lost:
            views = ", ".join(sorted({s.view for s in self._lost}))
            raise OnlineStoreLost(
                f"the online store lost the tiles of {views} (it restarted empty)"
            )
