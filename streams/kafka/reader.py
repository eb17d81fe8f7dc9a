"""Reading one Kafka partition: non-blocking consume calls from an offset, the end of
the partition, and Kafka errors mapped to ours."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from featurestream.errors import BrokerUnavailable

from ..core.classify import Message

__all__ = ["OFFSET_BEGINNING", "PartitionReader", "produced_ms"]

log = logging.getLogger(__name__)


def produced_ms(msg: Any) -> int | None:
    """The message's Kafka timestamp in ms (None: the broker gave none)."""
    kind, value = msg.timestamp()
    return None if kind == TIMESTAMP_NOT_AVAILABLE or value < 0 else int(value)


class PartitionReader:
    """One partition of one topic, read from ``offset`` on.

    Reads never block: librdkafka fetches in the background, and a blocking read of
    one partition would delay the others of the process.

    Args:
        bootstrap_servers: Kafka bootstrap servers.
        topic, partition: What to read.
        offset: First offset (``OFFSET_BEGINNING``: the start of the partition).
        config: Extra librdkafka settings.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        partition: int,
        offset: int,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": "featurestream-engine",  # offsets live in recovery snapshots
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "log.connection.close": False,
                "fetch.wait.max.ms": 10,
                # A resumed offset the partition no longer has (the broker was recreated,
                # or retention deleted what was not read yet): read what it holds, from
                # its start, rather than skip to its end.
                "auto.offset.reset": "earliest",
                **(config or {}),
            }
        )
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self.eof_at: float | None = None
        """Monotonic time the end of the partition was last reported (None: not at it)."""

    def read(self, max_messages: int) -> tuple[list[Message], bool]:
        """What is there now: ``(messages, whether anything came back at all)``.

        Raises:
            BrokerUnavailable: for a Kafka error that is not retriable.
        """
        try:
            messages = self._consumer.consume(max_messages, 0)
        except KafkaException as exc:
            raise BrokerUnavailable(f"consume {self.topic}/{self.partition}: {exc}") from exc
        out: list[Message] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.eof_at = self.eof_at or time.monotonic()
                    continue
                if err.retriable() or err.code() == KafkaError._TRANSPORT:
                    log.warning(
                        "kafka topic=%s partition=%s: %s (retrying)",
                        self.topic,
                        self.partition,
                        err,
                    )
                    continue
                raise BrokerUnavailable(f"consume {self.topic}/{self.partition}: {err}")
            self.eof_at = None
            out.append((int(msg.offset() or 0), msg.value(), produced_ms(msg)))
        return out, bool(messages)

    def at_end(self, next_offset: int, timeout_s: float = 5.0) -> bool:
        """Whether ``next_offset`` is at (or past) the partition's end as the broker reports
        it now (asked, not cached).

        Raises:
            BrokerUnavailable: when the broker does not answer.
        """
        try:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, self.partition), timeout=timeout_s, cached=False
            )
        except KafkaException as exc:
            raise BrokerUnavailable(f"end of {self.topic}/{self.partition}: {exc}") from exc
        return bool(next_offset >= high)

    def close(self) -> None:
        """Leave the partition."""
        self._consumer.close()
