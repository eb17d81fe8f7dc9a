"""The baseline of the benchmarks: streaming features the way Feast's docs show.

What a Feast user builds from Feast's and Bytewax's documentation for a "clicks
in the last 5 minutes" feature, used as the point of comparison for the engine:

1. Bytewax ``KafkaSource`` (``bytewax.connectors.kafka``) reads the ``clicks``
   topic from the beginning, all partitions, ``tail=False`` so the flow ends at
   the end of each partition.
2. Each message value is decoded with fastavro (the checked-in ``clicks``
   contract; single-object encoding, so the 10-byte header is skipped).
3. Bytewax event-time sliding windows (``bytewax.operators.windowing``):
   ``EventClock`` on ``event_time`` with a 5 s watermark delay and a
   ``SlidingWindower`` of 5 minutes sliding every 5 s, aligned to the Unix
   epoch, keyed by ``user_id``. One ``fold_window`` keeps the click count and
   the set of clicked items of each window (the windowing guide's pattern).
4. A custom Bytewax sink (``DynamicSink`` / ``StatelessSinkPartition``, as in
   Bytewax's "custom outputs" docs) turns every output batch of closed windows
   into a DataFrame ``(user_id, event_timestamp, clicks_last_5min,
   distinct_items_5min)`` and calls ``FeatureStore.push("clicks_push", df,
   to=PushMode.ONLINE_AND_OFFLINE)`` -- Feast's "Push source" / stream ingestion
   pattern (the Spark ``foreachBatch`` -> ``store.push`` tutorial), with one push
   per batch. ``event_timestamp`` is the window's (exclusive) close time.

Nothing is tuned beyond what those docs show: default ``KafkaSource`` batch size,
default ``fold_window`` (``ordered=True``), ``EventClock`` as in the docs' examples,
default Redis online store (timestamp read before every write), default file
offline store (Feast's Dask store, which rereads and rewrites the whole Parquet
file on every offline push). ``run_baseline(..., wake_on_window_close=False)`` is
the one opt-in deviation, for a backlog (see its docstring).

Semantics of what it pushes, as the docs' pattern has them:

- One row per (user, window with at least one click): each click is in 60
  windows, so a run pushes several rows per event (about 4 per event for the
  benchmark's 100k Zipf users). A window with no clicks is never emitted, so a
  user's online value stays at its last non-empty window instead of going to 0.
- ``EventClock``'s watermark is per key and advances with system time since the
  key's newest event; when one round of input batches takes longer than the 5 s
  delay, a user's next events are behind the watermark and land only in
  ``WindowOut.late`` (counted, in no window: those windows under-count).
- An undecodable message stops the flow.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import bytewax.operators as op
import fastavro
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from bytewax.connectors.kafka import KafkaError, KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.errors import BytewaxRuntimeError
from bytewax.operators.windowing import EventClock, SlidingWindower, fold_window
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource, ValueType
from feast.data_source import PushMode
from feast.types import Int64

from featurestream.events import load_contracts

__all__ = ["FEATURE_VIEW", "PUSH_SOURCE", "run_baseline", "write_baseline_repo"]

FEATURE_VIEW = "baseline_click_stats"
PUSH_SOURCE = "clicks_push"

WINDOW_LENGTH = timedelta(minutes=5)
WINDOW_SLIDE = timedelta(seconds=5)
WATERMARK_DELAY = timedelta(seconds=5)
ALIGN_TO = datetime(1970, 1, 1, tzinfo=UTC)

# The explicit schema of the batch source: Feast's file offline store appends pushed
# rows to this file and checks pushed columns against it.
_LOG_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("event_timestamp", pa.timestamp("ns", tz="UTC")),
        ("clicks_last_5min", pa.int64()),
        ("distinct_items_5min", pa.int64()),
    ]
)

_Message = KafkaSourceMessage[bytes | None, bytes | None] | KafkaError[bytes | None, bytes | None]
_Window = tuple[int, set[int]]  # (clicks, distinct item ids) of one window


def _feast_redis(redis_url: str) -> str:
    """Feast's ``host:port,db=N[,password=P]`` form of a ``redis://`` URL."""
    url = urlsplit(redis_url)
    db = url.path.strip("/") or "0"
    out = f"{url.hostname or 'localhost'}:{url.port or 6379},db={db}"
    if url.password:
        out += f",password={unquote(url.password)}"
    return out


