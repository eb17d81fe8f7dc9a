"""Where Redis is and how to talk to it: URLs, clients, and the one mapping of Redis
errors to :class:`~featurestream.errors.OnlineStoreUnavailable`.

URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS),
``unix:///path/to/socket[?db=N]``, and Feast's ``host:port,db=N,password=P``
connection strings.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import redis
from redis.connection import parse_url

from featurestream.errors import ConfigError, OnlineStoreFull, OnlineStoreUnavailable

from ..base import StoreStats

__all__ = [
    "REDIS_ERRORS",
    "STATS_COMMANDS",
    "RedisAddress",
    "check",
    "connect",
    "parse",
    "stats_of",
    "translated",
    "unavailable",
]

# Everything a Redis client raises when a command was not acknowledged: connection
# loss, timeouts, a loading replica, and error replies (EXECABORT, OOM, READONLY).
REDIS_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class RedisAddress:
    """A parsed Redis URL.

    Attributes:
        url: The ``redis://``, ``rediss://`` or ``unix://`` URL.
        host, port: TCP address (``path``: a Unix socket instead).
        db: Database number.
        username, password: AUTH credentials, when given.
        tls: ``rediss://``.
        path: Unix socket path.
    """

    url: str
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool
    path: str | None

    @property
    def where(self) -> str:
        """The URL without its password, for messages."""
        scheme, sep, rest = self.url.partition("://")
        if sep and "@" in rest:
            return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
        return self.url

    @property
    def feast_connection_string(self) -> str:
        """Feast's ``host:port,db=N[,password=P]`` form (its Redis store's config)."""
        out = f"{self.host}:{self.port},db={self.db}"
        return out + (f",password={self.password}" if self.password else "")


def parse(url: str) -> RedisAddress:
    """Parse a Redis URL or Feast connection string.

    Raises:
        ConfigError: when it cannot be parsed.
    """
    if "://" not in url:
        host_port, *params = url.split(",")
        options = dict(p.split("=", 1) for p in params if "=" in p)
        auth = f":{quote(options['password'], safe='')}@" if options.get("password") else ""
        url = f"redis://{auth}{host_port or 'localhost:6379'}/{options.get('db', 0)}"
    try:
        options = parse_url(url)  # type: ignore[no-untyped-call]
        db = int(options.get("db", 0))
        port = int(options.get("port", 6379))
    except ValueError as exc:
        raise ConfigError(
            f"invalid Redis URL {url!r}: {exc}; expected redis://host:port/db"
        ) from exc
    return RedisAddress(
        url=url,
        host=str(options.get("host", "localhost")),
        port=port,
        db=db,
        username=options.get("username"),
        password=options.get("password"),
        tls=url.startswith("rediss://"),
        path=options.get("path"),
    )


def connect(url: str, *, timeout_s: float = 5.0) -> redis.Redis:
    """A blocking redis-py client for ``url`` (no I/O until its first command).

    Raises:
        ConfigError: when the URL cannot be parsed.
    """
    address = parse(url)
    try:
        return redis.Redis.from_url(
            address.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL {address.where!r}: {exc}") from exc


def unavailable(where: str, what: str, exc: BaseException) -> OnlineStoreUnavailable:
    """The error of the tree for a Redis failure: what failed, where, and why."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return OnlineStoreFull(
            f"Redis at {where}: {what} refused: it is out of memory (maxmemory reached, "
            f"{detail}); give it more memory (maxmemory) or fewer keys"
        )
    return OnlineStoreUnavailable(f"Redis at {where}: {what} failed: {detail}")


@contextlib.contextmanager
def translated(where: str, what: str) -> Iterator[None]:
    """Re-raise any Redis failure inside the block as :func:`unavailable`."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise unavailable(where, what, exc) from exc


STATS_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("DBSIZE",),
    ("INFO", "server"),
    ("INFO", "memory"),
    ("INFO", "stats"),
)
"""What :func:`stats_of` reads (one command per INFO section: older servers take one)."""


def _info(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):  # redis-py parses INFO replies
        return {str(k): str(v) for k, v in reply.items()}
    text = reply.decode() if isinstance(reply, bytes) else str(reply)
    out: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            out[name] = value.strip()
    return out


def stats_of(replies: Sequence[Any]) -> StoreStats:
    """The store's stats from the replies to :data:`STATS_COMMANDS`."""
    keys, server, memory, counters = replies
    info = {**_info(server), **_info(memory), **_info(counters)}

    def number(name: str) -> int | None:
        value = info.get(name)
        return int(value) if value is not None and value.lstrip("-").isdigit() else None

    return StoreStats(
        keys=int(keys),
        used_bytes=number("used_memory"),
        evicted_keys=number("evicted_keys"),
        eviction_policy=info.get("maxmemory_policy") or None,
        max_bytes=number("maxmemory"),
        incarnation=info.get("run_id") or None,
    )


def check(url: str, timeout_s: float) -> None:
    """Raise unless Redis at ``url`` answers PING within ``timeout_s``.

    Raises:
        OnlineStoreUnavailable: naming the URL (without password) and the fix, also
            when the URL cannot be parsed.
    """
    try:
        address = parse(url)
    except ConfigError as exc:
        raise OnlineStoreUnavailable(f"{exc} in FEATURESTREAM_REDIS_URL") from exc
    client = connect(url, timeout_s=timeout_s)
    try:
        client.ping()
    except REDIS_ERRORS as exc:
        raise OnlineStoreUnavailable(
            f"Redis at {address.where} does not answer ({exc}); start it (featurestream up) "
            "or fix FEATURESTREAM_REDIS_URL"
        ) from exc
    finally:
        client.close()
