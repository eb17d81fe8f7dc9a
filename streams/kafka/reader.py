"""Reading one Kafka partition: non-blocking consume calls from an offset, the end of
the partition, and Kafka errors mapped to ours."""

from __future__ import annotations

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
from featurestream.logs import kafka_client_log

from ..core.classify import Message

__all__ = ["OFFSET_BEGINNING", "RECONNECT_BACKOFF_MS", "PartitionReader", "produced_ms"]

RECONNECT_BACKOFF_MS = 1000
"""Wait before reconnecting to a broker that failed, for the engine's long-lived clients.
With librdkafka's default (100 ms) each of them retried about ten times a second while
the broker was down (a refused connect does not grow the wait); a second is soon enough
to notice the broker is back."""


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
        self._log = kafka_client_log(bootstrap_servers)
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap_servers,
                "group.id": "featurestream-engine",  # offsets live in recovery snapshots
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "fetch.wait.max.ms": 10,
                "reconnect.backoff.ms": RECONNECT_BACKOFF_MS,
                **self._log.settings(),  # librdkafka's lines, rate-limited
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
        answered = False
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.eof_at = self.eof_at or time.monotonic()
                    answered = True
                    continue
                if err.retriable() or err.code() == KafkaError._TRANSPORT:
                    self._log.warning(
                        ("consume", self.topic, self.partition, err.code()),
                        "kafka topic=%s partition=%s: %s (retrying)",
                        self.topic,
                        self.partition,
                        err,
                    )
                    continue
                raise BrokerUnavailable(f"consume {self.topic}/{self.partition}: {err}")
            self.eof_at = None
            answered = True
            out.append((int(msg.offset() or 0), msg.value(), produced_ms(msg)))
        if answered:
            self._log.reachable()
        return out, bool(messages)

    def fetched_end(self) -> int | None:
        """The partition's end offset as the last fetch response put it (None: no fetch
        answered yet).

        librdkafka fetches in the background, so this is at most a fetch cycle old.
        Fetch responses carry the end exactly; a broker's answer to a ListOffsets
        request may not (the embedded broker's is one past the first offset of its
        last batch), so the end is never asked that way here.
        """
        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, self.partition), cached=True
        )
        return None if high < 0 else int(high)

    def seek(self, offset: int) -> None:
        """Read from ``offset`` on."""
        self._consumer.assign([TopicPartition(self.topic, self.partition, offset)])
        self.eof_at = None

    def at_end(self, next_offset: int) -> bool:
        """Whether ``next_offset`` is at (or past) the partition's end as the last fetch
        response put it (False before any fetch answered)."""
        end = self.fetched_end()
        return end is not None and next_offset >= end

    def close(self) -> None:
        """Leave the partition."""
        self._consumer.close()
