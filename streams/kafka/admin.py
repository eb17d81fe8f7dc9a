"""Admin calls: is the broker there, which partitions a topic has, create topics."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from featurestream.errors import BrokerUnavailable

__all__ = ["check_broker", "create_topics", "partitions_of"]


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0, "socket.timeout.ms": 2000})


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
