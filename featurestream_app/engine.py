"""``featurestream run``: the engine's processes, its views' markers, and the restore
after an online-store loss.

One loop (:func:`supervise`) for one process and for N. Before each run it looks at
every view's marker in the online store (``streams.online``: ``ready``, ``building``
or absent) and at what the engine's snapshots hold:

* a view resumed from snapshots whose marker is gone: the store lost its tiles (it
  restarted empty); they are rewritten from the offline log with the stream's own
  fold, and the marker is set ``ready`` before the flow resumes;
* a view without snapshots (a new or changed definition, or lost state) rebuilds
  from its topic: its marker is ``building`` (readers answer NOT_FOUND, never a
  partial value) until its progress has caught up with the topic's end at the start,
  then ``ready``. The store holding progress of this very definition that the topic
  no longer covers (state lost, topic truncated or recreated) is refused: the
  rebuild would set tiles with less than the store holds.

While the flow runs, a write, or the watch within a second, finding a marker gone
or keys evicted since it was set stops it (``OnlineStoreLost``), and the loop
restores and resumes.

With ``--processes N`` each child process reads the partitions ``p % N == i``.
Events are keyed by their entity, so each Kafka partition holds whole entities: a
child owns its entities' state, its partitions' watermarks and their progress, and
exchanges nothing with the others (Bytewax's cluster mode would route every item
between processes by key, which here is pure overhead). Each child has its own
recovery state and offline log files and exits with :data:`LOST_EXIT` when the
store lost the tiles; the parent then restores with every child stopped and
starts them all again. It stops them all when one fails or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurestream.errors import ConfigError, OnlineStoreLost, OnlineStoreUnavailable
from featurestream.events import AvroCodec, contract_for_topic
from featurestream.settings import Settings
from streams.core import ViewSpec
from streams.flow import FlowMetrics
from streams.flow.runner import RunConfig, caused_by, kafka_flow, run_flow, snapshot_state_ids
from streams.flow.watch import MarkerWatch
from streams.kafka import holds, partitions_of, watermarks
from streams.online import (
    BUILDING,
    READY,
    Marker,
    OnlineStore,
    ProgressKey,
    StoreMark,
    ViewState,
    check_eviction,
    connect_online_store,
    evicted_since,
)
from streams.restore import restore_online

__all__ = [
    "LOST",
    "LOST_EXIT",
    "EngineRun",
    "check_shardable",
    "recovery_dir",
    "run_engine",
    "run_engine_process",
    "supervise",
]

log = logging.getLogger(__name__)

LOST_EXIT = 75  # EX_TEMPFAIL: the online store lost the tiles
LOST = -1
"""What a run returns when the online store lost the tiles (else its exit status)."""
_READY_POLL_S = 0.5


def check_shardable(specs: Sequence[ViewSpec]) -> None:
    """Views keyed by anything but their topic's message key cannot be split by partition.

    Raises:
        ConfigError: naming the view.
    """
    for spec in specs:
        key = contract_for_topic(spec.topic).key_field
        if tuple(spec.join_keys) != (key,):
            raise ConfigError(
                f"view {spec.name!r} is keyed by {list(spec.join_keys)} but topic "
                f"{spec.topic!r} by {key!r}: its entities span partitions, so it cannot run "
                "in several processes; run it with --processes 1"
            )


def recovery_dir(settings: Settings, index: int, count: int) -> Path:
    """Each process's Bytewax recovery state. One store for every view: a view's steps
    carry its definition's hash, so a changed or added view starts from fresh state
    while the others resume."""
    base = settings.state_dir / "recovery"
    return base / "engine" if count == 1 else base / f"{index}of{count}"


@dataclass(frozen=True)
class EngineRun:
    """One engine process's part of a run.

    Attributes:
        settings: The process's settings.
        views: The views run.
        offline_root: Root of the offline log.
        stop_at_end: Stop when every partition is consumed.
        codec: The decoder.
        metrics: The process's counters.
        process: ``(index, count)`` of this process.
        recovery: Snapshot to (and resume from) the state dir's recovery store; False:
            every run starts from fresh state (catch-up runs of tests and benchmarks).
    """

    settings: Settings
    views: tuple[ViewSpec, ...]
    offline_root: Path
    stop_at_end: bool
    codec: AvroCodec
    metrics: FlowMetrics
    process: tuple[int, int] = (0, 1)
    recovery: bool = True

    def recovery_dirs(self, count: int | None = None) -> list[Path]:
        """The recovery stores of every process share (``count``: this run's)."""
        if not self.recovery:
            return []
        n = self.process[1] if count is None else count
        return [recovery_dir(self.settings, i, n) for i in range(n)]

    def run_once(self, watch: MarkerWatch | None) -> int:
        """Run the flow in this process until it ends: 0, or :data:`LOST`."""
        settings = self.settings
        index, count = self.process
        config = RunConfig(
            bootstrap_servers=settings.bootstrap_servers,
            redis_url=settings.online_redis_url,
            dlq_topic=settings.dlq_topic,
            late_topic=settings.late_topic,
            offline_log=self.offline_root,
            stop_at_end=self.stop_at_end,
            dedupe_horizon_ms=settings.dedupe_horizon_ms,
            end_check_s=settings.partition_end_check_s,
            process_index=index,
            process_count=count,
        )
        # A flow stops by an exception raised in one of its steps (the online store lost a
        # view's tiles, the broker refused a dead letter): Bytewax's Rust worker reports it
        # as a panic, with a backtrace of some 140 lines when RUST_BACKTRACE is set, which
        # hides the line that says why (the engine's, or the Python traceback).
        os.environ["RUST_BACKTRACE"] = "1" if settings.rust_backtrace else "0"
        try:
            run_flow(
                kafka_flow(self.views, config, self.codec, self.metrics, watch),
                epoch_interval_s=settings.snapshot_interval_s,
                recovery_dir=recovery_dir(settings, index, count) if self.recovery else None,
            )
        except Exception as exc:
            if caused_by(exc, OnlineStoreLost):
                return LOST
            raise
        return 0

    def watch(self, every_tick: Callable[[], None] | None = None) -> MarkerWatch:
        """The markers this process must find in the store (none when restores are off:
        the engine then carries on whatever the store holds); ``every_tick`` runs every
        half second, in the flow's thread."""
        states = [ViewState.of(v) for v in self.views] if self.settings.restore_online else []
        return MarkerWatch(
            states,
            interval_s=self.settings.online_check_interval_s,
            metrics=self.metrics,
            every_tick=every_tick,
            tick_s=_READY_POLL_S,
        )


def _resumed(run: EngineRun, processes: int) -> set[str]:
    """The views every process share resumes from snapshots (by ``state_id``)."""
    dirs = run.recovery_dirs(processes)
    if not dirs:
        return set()
    found = [snapshot_state_ids(d) for d in dirs]
    return set.intersection(*found)


def _ends(run: EngineRun) -> dict[str, dict[ProgressKey, tuple[int, int]]]:
    """Per view, ``(low, high)`` offsets of every partition of its topic."""
    settings = run.settings
    topics = sorted({v.topic for v in run.views})
    parts = [
        (t, p) for t, ps in partitions_of(settings.bootstrap_servers, topics).items() for p in ps
    ]
    marks = watermarks(settings.bootstrap_servers, parts)
    return {
        v.name: {ProgressKey(t, p): marks[t, p] for t, p in parts if t == v.topic}
        for v in run.views
    }


def prepare(
    run: EngineRun, store: OnlineStore, processes: int
) -> dict[ViewState, tuple[Marker, dict[ProgressKey, int]]]:
    """Set every view's marker for the coming run; return the views that build, with
    their marker and the offsets their progress must reach to be ``ready``.

    A view lost its tiles when its marker is gone or the store evicted keys since the
    marker was set (:func:`~streams.online.evicted_since`). Its tiles are restored
    from the offline log when the engine resumes it from snapshots, else rebuilt from
    its topic.

    Raises:
        ConfigError: for a view whose progress the store holds but neither the engine's
            snapshots nor the topic cover.
        OnlineStoreLost: when the store evicted keys while its tiles were restored (it
            has too little memory for them).
    """
    resumed = _resumed(run, processes)
    states = [ViewState.of(v) for v in run.views]
    stats = store.stats()
    markers = store.markers(states)
    ends = _ends(run)
    now = StoreMark.of(stats)
    building: dict[ViewState, tuple[Marker, dict[ProgressKey, int]]] = {}
    restored: list[ViewState] = []
    for view, state, marker in zip(run.views, states, markers, strict=True):
        why = "no marker" if marker is None else evicted_since(marker.mark, stats)
        if view.state_id in resumed:
            if why is None and marker is not None and marker.ready:
                continue
            if why is None and marker is not None:  # resumed while catching up
                building[state] = (marker, _targets(ends[view.name]))
                continue
            if run.settings.restore_online:
                log.warning("view=%s lost its online tiles (%s): restoring them", view.name, why)
                restore_online([view], run.offline_root, store)
            restored.append(state)
            continue
        short = _uncovered(run.settings.bootstrap_servers, store.progress(state))
        if short:
            raise ConfigError(
                f"view {view.name!r}: the online store holds its tiles up to offsets this "
                f"engine has no state for ({run.settings.state_dir}/recovery) and the topic no "
                f"longer holds ({'; '.join(short)}): rebuilding would set tiles with less than "
                "the store holds. Restore the state dir, or clear the view's online data "
                "before running it"
            )
        build = Marker(BUILDING, now)
        store.set_marker(state, build)
        building[state] = (build, _targets(ends[view.name]))
    if restored:
        after = store.stats()
        why = evicted_since(now, after)
        if why is not None:
            raise OnlineStoreLost(
                f"the online store dropped tiles while they were restored ({why}): it has "
                f"too little memory for them (uses {after.used_bytes} of {after.max_bytes} "
                "bytes); give it more memory and set maxmemory-policy noeviction"
            )
        for state in restored:  # only once the tiles are back
            store.set_marker(state, Marker(READY, now))
    return building


def _targets(ends: dict[ProgressKey, tuple[int, int]]) -> dict[ProgressKey, int]:
    return {k: high for k, (_, high) in ends.items()}


def _uncovered(bootstrap: str, progress: dict[ProgressKey, int]) -> list[str]:
    """The partitions whose recorded progress the topic no longer covers from offset 0
    (a rebuild from the topic would miss events the store's tiles hold)."""
    wanted = {(k.topic, k.partition): offset for k, offset in progress.items()}
    return [
        f"{topic}/{partition} no longer holds the offsets before {wanted[topic, partition]}"
        for (topic, partition), ok in sorted(holds(bootstrap, wanted).items())
        if not ok
    ]


class _Readiness:
    """Sets a rebuilding view's marker ``ready`` once its progress reached the offsets
    its topic had at the start (a thread, and once more when the run ends). The marker
    keeps the store's eviction count of the rebuild's start: keys evicted while it
    built show."""

    def __init__(
        self,
        store: OnlineStore,
        building: dict[ViewState, tuple[Marker, dict[ProgressKey, int]]],
    ):
        self._store = store
        self._pending = dict(building)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="view-readiness", daemon=True)

    def start(self) -> None:
        if self._pending:
            self._thread.start()

    def _run(self) -> None:
        while self._pending and not self._stop.wait(_READY_POLL_S):
            self.check()

    def check(self) -> None:
        """Mark the views that caught up."""
        for state, (marker, targets) in list(self._pending.items()):
            try:
                progress = self._store.progress(state)
                if not all(progress.get(k, 0) >= target for k, target in targets.items()):
                    continue
                self._store.set_marker(state, Marker(READY, marker.mark))
            except OnlineStoreUnavailable:
                return
            del self._pending[state]
            log.info("view=%s caught up: ready", state.view)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.check()


