"""Helpers shared by every tier of tests (no fixtures, no magic)."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

REPO_ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO = REPO_ROOT / "feature_repo"


def read_after(
    view: Any, updates: Sequence[Any], read_time_ms: int, entity: str | None = None
) -> Any:
    """What an online store holds for one entity after ``updates`` (tile updates, in
    order), read at ``read_time_ms``: every aggregation's value. Uses the in-memory
    store of the port (the unit tests' online store)."""
    from featurestream.clock import fixed_clock
    from streams.online.memory import MemoryOnlineStore

    store = MemoryOnlineStore(clock=fixed_clock(read_time_ms))
    for update in updates:
        store.write([update], project=view.project)
    entity = entity if entity is not None else (updates[0].entity if updates else "")
    ((values, _),) = store.read([(view, [entity])], read_time_ms)[0]
    return values


def copy_feature_repo(dest: Path) -> Path:
    """A private copy of feature_repo/ (its registry is written by apply)."""
    target = dest / "feature_repo"
    shutil.copytree(FEATURE_REPO, target, ignore=shutil.ignore_patterns("data", "__pycache__"))
    return target


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def consume_all(
    bootstrap: str, topic: str, idle_s: float = 2.0, timeout_s: float = 30.0
) -> list[Any]:
    """Every message of ``topic`` from the beginning, until none arrives for ``idle_s``.

    Reads until idle rather than to the high watermark: the embedded broker (Tansu
    0.6.0) under-reports the watermark of partitions whose last batch holds several
    records.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "log_level": 0,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        last_seen = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last_seen < idle_s:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            out.append(msg)
            last_seen = time.monotonic()
        return out
    finally:
        consumer.close()


def run_engine_to_end(settings: Any, repo: Path) -> None:
    """Run every stream view of ``repo`` over what the topics hold, then stop."""
    from streams.definitions import compile_registry
    from streams.flow.runner import RunConfig, kafka_flow, run_flow
    from streams.offline.feast_store import log_root
    from streams.repo import open_store

    store = open_store(repo, settings.online_redis_url)
    run_flow(
        kafka_flow(
            compile_registry(store),
            RunConfig(
                bootstrap_servers=settings.bootstrap_servers,
                redis_url=settings.online_redis_url,
                dlq_topic=settings.dlq_topic,
                late_topic=settings.late_topic,
                offline_log=log_root(store.config),
                stop_at_end=True,
            ),
        )
    )
