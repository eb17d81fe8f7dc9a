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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from featurestream.errors import ConfigError

__all__ = [
    "ALL_GRANT",
    "FEATURES_GRANT",
    "PII_GRANT",
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
    api_keys: Mapping[str, frozenset[str]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_entities", "max_body_bytes", "redis_timeout_ms", "max_in_flight"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"server setting {name}={value!r}: expected an integer > 0")
        if self.registry_refresh_s <= 0:
            raise ConfigError(
                f"server setting registry_refresh_s={self.registry_refresh_s!r}: expected > 0"
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