def supervise(
    run: EngineRun,
    store: OnlineStore,
    run_once: Callable[[Callable[[], None] | None], int],
    *,
    processes: int = 1,
) -> int:
    """Run the engine until a run ends other than by a loss; return its exit status.

    Args:
        run: The engine's run.
        store: The online store.
        run_once: Runs the engine's processes once: :data:`LOST` when the store lost
            the tiles, else the exit status. Its argument (None with several processes)
            marks views that caught up ready: the flow calls it with its watch's looks
            (a thread of this process would wait behind the busy flow).
        processes: How many processes share the partitions.
    """
    while True:
        readiness = _Readiness(store, prepare(run, store, processes))
        if processes > 1:  # this process only waits for its children
            readiness.start()
        try:
            status = run_once(readiness.check if processes == 1 else None)
        finally:
            readiness.stop()
        if status != LOST:
            return status
        log.warning("the online store lost the tiles: restoring them and resuming")


def run_engine(run: EngineRun, *, processes: int, names: Sequence[str]) -> int:
    """The engine of ``run.views`` in this process (``processes == 1``) or in that many
    children; restores the online store whenever it lost the tiles. Returns the exit
    status."""
    store = connect_online_store(run.settings.online_redis_url)
    warning = check_eviction(store.stats(), allowed=run.settings.allow_evicting_store)
    if warning:
        log.warning("%s", warning)
    if processes == 1:
        return supervise(run, store, lambda ready: run.run_once(run.watch(ready)))
    return supervise(
        run,
        store,
        lambda _: _run_children(run.settings, names, processes, stop_at_end=run.stop_at_end),
        processes=processes,
    )


