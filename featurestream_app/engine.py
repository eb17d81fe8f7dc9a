"""``featurestream run``: the engine's processes and the restore after an online-store loss.

One loop (:func:`supervise`) for one process and for N: before the first run, when
the online store lacks the engine's marker, and after every run that found the
store emptied, the tiles still in their windows are rewritten from the offline log
and the marker set; then the flow runs again from its snapshots (replaying what
came after them).

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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurestream.errors import ConfigError, OnlineStoreLost
from featurestream.events import AvroCodec, contract_for_topic
from featurestream.settings import Settings
from streams.core import ViewSpec
from streams.flow import FlowMetrics
from streams.flow.runner import RunConfig, caused_by, engine_marker, kafka_flow, run_flow
from streams.online import EngineMarker, OnlineStore, connect_online_store
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


def supervise(
    store: OnlineStore,
    marker: EngineMarker,
    restore: Callable[[], object] | None,
    run_once: Callable[[], int],
) -> int:
    """Run the engine until a run ends other than by a loss; return its exit status.

    Args:
        store: The online store.
        marker: The engine's marker.
        restore: Rewrites the online tiles from the offline log (None: restores are
            off, and a loss is not looked for).
        run_once: Runs the engine's processes once: :data:`LOST` when the store lost
            the tiles, else the exit status.
    """
    if restore is None:
        return run_once()
    lost = not store.has_marker(marker)  # none: the store started empty since the last run
    while True:
        if lost:
            restore()
            store.set_marker(marker)  # only once the tiles are back
        status = run_once()
        if status != LOST:
            return status
        log.warning("the online store lost the tiles: restoring them and resuming")
        lost = True


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


def recovery_dir(settings: Settings, views: Sequence[ViewSpec], index: int, count: int) -> Path:
    """Each process's Bytewax recovery state, per set of view definitions (a changed
    definition starts afresh; one process keeps the old layout)."""
    base = settings.state_dir / "recovery" / "-".join(v.state_id for v in views)
    return base if count == 1 else base / f"{index}of{count}"


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
    """

    settings: Settings
    views: tuple[ViewSpec, ...]
    offline_root: Path
    stop_at_end: bool
    codec: AvroCodec
    metrics: FlowMetrics
    process: tuple[int, int] = (0, 1)

    def run_once(self) -> int:
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
            detect_lost=settings.restore_online,
            process_index=index,
            process_count=count,
        )
        try:
            run_flow(
                kafka_flow(self.views, config, self.codec, self.metrics),
                epoch_interval_s=settings.snapshot_interval_s,
                recovery_dir=recovery_dir(settings, self.views, index, count),
            )
        except Exception as exc:
            if settings.restore_online and caused_by(exc, OnlineStoreLost):
                return LOST
            raise
        return 0


def _restorer(run: EngineRun, store: OnlineStore) -> Callable[[], object] | None:
    if not run.settings.restore_online:
        return None
    return lambda: restore_online(run.views, run.offline_root, store)


def run_engine(run: EngineRun, *, processes: int, names: Sequence[str]) -> int:
    """The engine of ``run.views`` in this process (``processes == 1``) or in that many
    children; restores the online store whenever it lost the tiles. Returns the exit
    status."""
    store = connect_online_store(run.settings.online_redis_url)
    marker = engine_marker(run.views)
    if processes == 1:
        return supervise(store, marker, _restorer(run, store), run.run_once)
    return supervise(
        store,
        marker,
        _restorer(run, store),
        lambda: _run_children(run.settings, names, processes, stop_at_end=run.stop_at_end),
    )


def run_engine_process(run: EngineRun) -> int:
    """A child of :func:`run_engine`: :data:`LOST_EXIT` when the store lost the tiles
    (the parent restores them), else 0."""
    return LOST_EXIT if run.run_once() == LOST else 0


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
