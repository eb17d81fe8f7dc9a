"""The one exception tree of featurestream.

Every error the project raises on purpose is a :class:`FeaturestreamError`.
Third-party exceptions (confluent_kafka, redis, feast, pyarrow) are caught only
in adapters and re-raised as one of these ``from exc``::

    FeaturestreamError
    ├── ConfigError            terminal: a setting or definition is wrong; fix and restart
    │   └── DefinitionError    a Feast object cannot be compiled into the engine
    ├── TransientError         retry: a dependency is slow or unavailable
    │   ├── BrokerUnavailable
    │   └── OnlineStoreUnavailable
    │       └── OnlineStoreLost  Redis restarted empty: restore the online tiles
    ├── StackError             the local stack could not be started or stopped
    │   └── PortInUse
    └── EventError             one event is bad; it is dead-lettered, the flow goes on
        ├── DecodeError        bytes that are not a known Avro event
        └── InvalidEvent       a decoded event that breaks the contract

Messages say what was wrong, what was expected and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "DecodeError",
    "DefinitionError",
    "EventError",
    "FeaturestreamError",
    "InvalidEvent",
    "OnlineStoreLost",
    "OnlineStoreUnavailable",
    "PortInUse",
    "StackError",
    "TransientError",
]


class FeaturestreamError(Exception):
    """Root of every error featurestream raises on purpose."""


class ConfigError(FeaturestreamError):
    """A setting, path or definition is wrong. Terminal: fix it and restart."""


class DefinitionError(ConfigError):
    """A Feast object in the feature repository cannot be run by the engine."""


class TransientError(FeaturestreamError):
    """A dependency is unavailable or slow. Retrying later may succeed."""


class BrokerUnavailable(TransientError):
    """The Kafka-protocol broker did not answer within the deadline."""


class OnlineStoreUnavailable(TransientError):
    """Redis (the online store) did not answer within the deadline."""


class OnlineStoreLost(OnlineStoreUnavailable):
    """Redis came back without the data it had acknowledged (restarted empty)."""


class StackError(FeaturestreamError):
    """The local stack (broker, Redis, engine processes) could not be managed."""


class PortInUse(StackError):
    """A port the local stack needs is taken by a process it did not start."""


class EventError(FeaturestreamError):
    """One event is bad. It is dead-lettered with ``kind`` and ``reason``; the flow goes on.

    Attributes:
        kind: A stable, machine-readable error kind (used as dead-letter header and
            metric label), e.g. ``not_avro`` or ``unknown_schema``.
        reason: Human-readable detail.
        topic: Source topic, when known.
        partition: Source partition, when known.
        offset: Source offset, when known.
    """

    def __init__(
        self,
        kind: str,
        reason: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.kind = kind
        self.reason = reason
        self.topic = topic
        self.partition = partition
        self.offset = offset
        where = ""
        if topic is not None:
            where = f" topic={topic} partition={partition} offset={offset}"
        super().__init__(f"{kind}: {reason}{where}")

    def at(self, topic: str, partition: int, offset: int) -> EventError:
        """Return a copy of this error that carries its source position."""
        return type(self)(self.kind, self.reason, topic=topic, partition=partition, offset=offset)


class DecodeError(EventError):
    """The bytes are not an Avro event this reader knows (see ``kind``)."""


class InvalidEvent(EventError):
    """The event decoded but breaks the contract (missing field, bad time, ...)."""