def write_baseline_repo(root: Path, redis_url: str) -> Path:
    """Write and apply a minimal Feast repository for the baseline under ``root``.

    ``feature_store.yaml`` uses Feast's Redis online store at ``redis_url`` and a file
    offline store and registry under ``root``. Registered (what ``feast apply`` does):
    Entity ``user(user_id)``, a ``FileSource`` batch source (an empty Parquet file with
    the view's columns), a ``PushSource`` ``clicks_push`` over it, and FeatureView
    ``baseline_click_stats`` (``clicks_last_5min``, ``distinct_items_5min``, online).

    Args:
        root: folder of the repository (created if missing).
        redis_url: ``redis://host:port/db`` of the online store.

    Returns:
        The repository path, to pass to :func:`run_baseline`.
    """
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    data.mkdir(exist_ok=True)
    log = data / "click_stats.parquet"
    pq.write_table(_LOG_SCHEMA.empty_table(), log)
    (root / "feature_store.yaml").write_text(
        "project: baseline\n"
        "provider: local\n"
        "registry: data/registry.db\n"
        "online_store:\n"
        "  type: redis\n"
        f'  connection_string: "{_feast_redis(redis_url)}"\n'
        "offline_store:\n"
        "  type: file\n"
        "entity_key_serialization_version: 3\n"
    )
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    batch_source = FileSource(
        name="click_stats_log", path=str(log.resolve()), timestamp_field="event_timestamp"
    )
    push_source = PushSource(name=PUSH_SOURCE, batch_source=batch_source)
    view = FeatureView(
        name=FEATURE_VIEW,
        entities=[user],
        ttl=timedelta(hours=1),
        schema=[
            Field(name="clicks_last_5min", dtype=Int64),
            Field(name="distinct_items_5min", dtype=Int64),
        ],
        source=push_source,
        online=True,
    )
    FeatureStore(repo_path=str(root.resolve())).apply([user, batch_source, push_source, view])
    return root


@dataclass
class _Run:
    """Counters of one run, shared by the steps of its (single-worker) flow."""

    events: int
    deadline: float
    started: float = field(default_factory=time.perf_counter)
    consumed: int = 0
    late_event_ids: set[str] = field(default_factory=set)
    pushes: int = 0
    rows_pushed: int = 0
    last_push: float | None = None

    def check_deadline(self) -> None:
        if time.perf_counter() > self.deadline:
            raise TimeoutError("baseline run past its deadline")


class _PushPartition(StatelessSinkPartition[tuple[str, tuple[int, _Window]]]):
    def __init__(self, store: FeatureStore, run: _Run) -> None:
        self._store = store
        self._run = run

    def write_batch(self, items: list[tuple[str, tuple[int, _Window]]]) -> None:
        self._run.check_deadline()
        rows = [
            {
                "user_id": int(user_id),
                "event_timestamp": ALIGN_TO + WINDOW_SLIDE * window_id + WINDOW_LENGTH,
                "clicks_last_5min": clicks,
                "distinct_items_5min": len(item_ids),
            }
            for user_id, (window_id, (clicks, item_ids)) in items
        ]
        self._store.push(PUSH_SOURCE, pd.DataFrame(rows), to=PushMode.ONLINE_AND_OFFLINE)
        self._run.pushes += 1
        self._run.rows_pushed += len(rows)
        self._run.last_push = time.perf_counter()


class _PushSink(DynamicSink[tuple[str, tuple[int, _Window]]]):
    def __init__(self, repo: Path, run: _Run) -> None:
        self._repo = repo
        self._run = run

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PushPartition:
        return _PushPartition(FeatureStore(repo_path=str(self._repo.resolve())), self._run)


