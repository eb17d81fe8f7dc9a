"""Producing rejected messages (dead letters, late events) with their reason headers.

Each batch is flushed and every delivery checked before it counts as written, so
nothing rejected is lost silently.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from featurestream.errors import BrokerUnavailable
from featurestream.logs import kafka_client_log

from ..core.classify import Rejected
from .reader import RECONNECT_BACKOFF_MS

__all__ = ["RejectedProducer", "rejected_headers"]

log = logging.getLogger(__name__)

_FLUSH_S = 30


def rejected_headers(item: Rejected) -> list[tuple[str, str | bytes | None]]:
    """Kafka headers saying where the message came from and why it is here."""
    return [
        ("error.kind", item.kind.encode()),
        ("error.reason", item.reason.encode()),
        ("source.topic", item.topic.encode()),
        ("source.partition", str(item.partition).encode()),
        ("source.offset", str(item.offset).encode()),
    ]


class RejectedProducer:
    """Sends rejected messages to one topic.

    Args:
        config: librdkafka producer settings (``bootstrap.servers`` at least).
        topic: The dead-letter or late-events topic.
    """

    def __init__(self, config: dict[str, Any], topic: str) -> None:
        self._log = kafka_client_log(str(config.get("bootstrap.servers", "")))
        self._producer = Producer(
            {"reconnect.backoff.ms": RECONNECT_BACKOFF_MS, **self._log.settings(), **config}
        )
        self._topic = topic
        self._sent = 0
        self._failed: list[str] = []

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._failed.append(str(err))

    def send(self, items: Sequence[Rejected]) -> None:
        """Produce ``items`` and wait until every one is delivered.

        Raises:
            BrokerUnavailable: when one is not delivered.
        """
        with self._log.stale():  # served only now: what it saw while idle
            self._producer.poll(0)
        for item in items:
            try:
                self._producer.produce(
                    self._topic,
                    value=item.value,
                    headers=rejected_headers(item),
                    on_delivery=self._on_delivery,
                )
            except (BufferError, KafkaException) as exc:
                raise BrokerUnavailable(
                    f"dead-letter produce to {self._topic} failed: {exc}"
                ) from exc
            self._sent += 1
            if self._sent == 1 or self._sent % 1000 == 0:
                log.warning(
                    "rejected to %s kind=%s topic=%s partition=%s offset=%s reason=%s total=%d",
                    self._topic,
                    item.kind,
                    item.topic,
                    item.partition,
                    item.offset,
                    item.reason,
                    self._sent,
                )
        remaining = self._producer.flush(_FLUSH_S)
        if remaining or self._failed:
            raise BrokerUnavailable(
                f"messages not delivered to {self._topic}: {remaining} pending, "
                f"failures {self._failed[:3]}"
            )
        if items:
            self._log.reachable()

    def close(self) -> None:
        """Deliver what is pending."""
        self._producer.flush(_FLUSH_S)
