"""Settings of the fast feature server (a frozen value, built at the edge).

API keys map a secret to its grants. A grant is one of:

* ``"*"``: everything;
* a feature service name, e.g. ``"recommender_v1"``: requests with that ``feature_service``;
* ``"features"``: requests with a raw ``features`` list over views not tagged ``pii``;
* ``"pii"``: raw ``features`` lists that may also touch views tagged ``pii``
  (implies ``"features"``).

Keys come from JSON (an environment variable or a file; see :func:`parse_api_keys`)::

    {"k-recsys-1": ["recommender_v1"], "k-analyst": ["features"], "k-admin": "*"}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from featurestream.errors import ConfigError

__all__ = [
    "ALL_GRANT",
    "BODY_WATCH",
    "FEATURES_GRANT",
    "PII_GRANT",
    "READ_DEADLINES",
    "BodyWatch",
    "ReadDeadlines",
    "ReadPhase",
    "ServerSettings",
    "load_api_keys",
    "parse_api_keys",
]

ALL_GRANT = "*"
FEATURES_GRANT = "features"
PII_GRANT = "pii"


@dataclass(frozen=True)
class ServerSettings:
    """Limits and options of one feature server process.

    Attributes:
        max_entities: Most entity rows one request may ask for (more: 413).
        max_body_bytes: Largest request body accepted (more: 413).
        redis_timeout_ms: Deadline of one online-store round trip (longer: 503).
        max_in_flight: Most requests served at once per worker (more: 503, Retry-After: 1).
        registry_refresh_s: How often the registry is re-read; plans are recompiled
            when it changed.
        enforce_ttl: Batch rows older than their view's ``ttl`` are returned as
            ``OUTSIDE_MAX_AGE`` with a null value. Feast 0.67 does not apply ``ttl``
            to online reads (feast-dev/feast#6821); set False for its exact behaviour.
        redis_client: ``"pipelined"`` (one multiplexed RESP connection, the fastest),
            ``"redis-asyncio"`` (a redis.asyncio pipeline) or ``"thread"`` (a sync
            redis-py pipeline in a thread pool); see :mod:`streams.online.redis.reader`.
        max_plans: Compiled lookup plans kept per worker (distinct feature lists).
        header_timeout_s: Most seconds a connection may take to send a request's headers,
            counted from its opening (or, on a kept-alive connection, from the request's
            first byte); longer: 408 and the connection closed (one that sent nothing is
            just closed).
        body_timeout_s: Most seconds a request's body may take to arrive after its
            headers; longer: 408 and the connection closed. A lookup takes its
            ``max_in_flight`` slot only once its body has arrived, so slow senders never
            hold the slots of the requests being served.
        allow_evicting_store: Serve from a Redis whose ``maxmemory-policy`` evicts keys
            (refused at start otherwise; see :func:`streams.online.check_eviction`).
        api_keys: Secret key -> grants (see the module docstring). Empty: no auth.
    """

    max_entities: int = 1000
    max_body_bytes: int = 1_000_000
    redis_timeout_ms: int = 50
    max_in_flight: int = 256
    registry_refresh_s: float = 5.0
    enforce_ttl: bool = True
    redis_client: Literal["pipelined", "redis-asyncio", "thread"] = "pipelined"
    max_plans: int = 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    allow_evicting_store: bool = False
    api_keys: Mapping[str, frozenset[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_entities", "max_body_bytes", "redis_timeout_ms", "max_in_flight"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"server setting {name}={value!r}: expected an integer > 0")
        for name in ("registry_refresh_s", "header_timeout_s", "body_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ConfigError(
                    f"server setting {name}={value!r}: expected a number of seconds > 0"
                )
        if self.redis_client not in ("pipelined", "redis-asyncio", "thread"):
            raise ConfigError(
                f"server setting redis_client={self.redis_client!r}: expected 'pipelined', "
                "'redis-asyncio' or 'thread'"
            )
        for key, grants in self.api_keys.items():
            if not key or not isinstance(grants, frozenset):
                raise ConfigError(
                    "server setting api_keys: expected non-empty keys mapped to frozensets of "
                    "grants; build them with serving.settings.parse_api_keys"
                )

    @property
    def auth_enabled(self) -> bool:
        """True when requests must carry an API key."""
        return bool(self.api_keys)


ReadPhase = Literal["headers", "body"]
"""What of a request came too late."""

READ_DEADLINES = "featurestream.read_deadlines"
"""Key of the app's :class:`ReadDeadlines` in the ASGI lifespan state."""

BODY_WATCH = "featurestream.body_watch"
"""Key of a request's :class:`BodyWatch` in its ASGI scope."""


class BodyWatch:
    """Put in a request's scope by the protocol that bounds the arrival of its body
    (:class:`serving.server.ReadDeadlineProtocol`): once ``body_timeout_s`` passed
    after the headers, ``late`` turns True and a ``receive()`` the app waits in returns.
    An app that finds one reads the body without a timer of its own."""

    __slots__ = ("late",)

    def __init__(self) -> None:
        self.late = False


@dataclass(frozen=True)
class ReadDeadlines:
    """The read deadlines the HTTP protocol enforces for the app, and how to answer.

    The app (:class:`serving.app.FeatureServer`) publishes them at start-up; the
    protocol (:class:`serving.server.ReadDeadlineProtocol`) enforces them.

    Attributes:
        header_timeout_s: Most seconds to the end of a request's headers.
        body_timeout_s: Most seconds from the headers to the end of the body.
        late: Counts a request whose ``"headers"`` or ``"body"`` came too late and
            returns its 408 answer ``(status, body, headers)`` (no content-length).
    """

    header_timeout_s: float
    body_timeout_s: float
    late: Callable[[ReadPhase], tuple[int, bytes, list[tuple[bytes, bytes]]]]


def parse_api_keys(text: str, *, source: str = "api keys") -> dict[str, frozenset[str]]:
    """Parse ``{"key": ["grant", ...] | "*"}`` JSON into the ``api_keys`` setting.

    Raises:
        ConfigError: naming ``source`` and what is wrong (never the key itself).
    """
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f'{source}: not valid JSON ({exc}); expected {{"key": ["service", ...] | "*"}}'
        ) from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a JSON object of key -> grants, got {type(raw).__name__}"
        )
    out: dict[str, frozenset[str]] = {}
    for number, (key, grants) in enumerate(raw.items(), start=1):
        if not isinstance(key, str) or len(key) < 8:
            raise ConfigError(f"{source}: key #{number} is shorter than 8 characters")
        if grants == ALL_GRANT:
            out[key] = frozenset({ALL_GRANT})
        elif isinstance(grants, list) and grants and all(isinstance(g, str) for g in grants):
            out[key] = frozenset(grants)
        else:
            raise ConfigError(
                f'{source}: grants of key #{number} must be "*" or a non-empty list of '
                f'feature service names / "features" / "pii", got {grants!r}'
            )
    return out


def load_api_keys(path: Path) -> dict[str, frozenset[str]]:
    """Read :func:`parse_api_keys` JSON from ``path``.

    Raises:
        ConfigError: when the file cannot be read or is not valid.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read API keys file {path}: {exc}") from exc
    return parse_api_keys(text, source=str(path))
