"""EventProducer: validated, Avro-encoded events to Kafka, keyed by entity."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from featurestream.clock import wall_clock_ms
from featurestream.errors import BrokerUnavailable, InvalidEvent
from featurestream.events import MAX_FUTURE_MS, AvroCodec, load_contracts
from featurestream.logs import kafka_client_log

from .events import Event, check_record

__all__ = ["DeliveryStats", "EventProducer"]


@dataclass
class DeliveryStats:
    """Delivery reports counted by the producer."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    # Highest delivered offset per (topic, partition): what a consumer must reach
    # to have seen everything this producer wrote.
    last_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def unconfirmed(self) -> int:
        """Messages sent whose delivery was neither confirmed nor failed (yet)."""
        return self.sent - self.delivered - self.failed


class EventProducer:
    """Publishes typed events to their topics.

    Produces with ``enable.idempotence=true`` and ``acks=all``, batches with
    ``linger.ms`` and compresses. A bad event raises :class:`InvalidEvent` for that
    event only; nothing else is lost.

    Args:
        bootstrap_servers: Kafka bootstrap servers.
        codec: The Avro codec (defaults to the checked-in contracts).
        clock_ms: Clock used to check that event times are sane.
        config: Extra librdkafka settings (override the defaults).

    Example:
        >>> from producers import Click, EventProducer  # doctest: +SKIP
        >>> with EventProducer("127.0.0.1:19092") as producer:  # doctest: +SKIP
        ...     producer.send(Click(event_id="...", user_id=7, item_id=3, page="home",
        ...                         event_time=1_700_000_000_000))
    """

    def __init__(
        self,
        bootstrap_servers: str,
        codec: AvroCodec | None = None,
        *,
        clock_ms: Callable[[], int] | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self._codec = codec or AvroCodec(load_contracts())
        self._contracts = {c.topic: c for c in load_contracts()}
        self._clock_ms = clock_ms or wall_clock_ms
        self._config = {
            "bootstrap.servers": bootstrap_servers,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
            **kafka_client_log(bootstrap_servers).settings(),  # rate-limited client lines
            **(config or {}),
        }
        self._producer: Producer | None = None
        self._unpolled = 0
        self.stats = DeliveryStats()

    @property
    def bootstrap_servers(self) -> str:
        """The broker this producer sends to."""
        return str(self._config["bootstrap.servers"])

    def _client(self) -> Producer:
        if self._producer is None:
            try:
                self._producer = Producer(self._config)
            except KafkaException as exc:
                raise BrokerUnavailable(f"cannot create producer: {exc}") from exc
        return self._producer

    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is None:
            self.stats.delivered += 1
            key = (msg.topic(), msg.partition())
            if msg.offset() > self.stats.last_offsets.get(key, -1):
                self.stats.last_offsets[key] = msg.offset()
        else:
            self.stats.failed += 1
            name = err.name()
            self.stats.errors[name] = self.stats.errors.get(name, 0) + 1

    def validate(self, topic: str, record: Mapping[str, Any]) -> None:
        """Check ``record`` against the contract of ``topic`` (beyond what encoding checks).

        Raises:
            InvalidEvent: naming the field and the problem.
        """
        contract = self._contracts.get(topic)
        if contract is None:
            raise InvalidEvent(
                "unknown_topic",
                f"no event schema for topic {topic!r}; known: {sorted(self._contracts)}",
            )
        check_record(contract, record)
        event_time = record["event_time"]
        if event_time > self._clock_ms() + MAX_FUTURE_MS:
            raise InvalidEvent(
                "out_of_range", f"event_time {event_time} is more than 5 minutes in the future"
            )

    def send(self, event: Event) -> None:
        """Validate, encode and produce one typed event (asynchronously; see :meth:`flush`).

        Raises:
            InvalidEvent: when the event breaks its contract (nothing is produced).
            BrokerUnavailable: when the local queue stays full for 30 s.
        """
        self.send_record(event.TOPIC, event.to_record())

    def send_record(self, topic: str, record: Mapping[str, Any]) -> None:
        """Validate, encode and produce one record of ``topic``'s contract.

        Raises:
            InvalidEvent: when the record breaks its contract (nothing is produced).
            BrokerUnavailable: when the local queue stays full for 30 s.
        """
        key, value = self.encode(topic, record)
        self.produce_raw(topic, key, value)

    def encode(self, topic: str, record: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """Validate and encode one record of ``topic``'s contract without producing it
        (to check a whole replay before any of it is sent).

        Returns:
            The Kafka key and value :meth:`send_record` would produce.

        Raises:
            InvalidEvent: when the record breaks its contract.
        """
        self.validate(topic, record)
        value = self._codec.encode(topic, record)
        return str(record.get(self._contracts[topic].key_field)).encode(), value

    def wait_for_broker(self, timeout_s: float) -> None:
        """Return once the broker answers a metadata request (fail fast when it is down).

        Raises:
            BrokerUnavailable: when it did not answer within ``timeout_s``.
        """
        try:
            self._client().list_topics(timeout=timeout_s)
        except KafkaException as exc:
            detail = exc.args[0].str() if exc.args and isinstance(exc.args[0], KafkaError) else exc
            raise BrokerUnavailable(
                f"broker at {self._config['bootstrap.servers']} did not answer within "
                f"{timeout_s:g} s ({detail})"
            ) from exc

    def produce_raw(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Produce already-encoded bytes (replays, and malformed records in tests)."""
        producer = self._client()
        try:
            producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
        except BufferError:
            self._produce_when_room(producer, topic, key, value)
        self.stats.sent += 1
        self._unpolled += 1
        if self._unpolled >= 1000:  # serve delivery callbacks without a syscall per event
            producer.poll(0)
            self._unpolled = 0

    def _produce_when_room(
        self, producer: Producer, topic: str, key: bytes | None, value: bytes | None
    ) -> None:
        deadline = time.monotonic() + 30
        while True:
            producer.poll(0.05)
            try:
                producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                return
            except BufferError:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"producer queue full for 30 s; is the broker at "
                        f"{self._config['bootstrap.servers']} reachable?"
                    ) from None

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve delivery reports that have arrived (waiting up to ``timeout_s`` for one)."""
        if self._producer is not None:
            self._producer.poll(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding deliveries.

        Returns:
            Messages still undelivered when the timeout expired (0 when all are done).
        """
        if self._producer is None:
            return 0
        return int(self._producer.flush(timeout_s))

    def __enter__(self) -> EventProducer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        remaining = self.flush()
        if remaining and exc_type is None:
            raise BrokerUnavailable(f"{remaining} events not delivered before close")
