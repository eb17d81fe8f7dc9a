"""The fast feature server: composition (build the app) and process (run uvicorn).

``featurestream serve`` calls :func:`run_server`; tests and embedders call
:func:`build_app` and run the returned ASGI app themselves::

    app = build_app(open_store(repo, url), url, settings=ServerSettings())

With ``workers > 1`` uvicorn starts each worker from :func:`create_app` (an app
factory); :func:`run_server` hands the configuration to the workers in a file only
the user can read, named by the ``FEATURESTREAM_SERVE_CONFIG`` environment
variable, the process boundary being the only place this package reads the
environment.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from featurestream.clock import wall_clock_ms
from featurestream.errors import ConfigError
from streams.online import OnlineReader
from streams.online.readers import connect_online_reader

from .app import FeatureServer
from .registry import StoreRegistry
from .settings import ServerSettings

__all__ = ["build_app", "create_app", "run_server"]

CONFIG_ENV = "FEATURESTREAM_SERVE_CONFIG"


def build_app(
    store: Any,
    redis_url: str,
    *,
    settings: ServerSettings,
    clock: Callable[[], int] = wall_clock_ms,
) -> FeatureServer:
    """The ASGI application serving ``store``'s features from Redis at ``redis_url``.

    No I/O happens here: the registry is read and Redis connected at ASGI start-up.

    Args:
        store: A ``feast.FeatureStore`` (``streams.repo.open_store``).
        redis_url: The online store's URL (``redis://host:port/db``).
        settings: Limits and options.
        clock: Read clock of stream windows in epoch ms (default: wall clock).
    """

    def reader() -> OnlineReader:
        return connect_online_reader(
            redis_url,
            kind=settings.redis_client,
            timeout_ms=settings.redis_timeout_ms,
            max_in_flight=settings.max_in_flight,
        )

    return FeatureServer(StoreRegistry(store), reader, settings=settings, clock=clock)


def _settings_to_json(settings: ServerSettings) -> dict[str, Any]:
    out = dataclasses.asdict(settings)
    out["api_keys"] = {k: sorted(v) for k, v in settings.api_keys.items()}
    return out


def _settings_from_json(data: Mapping[str, Any]) -> ServerSettings:
    values = dict(data)
    values["api_keys"] = {k: frozenset(v) for k, v in values.get("api_keys", {}).items()}
    return ServerSettings(**values)


def create_app() -> FeatureServer:
    """App factory of a uvicorn worker (started by :func:`run_server`).

    Raises:
        ConfigError: when not started by :func:`run_server`.
    """
    from streams.repo import open_store

    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(
            f"{CONFIG_ENV} is not set: start the server with serving.run_server "
            "(featurestream serve), not uvicorn directly"
        )
    config = json.loads(Path(path).read_text())
    logging.basicConfig(
        level=str(config.get("log_level", "info")).upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # Feast logs every registry refresh at INFO.
    logging.getLogger("feast").setLevel(logging.WARNING)
    settings = _settings_from_json(config["settings"])
    clock: Callable[[], int] = wall_clock_ms
    if config.get("read_time_ms") is not None:
        fixed = int(config["read_time_ms"])

        def clock() -> int:
            return fixed

    store = open_store(Path(config["repo_path"]), config["redis_url"])
    return build_app(store, config["redis_url"], settings=settings, clock=clock)


def run_server(
    repo_path: Path,
    redis_url: str,
    *,
    host: str,
    port: int,
    workers: int = 1,
    settings: ServerSettings | None = None,
    ssl_keyfile: Path | None = None,
    ssl_certfile: Path | None = None,
    read_time_ms: int | None = None,
    log_level: str = "info",
) -> None:
    """Serve the features of ``repo_path`` over HTTP until stopped (blocks).

    Args:
        repo_path: The Feast repository (``feature_store.yaml``).
        redis_url: The online store.
        host: Bind address.
        port: Port.
        workers: Worker processes (each an event loop; about one per core).
        settings: Limits and options (default :class:`ServerSettings`).
        ssl_keyfile: TLS private key (with ``ssl_certfile``: serve HTTPS).
        ssl_certfile: TLS certificate chain.
        read_time_ms: Pin the read clock of stream windows (tests, replays); None: now.
        log_level: uvicorn's log level.

    Raises:
        ConfigError: for an invalid argument or repository.
    """
    import uvicorn

    if workers < 1:
        raise ConfigError(f"workers={workers}: expected at least 1")
    if (ssl_keyfile is None) != (ssl_certfile is None):
        raise ConfigError("TLS needs both ssl_keyfile and ssl_certfile (or neither)")
    if not (repo_path / "feature_store.yaml").is_file():
        raise ConfigError(
            f"no feature repository at {repo_path.resolve()} (feature_store.yaml missing); "
            "run from the project root or set FEATURESTREAM_REPO_PATH"
        )
    settings = settings or ServerSettings()
    # The workers read the configuration (API keys included) from a file only this user
    # can read, not from the environment (visible in /proc, inherited by children).
    fd, config_path = tempfile.mkstemp(prefix="featurestream-serve-", suffix=".json")
    with os.fdopen(fd, "w") as out:  # mkstemp creates it with mode 0600
        json.dump(
            {
                "repo_path": str(repo_path.resolve()),
                "redis_url": redis_url,
                "settings": _settings_to_json(settings),
                "read_time_ms": read_time_ms,
                "log_level": log_level,
            },
            out,
        )
    os.environ[CONFIG_ENV] = config_path
    try:
        _run_uvicorn(uvicorn, host, port, workers, log_level, ssl_keyfile, ssl_certfile)
    finally:
        Path(config_path).unlink(missing_ok=True)


def _run_uvicorn(
    uvicorn: Any,
    host: str,
    port: int,
    workers: int,
    log_level: str,
    ssl_keyfile: Path | None,
    ssl_certfile: Path | None,
) -> None:
    uvicorn.run(
        "serving.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=30,
        backlog=2048,
        log_level=log_level,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
    )
