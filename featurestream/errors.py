"""The one exception tree of featurestream.

Every error the project raises on purpose is a :class:`FeaturestreamError`.
Third-party exceptions (confluent_kafka, redis, feast, pyarrow) are caught only
in adapters and re-raised as one of these ``from exc``::

    FeaturestreamError
    ├── ConfigError            terminal: a setting or definition is wrong; fix and restart
    │   └── DefinitionError    a Feast object cannot be compiled into the engine
    ├── TransientError         retry: a dependency is slow or unavailable
    │   ├── BrokerUnavailable
    │   ├── OnlineStoreUnavailable
    │   │   ├── OnlineStoreLost  Redis dropped tiles (restarted empty, evicted): restore them
    │   │   └── OnlineStoreFull  Redis refuses writes: it is out of memory
    │   ├── Overloaded         the feature server serves its maximum of requests
    │   └── NotReady           the feature server has no registry loaded yet
    ├── StackError             the local stack could not be started or stopped
    │   └── PortInUse
    ├── EventError             one event is bad; it is dead-lettered, the flow goes on
    │   ├── DecodeError        bytes that are not a known Avro event
    │   └── InvalidEvent       a decoded event that breaks the contract
    ├── RequestError           terminal for one request: the caller must change it
    │   ├── InvalidRequest     malformed JSON, wrong type, unequal lengths, ...
    │   ├── UnknownName        unknown feature, view or feature service
    │   ├── RequestTooLarge    more entities or bytes than the server accepts
    │   ├── Unauthenticated    no API key, or not a known one
    │   └── Forbidden          the key is not granted what the request reads
    └── TransformFailed        an on-demand view's function raised

Errors of the feature server carry a stable machine-readable ``code`` and know
nothing of HTTP: ``serving.app`` maps each class to a status code at the boundary.

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
    "Forbidden",
    "InvalidEvent",
    "InvalidRequest",
    "NotReady",
    "OnlineStoreFull",
    "OnlineStoreLost",
    "OnlineStoreUnavailable",
    "Overloaded",
    "PortInUse",
    "RequestError",
    "RequestTooLarge",
    "StackError",
    "TransformFailed",
    "TransientError",
    "Unauthenticated",
    "UnknownName",
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
    """Redis no longer holds tiles it had acknowledged (restarted empty, or evicted
    keys to free memory)."""


class OnlineStoreFull(OnlineStoreUnavailable):
    """Redis refused a write because it is out of memory (``noeviction`` at maxmemory).
    Retried: nothing is skipped; it needs memory to succeed."""


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


class RequestError(FeaturestreamError):
    """A feature request cannot be served as sent; retrying it unchanged fails the same way."""

    code = "invalid_request"


class InvalidRequest(RequestError):
    """The body is not a valid lookup: bad JSON, a wrong type, unequal entity lists, ..."""

    code = "invalid_request"


class UnknownName(RequestError):
    """A feature, feature view or feature service that the registry does not hold."""

    code = "not_found"


class RequestTooLarge(RequestError):
    """More entities per request, or more body bytes, than the server settings allow."""

    code = "too_large"


class Unauthenticated(RequestError):
    """No API key was sent, or the key sent is not one the server knows."""

    code = "unauthenticated"


class Forbidden(RequestError):
    """The API key is valid but not granted the feature service or views requested."""

    code = "forbidden"


class Overloaded(TransientError):
    """The feature server already serves its maximum number of concurrent requests."""

    code = "overloaded"


class NotReady(TransientError):
    """The feature registry has not been loaded (yet); the server cannot plan lookups."""

    code = "not_ready"


class TransformFailed(FeaturestreamError):
    """The function of an on-demand feature view raised or returned unusable values."""

    code = "transform_failed"