def _build_flow(
    bootstrap_servers: str, topic: str, repo: Path, run: _Run, wake_on_window_close: bool
) -> Dataflow:
    parsed = next(c for c in load_contracts() if c.topic == topic).parsed

    def decode(msg: _Message) -> dict[str, Any] | None:
        run.check_deadline()
        # A KafkaError never arrives here: the source raises on errors (its default).
        if isinstance(msg, KafkaError) or msg.value is None:
            return None
        run.consumed += 1
        if run.consumed > run.events:
            return None
        # Single-object encoding: 2 marker bytes and an 8-byte fingerprint, then the body.
        body = io.BytesIO(msg.value[10:])
        return cast(dict[str, Any], fastavro.schemaless_reader(body, parsed, None))

    def event_time(click: dict[str, Any]) -> datetime:
        return datetime.fromtimestamp(click["event_time"] / 1000, tz=UTC)

    def new_window() -> _Window:
        return 0, set()

    def add_click(window: _Window, click: dict[str, Any]) -> _Window:
        clicks, items = window
        items.add(click["item_id"])
        return clicks + 1, items

    def merge(a: _Window, b: _Window) -> _Window:
        return a[0] + b[0], a[1] | b[1]

    def count_late(late: tuple[str, tuple[int, dict[str, Any]]]) -> None:
        # One item per (window, event): a late event is late for all its windows.
        run.late_event_ids.add(late[1][1]["event_id"])

    if wake_on_window_close:
        clock = EventClock(event_time, wait_for_system_duration=WATERMARK_DELAY)
    else:
        clock = EventClock(
            event_time, wait_for_system_duration=WATERMARK_DELAY, to_system_utc=lambda _ts: None
        )
    flow = Dataflow("baseline_click_stats")
    messages = op.input("kafka_in", flow, KafkaSource([bootstrap_servers], [topic], tail=False))
    clicks = op.filter_map("decode_avro", messages, decode)
    keyed = op.key_on("key_on_user", clicks, lambda click: str(click["user_id"]))
    windows = fold_window(
        "clicks_5min",
        keyed,
        clock,
        SlidingWindower(length=WINDOW_LENGTH, offset=WINDOW_SLIDE, align_to=ALIGN_TO),
        new_window,
        add_click,
        merge,
    )
    op.inspect("count_late", windows.late, lambda _step, late: count_late(late))
    op.output("feast_push", windows.down, _PushSink(repo, run))
    return flow


def run_baseline(
    bootstrap_servers: str,
    topic: str,
    repo: Path,
    events: int,
    timeout_s: float,
    *,
    wake_on_window_close: bool = True,
) -> dict[str, Any]:
    """Run the baseline flow in this process over the first ``events`` messages of ``topic``.

    Reads every partition from the beginning to its end (messages past the first
    ``events`` are read but ignored); all windows close at the end of input and are
    pushed before this returns.

    Args:
        bootstrap_servers: ``host:port`` of the broker.
        topic: topic of Avro single-object encoded clicks.
        repo: a repository written by :func:`write_baseline_repo`.
        events: how many messages to process.
        timeout_s: wall seconds the run may take.
        wake_on_window_close: ``EventClock``'s default ``to_system_utc`` (identity: wake
            up at a window's close time read as system time), as the docs' examples use
            it. On events older than the wall clock (a backlog) those wake-ups are always
            due and the worker re-runs every key with open windows in a loop
            (bytewax/bytewax#578); ``False`` (``to_system_utc`` returning ``None``)
            closes windows only on new items and at the end of input.

    Returns:
        ``events`` (consumed, at most ``events``), ``seconds`` (wall, flow start to the
        end of the last push), ``events_per_s``, ``pushes`` (push calls),
        ``rows_pushed`` (window rows) and ``late_events`` (events behind the
        watermark, in no window).

    Raises:
        TimeoutError: when the run takes longer than ``timeout_s``.
    """
    run = _Run(events=events, deadline=time.perf_counter() + timeout_s)
    flow = _build_flow(bootstrap_servers, topic, repo, run, wake_on_window_close)
    run.started = time.perf_counter()
    try:
        run_main(flow)  # type: ignore[no-untyped-call]
    except BytewaxRuntimeError as exc:
        if time.perf_counter() > run.deadline:
            raise TimeoutError(
                f"baseline run over {events} events of topic={topic} took more than "
                f"{timeout_s} s (consumed={run.consumed}, pushes={run.pushes}); "
                "raise timeout_s or lower events"
            ) from exc
        raise
    consumed = min(run.consumed, events)
    seconds = (run.last_push or time.perf_counter()) - run.started
    return {
        "events": consumed,
        "seconds": round(seconds, 3),
        "events_per_s": round(consumed / seconds) if seconds > 0 else 0,
        "pushes": run.pushes,
        "rows_pushed": run.rows_pushed,
        "late_events": len(run.late_event_ids),
    }
