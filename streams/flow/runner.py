"""Wire the dataflow to Kafka, the online store and the offline log, and run it.

Restoring the online store after a loss and supervising engine processes is the
composition root's (``featurestream_app.engine``): a flow run here stops with
``OnlineStoreLost`` when its writes find the engine's marker gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from bytewax.dataflow import Dataflow

from featurestream.events import AvroCodec, load_contracts

from ..core import ViewSpec
from ..online import OnlineStore, connect_online_store
from .dataflow import STATE_LAYOUT, build_flow
from .metrics import FlowMetrics
from .sinks import OfflineLogSink, OnlineTileSink, RejectedSink
from .source import KafkaEventSource
from .watch import MarkerWatch

__all__ = ["RunConfig", "caused_by", "kafka_flow", "run_flow", "snapshot_state_ids"]

log = logging.getLogger(__name__)

_GC_YOUNG = 50_000  # allocations between collections of the youngest generation


@dataclass(frozen=True)
class RunConfig:
    """What a run of the engine needs beyond the views.

    Attributes:
        bootstrap_servers: Kafka bootstrap servers.
        redis_url: The online store's URL.
        dlq_topic: Dead-letter topic.
        late_topic: Late-events topic.
        offline_log: Root of the offline log (None: no offline log).
        stop_at_end: Stop when every partition is consumed to its end (catch-up
            runs and tests) instead of tailing forever.
        write_retry_s: How long failing online writes are retried before stopping.
        dedupe_horizon_ms: Duplicate-detection horizon; None = the allowed lateness.
        end_check_s: How often an idle source partition checks whether its topic was
            created again (it ends before the offset read to).
        process_index: This engine process, of ``process_count``: it reads the source
            partitions ``p % process_count == process_index``. Events are keyed by
            their entity, so processes share no entity and no partition.
    """

    bootstrap_servers: str
    redis_url: str
    dlq_topic: str
    late_topic: str = "featurestream.late"
    offline_log: Path | None = None
    stop_at_end: bool = False
    write_retry_s: float = 60.0
    dedupe_horizon_ms: int | None = None
    end_check_s: float = 5.0
    process_index: int = 0
    process_count: int = 1

    @property
    def log_suffix(self) -> str:
        """What tells this process's offline log files apart (empty for one process)."""
        return "" if self.process_count == 1 else f"-{self.process_index}of{self.process_count}"


def kafka_flow(
    views: Sequence[ViewSpec],
    config: RunConfig,
    codec: AvroCodec | None = None,
    metrics: FlowMetrics | None = None,
    watch: MarkerWatch | None = None,
) -> Dataflow:
    """The dataflow of ``views`` reading Kafka and writing the online store (no I/O
    until run).

    Args:
        views: The views to run.
        config: Where to read and write.
        codec: The decoder (default: the checked-in contracts, no registry).
        metrics: Counters to fill (default: a fresh set).
        watch: The markers the store must hold (see :class:`MarkerWatch`); None: the
            flow does not look for a loss.
    """
    metrics = metrics or FlowMetrics()
    codec = codec or AvroCodec(load_contracts())
    sources = {
        view.name: KafkaEventSource(
            config.bootstrap_servers,
            view,
            codec,
            horizon_ms=config.dedupe_horizon_ms,
            stop_at_end=config.stop_at_end,
            end_check_s=config.end_check_s,
            metrics=metrics,
            process=(config.process_index, config.process_count),
            watch=watch,
        )
        for view in views
    }
    project = views[0].project if views else ""
    url = config.redis_url

    def store() -> OnlineStore:
        return connect_online_store(url)

    producer = {"bootstrap.servers": config.bootstrap_servers}
    return build_flow(
        views,
        sources,
        OnlineTileSink(store, project, config.write_retry_s, metrics, watch),
        RejectedSink(producer, config.dlq_topic, metrics),
        RejectedSink(producer, config.late_topic, metrics),
        None
        if config.offline_log is None
        else OfflineLogSink(config.offline_log, views, config.log_suffix),
        metrics=metrics,
    )


def run_flow(
    flow: Dataflow, *, epoch_interval_s: float = 1.0, recovery_dir: Path | None = None
) -> None:
    """Run ``flow`` in this process with one worker until it ends (or forever when tailing).

    Args:
        flow: The dataflow.
        epoch_interval_s: Epoch length; with recovery, the snapshot interval.
        recovery_dir: Bytewax recovery partitions (created when missing). With it, a
            restarted run resumes every source offset, partition watermark, tile state
            and offline-log file number from the last snapshot; without it, a run
            starts from the beginning of the topics and rebuilds everything.
    """
    from bytewax._bytewax import cli_main
    from bytewax.recovery import RecoveryConfig, init_db_dir

    # The flow allocates a few short-lived objects per event and holds millions of
    # long-lived ones (entity states) without reference cycles: the collector's
    # default thresholds would rescan the long-lived heap every few thousand events.
    # Freeze what start-up built and collect young objects less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG, 50, 100)
    _return_freed_memory(every_s=epoch_interval_s)
    recovery = None
    if recovery_dir is not None:
        if not any(recovery_dir.glob("part-*.sqlite3")):
            recovery_dir.mkdir(parents=True, exist_ok=True)
            init_db_dir(recovery_dir, 1)  # type: ignore[no-untyped-call]
        recovery = RecoveryConfig(str(recovery_dir))  # type: ignore[no-untyped-call]
    cli_main(  # type: ignore[no-untyped-call]
        flow,
        workers_per_process=1,
        epoch_interval=timedelta(seconds=epoch_interval_s),
        recovery_config=recovery,
    )


def _return_freed_memory(every_s: float) -> None:
    """Give memory freed by the allocator back to the system, every ``every_s``.

    Each snapshot allocates the packed state of every shard changed in the epoch and
    frees it once written; glibc keeps such freed blocks in its heap, so without this
    the process's resident memory stays at the peak of the largest snapshot.
    """
    if any(t.name == "malloc-trim" for t in threading.enumerate()):
        return  # one per process (runs restart after a restore)
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return  # not glibc: nothing to do

    def loop() -> None:
        while True:
            time.sleep(every_s)
            trim(0)

    threading.Thread(target=loop, name="malloc-trim", daemon=True).start()


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` (e.g. Bytewax's error wrapping a sink's) comes from a ``kind``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind) or kind.__name__ in str(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def snapshot_state_ids(recovery_dir: Path | None) -> set[str]:
    """The view definitions (``state_id``) the recovery store holds snapshots of: the
    views a run from it resumes (the others start from fresh state).

    Reads the Bytewax 0.21 recovery partitions (SQLite, table ``snaps``) read-only.
    """
    import sqlite3

    found: set[str] = set()
    if recovery_dir is None:
        return found
    for part in sorted(recovery_dir.glob("part-*.sqlite3")):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True)) as db:
                rows = db.execute("SELECT DISTINCT step_id FROM snaps").fetchall()
        except sqlite3.Error:
            continue
        for (step_id,) in rows:
            # "{flow}.tiles_{state_id}_v{layout}" and "{flow}.kafka_in_{state_id}_v{layout}"
            # (a view whose topic had no events yet has snapshots of its source only)
            name = str(step_id).rsplit(".", 1)[-1]
            suffix = f"_v{STATE_LAYOUT}"
            for prefix in ("tiles_", "kafka_in_"):
                if name.startswith(prefix) and name.endswith(suffix):
                    found.add(name[len(prefix) : -len(suffix)])
    return found