def run_engine_process(run: EngineRun) -> int:
    """A child of :func:`run_engine`: :data:`LOST_EXIT` when the store lost the tiles
    (the parent restores them), else 0."""
    return LOST_EXIT if run.run_once(run.watch()) == LOST else 0


def _die_with_parent() -> None:
    """In a child, before exec: the kernel sends SIGKILL when the parent dies, so a killed
    parent never leaves engine processes behind to clash with its restart."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def _run_children(
    settings: Settings, names: Sequence[str], count: int, *, stop_at_end: bool
) -> int:
    """Run ``count`` engine processes until they end: 0, :data:`LOST` when one found the
    store emptied, or the status of the first that failed."""
    args = [sys.executable, "-m", "featurestream_app.cli", "run", *names]
    if stop_at_end:
        args.append("--stop-at-end")
    children: list[subprocess.Popen[bytes]] = []

    def terminate(signum: int, _frame: Any) -> None:
        _stop(children)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    for index in range(count):
        env = {**os.environ}
        if settings.metrics_port:
            env["FEATURESTREAM_METRICS_PORT"] = str(settings.metrics_port + index)
        children.append(
            subprocess.Popen(
                [*args, "--process-index", str(index), "--process-count", str(count)],
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run here yet
            )
        )
    status = _wait(children)
    return LOST if status == LOST_EXIT else status


def _wait(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait until all end (0), or one fails: stop the others, return its status."""
    while True:
        codes = [c.poll() for c in children]
        failed = next((c for c in codes if c not in (None, 0)), None)
        if failed is not None:
            _stop(children)
            return failed
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.2)
