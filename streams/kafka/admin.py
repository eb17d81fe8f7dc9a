"""Admin calls: is the broker there, which partitions a topic has, create topics."""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from featurestream.errors import BrokerUnavailable
from featurestream.logs import kafka_client_log

__all__ = ["check_broker", "create_topics", "holds", "partitions_of", "watermarks"]


def _admin(bootstrap: str) -> AdminClient:
    # Admin calls raise with the reason; their clients' own lines and errors (served only
    # when polled) take the process's rate-limited path like every client's.
    return AdminClient(
        {
            "bootstrap.servers": bootstrap,
            "socket.timeout.ms": 2000,
            **kafka_client_log(bootstrap).settings(),
        }
    )


def check_broker(bootstrap: str, timeout_s: float) -> None:
    """Raise :class:`BrokerUnavailable` unless the broker answers metadata within the timeout."""
    try:
        metadata = _admin(bootstrap).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"Kafka broker at {bootstrap} did not answer within {timeout_s:.0f} s ({exc.args[0]}); "
            "start it (featurestream up) or fix FEATURESTREAM_KAFKA_BOOTSTRAP"
        ) from exc
    if not metadata.brokers:
        raise BrokerUnavailable(f"Kafka at {bootstrap} reports no brokers")


def partitions_of(
    bootstrap: str, topics: Sequence[str], timeout_s: float = 10
) -> dict[str, list[int]]:
    """The partitions of every topic, sorted.

    Raises:
        BrokerUnavailable: when the broker does not answer or a topic does not exist.
    """
    try:
        metadata = _admin(bootstrap).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise BrokerUnavailable(f"list topics at {bootstrap}: {exc}") from exc
    out = {}
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            raise BrokerUnavailable(
                f"topic {topic!r} does not exist at {bootstrap}; run featurestream up"
            )
        out[topic] = sorted(meta.partitions)
    return out


def create_topics(
    bootstrap: str, topics: Sequence[str], *, partitions: int, timeout_s: float
) -> list[str]:
    """Create the topics that do not exist yet; return those created.

    Raises:
        BrokerUnavailable: when the broker does not answer or refuses a topic.
    """
    admin = _admin(bootstrap)
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerUnavailable(f"list topics at {bootstrap}: {exc}") from exc
    wanted = [t for t in topics if t not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in wanted],
        operation_timeout=timeout_s,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            created.append(topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerUnavailable(f"cannot create topic {topic!r}: {exc.args[0]}") from exc
    return created


def watermarks(
    bootstrap: str, partitions: Sequence[tuple[str, int]], timeout_s: float = 10
) -> dict[tuple[str, int], tuple[int, int]]:
    """``(low, high)`` offsets of each ``(topic, partition)``: the first offset the broker
    still holds and the offset after the last one.

    The end is the one a fetch reports, not the broker's answer to a ListOffsets
    request, which may lag it (the embedded broker answers one past the first offset
    of its last batch): each partition is read from that answer to its end.

    Raises:
        BrokerUnavailable: when the broker does not answer within ``timeout_s``.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "featurestream-admin",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            **kafka_client_log(bootstrap).settings(),
        }
    )
    try:
        lows: dict[tuple[str, int], int] = {}
        starts = []
        for topic, partition in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s, cached=False
            )
            lows[topic, partition] = int(low)
            starts.append(TopicPartition(topic, partition, max(int(low), int(high))))
        if not starts:
            return {}
        consumer.assign(starts)
        ends: dict[tuple[str, int], int] = {}
        deadline = time.monotonic() + timeout_s
        while len(ends) < len(starts):
            if time.monotonic() >= deadline:
                missing = sorted(set(lows) - set(ends))
                raise BrokerUnavailable(f"no end of {missing} from {bootstrap} in {timeout_s}s")
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is not None and err.code() == KafkaError._PARTITION_EOF:
                    ends[str(msg.topic()), int(msg.partition() or 0)] = int(msg.offset() or 0)
        return {key: (lows[key], ends[key]) for key in lows}
    except KafkaException as exc:
        raise BrokerUnavailable(f"offsets at {bootstrap}: {exc}") from exc
    finally:
        consumer.close()


def holds(
    bootstrap: str, wanted: dict[tuple[str, int], int], timeout_s: float = 10
) -> dict[tuple[str, int], bool]:
    """Whether each ``(topic, partition)`` still holds every message before ``wanted``
    offset: the first offset it holds is 0 and the message at ``offset - 1`` is there.

    Reads that message rather than trusting the reported end offset (the embedded
    broker under-reports it).

    Raises:
        BrokerUnavailable: when the broker does not answer.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "featurestream-admin",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "error",
            **kafka_client_log(bootstrap).settings(),
        }
    )
    out: dict[tuple[str, int], bool] = {}
    try:
        for (topic, partition), offset in wanted.items():
            if offset <= 0:
                out[topic, partition] = True
                continue
            low, _ = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s, cached=False
            )
            if low > 0:
                out[topic, partition] = False
                continue
            consumer.assign([TopicPartition(topic, partition, offset - 1)])
            found = False
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error() is None:
                    found = int(msg.offset() or 0) == offset - 1
                break  # a message, the end of the partition, or out of range
            out[topic, partition] = found
            consumer.unassign()
        return out
    except KafkaException as exc:
        raise BrokerUnavailable(f"offsets at {bootstrap}: {exc}") from exc
    finally:
        consumer.close()
