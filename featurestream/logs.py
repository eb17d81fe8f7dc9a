"""Rate-limited logging, and the one path every Kafka client's log lines and errors take.

A client that cannot reach its broker reports every failed reconnect: one engine with a
consumer per partition wrote about 180 lines per second with the broker down, which hid
every other line. Here each kind of message is logged when it first happens and then at
most once per interval, with the count of the repeats it held back::

    WARNING featurestream.kafka kafka at 127.0.0.1:9092 unreachable (1/1 brokers are
        down); retrying, repeats logged once per 30 s
    WARNING featurestream.kafka kafka at 127.0.0.1:9092 unreachable (Connect to
        ipv4#127.0.0.1:9092 failed: Connection refused); retrying; 572 similar messages
        suppressed in 30 s
    INFO featurestream.kafka kafka at 127.0.0.1:9092 reachable again after 95 s down
        (12 similar messages suppressed)

Other errors (authentication, unknown topics, ...) are kinds of their own: their first
occurrence is logged at once, at ERROR.

Every librdkafka client of a process (the engine's consumers, the dead-letter
producers, admin clients, the event producer) takes its ``logger`` and ``error_cb``
from :func:`kafka_client_log`, so the clients of one broker share one limit. This
module does not import ``confluent_kafka``: the callbacks take what it passes them.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "KAFKA_LOG_INTERVAL_S",
    "KafkaClientLog",
    "KafkaErrorLike",
    "RateLimitedLog",
    "kafka_client_log",
    "set_kafka_log_interval",
]

KAFKA_LOG_INTERVAL_S = 30.0
"""How often one kind of Kafka client message is logged at most (default)."""

_MAX_KINDS = 512


@dataclass
class _Seen:
    logged_s: float  # when a line of this kind was last written
    suppressed: int = 0  # repeats held back since


class RateLimitedLog:
    """Writes each kind of message at once, then at most once per ``interval_s``; a line
    after held-back repeats says how many there were.

    Thread-safe (librdkafka callbacks may come from any thread that polls a client).

    Args:
        logger: Where lines go.
        interval_s: Least time between two lines of one kind; 0 writes every message.
        clock: Monotonic seconds (injected for tests).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = KAFKA_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self.clock = clock
        self._seen: dict[Hashable, _Seen] = {}
        self._lock = threading.Lock()

    def log(self, kind: Hashable, level: int, msg: str, *args: object) -> bool:
        """Log ``msg % args`` at ``level`` unless a line of ``kind`` was written less than
        ``interval_s`` ago (then count it); whether it was written."""
        if not self.logger.isEnabledFor(level):
            return False
        with self._lock:
            now = self.clock()
            seen = self._seen.get(kind)
            if seen is not None and now - seen.logged_s < self.interval_s:
                seen.suppressed += 1
                return False
            if seen is None and len(self._seen) >= _MAX_KINDS:
                self._seen.pop(next(iter(self._seen)))  # the oldest kind
            self._seen[kind] = _Seen(now)
        if seen is not None and seen.suppressed:
            msg += "; %d similar messages suppressed in %.0f s"
            args = (*args, seen.suppressed, now - seen.logged_s)
        elif seen is None and self.interval_s > 0:
            msg += ", repeats logged once per %.0f s"
            args = (*args, self.interval_s)
        self.logger.log(level, msg, *args)
        return True

    def forget(self, kind: Hashable) -> int:
        """End ``kind`` (its next message is written at once); the repeats it held back."""
        with self._lock:
            seen = self._seen.pop(kind, None)
        return 0 if seen is None else seen.suppressed


class KafkaErrorLike(Protocol):
    """What ``error_cb`` receives (a ``confluent_kafka.KafkaError``)."""

    def name(self) -> str: ...

    def str(self) -> str: ...

    def fatal(self) -> bool: ...


# librdkafka's errors for "cannot reach the broker" (KafkaError names).
_UNREACHABLE = frozenset({"_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE"})
# A log line of librdkafka's about a failed connection: error_cb reports the same failure.
_CONNECTION_LOG = re.compile(
    r"Connect to .* failed|Connection refused|Disconnected|Receive failed|Send failed"
    r"|Connection reset|Failed to resolve|brokers are down",
    re.IGNORECASE,
)
_AFTER = re.compile(r"\s*\(after \d+ms in state .*\)$")
# Which of a client's broker handles failed: "host:port/id: ", "GroupCoordinator: ..."
_BROKER_PREFIX = re.compile(r"^(?:GroupCoordinator: )?(?:[^\s/:]+:\d+(?:/\w+)?: )?")
_DIGITS = re.compile(r"\d+")


