"""A replay of Kafka topics from a time on, to what was produced before it started
(the backfill's Kafka source)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from featurestream.clock import Clock, wall_clock_ms
from featurestream.errors import BrokerUnavailable, ConfigError
from featurestream.events import MAX_FUTURE_MS
from featurestream.logs import kafka_client_log

from ..core.classify import Message
from .reader import produced_ms

__all__ = ["replay"]

log = logging.getLogger(__name__)

_QUIET_S = 1.0
_STALL_S = 60.0


def _start_offsets(
    consumer: Consumer, bootstrap: str, topics: Sequence[str], from_ms: int
) -> list[TopicPartition]:
    metadata = consumer.list_topics(timeout=10)
    wanted = []
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            raise ConfigError(f"topic {topic!r} does not exist at {bootstrap}")
        since = max(0, from_ms - MAX_FUTURE_MS)
        wanted += [TopicPartition(topic, p, since) for p in sorted(meta.partitions)]
    try:
        found = consumer.offsets_for_times(wanted, timeout=10)
    except KafkaException as exc:
        log.info("no time index (%s): replaying from the beginning", exc)
        return [TopicPartition(t.topic, t.partition, OFFSET_BEGINNING) for t in wanted]
    out = []
    for tp in found:
        if tp.error is not None or tp.offset < 0:
            # -1: no message at or after the time (or no index): read it all to be safe.
            out.append(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
        else:
            out.append(tp)
    return out


def replay(
    bootstrap: str, topics: Sequence[str], from_ms: int, clock: Clock = wall_clock_ms
) -> Iterator[tuple[str, Message]]:
    """Every message of ``topics`` produced from ``from_ms - MAX_FUTURE_MS`` on (no event
    time can be further ahead of its produce time, so nothing from ``from_ms`` on is
    missed; without a time index, from the beginning), as ``(topic, message)``.

    Each partition is read up to what was produced before the replay started: to its
    end, or to its first message produced later (so live traffic cannot keep the replay
    going).

    Raises:
        ConfigError: when a topic does not exist.
        BrokerUnavailable: when the broker fails, or nothing arrives for a minute.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "featurestream-backfill",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            **kafka_client_log(bootstrap).settings(),
        }
    )
    try:
        yield from _replay(consumer, bootstrap, topics, from_ms, clock())
    except KafkaException as exc:
        raise BrokerUnavailable(f"replay from {bootstrap}: {exc}") from exc
    finally:
        consumer.close()


def _replay(
    consumer: Consumer, bootstrap: str, topics: Sequence[str], from_ms: int, started_ms: int
) -> Iterator[tuple[str, Message]]:
    parts = _start_offsets(consumer, bootstrap, topics, from_ms)
    consumer.assign(parts)
    open_parts = {(tp.topic, tp.partition) for tp in parts}
    at_end: set[tuple[str, int]] = set()
    quiet_since = stalled_since = time.monotonic()
    while open_parts:
        messages = consumer.consume(10_000, 0.1)
        now = time.monotonic()
        if not messages:
            if open_parts <= at_end and now - quiet_since > _QUIET_S:
                return
            if now - stalled_since > _STALL_S:
                raise BrokerUnavailable(
                    f"replay from {bootstrap} stalled: nothing for {_STALL_S:.0f} s "
                    f"from {sorted(open_parts - at_end)}"
                )
            continue
        quiet_since = stalled_since = now
        for msg in messages:
            err = msg.error()
            where = (str(msg.topic()), int(msg.partition() or 0))
            if where not in open_parts:
                continue
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(where)
                    continue
                if err.retriable() or err.code() == KafkaError._TRANSPORT:
                    continue
                raise BrokerUnavailable(f"replay {where}: {err}")
            at_end.discard(where)  # the end reported earlier was not the end
            kind, produced = msg.timestamp()
            if kind != TIMESTAMP_NOT_AVAILABLE and produced >= started_ms:
                open_parts.discard(where)  # produced after the replay started
                continue
            yield where[0], (int(msg.offset() or 0), msg.value(), produced_ms(msg))
