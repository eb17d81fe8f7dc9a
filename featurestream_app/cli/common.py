"""What every command shares: loading the settings, one-line errors, the codec,
times on the command line, and the engine's compiled views."""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from featurestream.errors import ConfigError, FeaturestreamError, TransientError
from featurestream.events import AvroCodec
from featurestream.settings import Settings

__all__ = ["engine_views", "load_settings", "make_codec", "one_line_errors", "time_ms"]

F = TypeVar("F", bound=Callable[..., Any])


def load_settings() -> Settings:
    """This process's settings, from ``FEATURESTREAM_*`` variables.

    Raises:
        ConfigError: naming the variable and what was wrong with it.
    """
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "FEATURESTREAM_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"{field}: {first['msg']} (got {first.get('input')!r})") from exc


def one_line_errors(fn: F) -> F:
    """Errors of the project's tree become one line on stderr with the fix, never a
    traceback: exit 3 for transient ones (retry), 2 for the others."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FeaturestreamError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(3 if isinstance(exc, TransientError) else 2)

    return wrapper  # type: ignore[return-value]


def make_codec(settings: Settings, *, for_producing: bool) -> AvroCodec:
    """The codec of this process: Confluent wire format when a registry is configured."""
    from featurestream.events import load_contracts

    if settings.schema_registry_url is None:
        return AvroCodec(load_contracts())
    from streams.kafka.registry import registry_lookup

    return AvroCodec(
        load_contracts(),
        registry_lookup(settings.schema_registry_url),
        confluent_framing=for_producing,
    )


def time_ms(value: str, option: str, now_ms: int) -> int:
    """An instant given as ISO 8601 with a timezone, epoch milliseconds, ``now`` or ``now-2h``.

    Raises:
        ConfigError: with an example of what is accepted.
    """
    text = value.strip()
    relative = re.fullmatch(r"now(?:-(\d+)([smhd]))?", text)
    if relative:
        amount, unit = relative.groups()
        scale = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
        return now_ms - (int(amount) * scale[unit] if amount else 0)
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"{option} {value!r} is not a time; use ISO 8601 with a timezone "
            "(2026-11-23T10:00:00Z), epoch milliseconds, now or now-2h"
        ) from exc
    if parsed.tzinfo is None:
        example = text if "T" in text else f"{text}T00:00:00"
        raise ConfigError(
            f"{option} {value!r} has no timezone; add one, e.g. {example}Z for UTC "
            f"or {example}+01:00"
        )
    return int(parsed.timestamp() * 1000)


def engine_views(settings: Settings) -> tuple[tuple[Any, ...], Path]:
    """Every compiled stream view and the offline log root. Engine processes start
    without importing Feast while the registry is unchanged (a cache in the state dir)."""
    from streams.definitions import cached_views

    def compile_all() -> tuple[tuple[Any, ...], Path]:
        from streams.definitions import compile_registry
        from streams.offline.feast_store import log_root
        from streams.repo import open_store

        store = open_store(settings.repo_path, settings.online_redis_url)
        return compile_registry(store), log_root(store.config)

    return cached_views(settings.repo_path, settings.state_dir / "views", compile_all)