class KafkaClientLog:
    """The ``logger`` and ``error_cb`` of the librdkafka clients of one bootstrap.

    "Broker unreachable" from any of them is one kind, logged at WARNING; the first
    sign of the broker answering again (:meth:`reachable`) ends it with one INFO line.
    Every other error or log line is a kind of its own, at its own level.

    Args:
        bootstrap: The clients' ``bootstrap.servers``.
        limiter: The rate-limited log every line goes through.
    """

    def __init__(self, bootstrap: str, limiter: RateLimitedLog) -> None:
        self.bootstrap = bootstrap
        self._limiter = limiter
        self._down_kind = ("unreachable", bootstrap)
        self._down_since: float | None = None
        self._lock = threading.Lock()
        self._stale = threading.local()

    def settings(self) -> dict[str, Any]:
        """librdkafka settings that route a client's log lines and errors here."""
        return {"logger": self, "error_cb": self.error, "log.connection.close": False}

    @contextmanager
    def stale(self) -> Iterator[None]:
        """What this thread serves meanwhile is old news, logged at DEBUG only: a client
        that is polled only when used (a dead-letter producer) holds what it saw while
        idle, maybe an outage long over."""
        self._stale.on = True
        try:
            yield
        finally:
            self._stale.on = False

    def log(self, level: int, msg: str, *args: object) -> None:
        """A librdkafka log line (``logger.log(level, "%s [%s] %s", facility, client,
        text)`` is how confluent-kafka calls it)."""
        if len(args) == 3:
            facility, text = str(args[0]), str(args[2])
        else:
            facility, text = "", (msg % args if args else msg)
        if _CONNECTION_LOG.search(text) or getattr(self._stale, "on", False):
            # Also reported to error_cb: counted there, not twice.
            self._limiter.logger.debug("librdkafka %s %s", facility, text)
            return
        kind = ("log", self.bootstrap, facility, _DIGITS.sub("N", text))
        self._limiter.log(kind, level, "kafka at %s: %s %s", self.bootstrap, facility, text)

    def error(self, err: KafkaErrorLike) -> None:
        """A client error (``error_cb``)."""
        name = err.name()
        text = _BROKER_PREFIX.sub("", _AFTER.sub("", err.str()))
        if getattr(self._stale, "on", False):
            self._limiter.logger.debug("earlier kafka error %s: %s", name, text)
            return
        if name in _UNREACHABLE and not err.fatal():
            with self._lock:
                if self._down_since is None:
                    self._down_since = self._limiter.clock()
            self._limiter.log(
                self._down_kind,
                logging.WARNING,
                "kafka at %s unreachable (%s); retrying",
                self.bootstrap,
                text,
            )
            return
        self._limiter.log(
            ("error", self.bootstrap, name),
            logging.ERROR,
            "kafka at %s: %s (%s%s)",
            self.bootstrap,
            text,
            name,
            ", fatal" if err.fatal() else "",
        )

    def reachable(self) -> None:
        """The broker answered (a message, the end of a partition, a delivery): after
        "unreachable", say so once. Cheap when it was not down."""
        if self._down_since is None:
            return
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is None:
            return
        suppressed = self._limiter.forget(self._down_kind)
        self._limiter.logger.info(
            "kafka at %s reachable again after %.0f s down (%d similar messages suppressed)",
            self.bootstrap,
            self._limiter.clock() - since,
            suppressed,
        )

    def warning(self, kind: Hashable, msg: str, *args: object) -> None:
        """A warning of the client's own code, rate-limited like librdkafka's lines."""
        self._limiter.log(("own", self.bootstrap, kind), logging.WARNING, msg, *args)


_LIMITER = RateLimitedLog(logging.getLogger("featurestream.kafka"))
_CLIENT_LOGS: dict[str, KafkaClientLog] = {}
_CLIENT_LOGS_LOCK = threading.Lock()


def kafka_client_log(bootstrap: str) -> KafkaClientLog:
    """The process's :class:`KafkaClientLog` of ``bootstrap`` (one per bootstrap, so its
    clients share one limit and one "unreachable" state)."""
    with _CLIENT_LOGS_LOCK:
        found = _CLIENT_LOGS.get(bootstrap)
        if found is None:
            found = _CLIENT_LOGS[bootstrap] = KafkaClientLog(bootstrap, _LIMITER)
        return found


def set_kafka_log_interval(interval_s: float) -> None:
    """How often one kind of Kafka client message is logged at most, in this process
    (0: every message, as librdkafka reports it; for debugging)."""
    if interval_s < 0:
        raise ValueError(f"interval must be >= 0 s, got {interval_s}")
    _LIMITER.interval_s = interval_s
