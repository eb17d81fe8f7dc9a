"""The fast feature server: composition (build the app) and process (run uvicorn).

``featurestream serve`` calls :func:`run_server`; tests and embedders call
:func:`build_app` and run the returned ASGI app themselves::

    app = build_app(open_store(repo, url), url, settings=ServerSettings())

With ``workers > 1`` uvicorn starts each worker from :func:`create_app` (an app
factory); :func:`run_server` hands the configuration to the workers in a file only
the user can read, named by the ``FEATURESTREAM_SERVE_CONFIG`` environment
variable, the process boundary being the only place this package reads the
environment.

Slow clients: uvicorn bounds only the idle time between requests
(``timeout_keep_alive``). :class:`ReadDeadlineProtocol`, uvicorn's httptools protocol
with read deadlines, bounds the rest: a request's headers must arrive within
``header_timeout_s``, its body within ``body_timeout_s`` of the headers (the app
answers a late body it is reading with a 408; one it does not read closes the
connection). No connection limit: it would count the slow connections too and refuse
the real ones; the deadlines bound how long any connection holds a file descriptor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import logging
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from featurestream.clock import wall_clock_ms
from featurestream.errors import ConfigError
from streams.online import OnlineReader
from streams.online.readers import connect_online_reader

from .settings import BODY_WATCH, READ_DEADLINES, BodyWatch, ReadDeadlines, ServerSettings

if TYPE_CHECKING:
    from .app import FeatureServer

__all__ = ["ReadDeadlineProtocol", "build_app", "create_app", "remove_stale_configs", "run_server"]

CONFIG_ENV = "FEATURESTREAM_SERVE_CONFIG"
_CONFIG_PREFIX = "featurestream-serve-"


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

    # Here, not at import: the app imports Feast (seconds), which the process that only
    # supervises the workers (run_server) never needs.
    from .app import FeatureServer
    from .registry import StoreRegistry

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


class ReadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with read deadlines (uvicorn has none before a
    request reaches the app).

    * Headers: a connection must complete a request's headers within
      ``header_timeout_s`` of its opening, or of the request's first byte on a
      kept-alive connection. Late: a 408 when part of a request came (the connection
      closes once an answer in progress is sent), else the connection just closes.
    * Body: within ``body_timeout_s`` of the headers. Late: the request's
      :class:`~serving.settings.BodyWatch` turns late and wakes the app, which answers
      a 408; the connection then closes. One the app does not read (it answered
      without it) closes the connection. One timer per connection bounds both, armed
      only while a read left a request incomplete.

    The deadlines are the app's :class:`~serving.settings.ReadDeadlines`, found in the ASGI
    lifespan state (the app publishes them at start-up); without them this is
    uvicorn's protocol. Pass the class as uvicorn's ``http=``; it is importable, so
    it works with ``workers > 1``.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        deadlines = app_state.get(READ_DEADLINES)
        self._deadlines: ReadDeadlines | None = (
            deadlines if isinstance(deadlines, ReadDeadlines) else None
        )
        self._reading: Literal["headers", "body"] | None = None  # of the newest request
        self._timer: asyncio.TimerHandle | None = None
        self._timing: Literal["headers", "body"] | None = None  # what the timer bounds

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the connection's header deadline."""
        super().connection_made(transport)
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the deadline."""
        self._set_timer(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser, then set the deadline of what the connection waits for."""
        super().data_received(data)
        self._track()

    def on_message_begin(self) -> None:
        """A request's first byte."""
        super().on_message_begin()
        self._reading = "headers"

    def on_headers_complete(self) -> None:
        """Its headers are in: the app finds the watch of its body in the scope."""
        super().on_headers_complete()
        self._reading = "body"
        cycle = self.cycle
        if self._deadlines is not None and cycle is not None and cycle.scope is self.scope:
            cast("dict[str, Any]", self.scope)[BODY_WATCH] = BodyWatch()

    def on_message_complete(self) -> None:
        """Its whole body is in."""
        super().on_message_complete()
        self._reading = None

    # Set after each read, not in the parser callbacks: a request whose bytes come in
    # one read (nearly all) arms no timer.
    def _track(self) -> None:
        if self._deadlines is None:
            return
        if self.transport.is_closing():
            self._set_timer(None)
        elif self._reading is not None:
            self._set_timer(self._reading)  # a running header deadline keeps running
        elif self.cycle is not None and not self.cycle.response_complete:
            self._set_timer(None)  # the app has the request
        elif self.timeout_keep_alive_task is None:
            # waiting for a request that no keep-alive timer bounds: a new connection,
            # or bytes between requests (blank lines) that cancelled it
            self._set_timer("headers")

    def _set_timer(self, phase: Literal["headers", "body"] | None) -> None:
        if phase == self._timing:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timing = phase
        if phase is not None and self._deadlines is not None:
            if phase == "headers":
                self._timer = self.loop.call_later(
                    self._deadlines.header_timeout_s, self._headers_late
                )
            else:
                self._timer = self.loop.call_later(self._deadlines.body_timeout_s, self._body_late)

    def _headers_late(self) -> None:
        self._timer, self._timing = None, None
        deadlines = self._deadlines
        if deadlines is None or self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # a pipelined request behind one being answered: close after that answer
            cycle.keep_alive = False
            deadlines.late("headers")
            return
        status, body, headers = deadlines.late("headers")
        if self._reading == "headers":  # part of a request came: say why it ends
            content = [STATUS_LINE[status]]
            for name, value in (
                *self.server_state.default_headers,
                *headers,
                (b"content-length", str(len(body)).encode()),
            ):
                content.extend([name, b": ", value, b"\r\n"])
            content.extend([b"\r\n", body])
            self.transport.write(b"".join(content))
        self.transport.close()

    def _body_late(self) -> None:
        self._timer, self._timing = None, None
        deadlines, cycle = self._deadlines, self.cycle
        if deadlines is None or cycle is None or self.transport.is_closing():
            return
        cycle.keep_alive = False  # whatever answers this request closes the connection
        if cycle.response_complete:  # answered without the body: nothing reads the rest
            deadlines.late("body")
            self.transport.close()
            return
        watch = cycle.scope.get(BODY_WATCH)
        if isinstance(watch, BodyWatch):  # the app answers it (408), woken if it waits
            watch.late = True
            cycle.message_event.set()


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
    progress: Callable[[str], None] | None = None,
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
        progress: Called with start-up lines, the last one ``listening on URL (N workers)``
            once the server answers HTTP (one line per server, not per worker).

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
    remove_stale_configs(Path(tempfile.gettempdir()))
    fd, config_path = tempfile.mkstemp(prefix=f"{_CONFIG_PREFIX}{os.getpid()}-", suffix=".json")
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
    if progress is not None:
        scheme = "https" if ssl_certfile else "http"
        _announce(progress, scheme, host, port, workers)
    try:
        _run_uvicorn(uvicorn, host, port, workers, log_level, ssl_keyfile, ssl_certfile)
    finally:
        Path(config_path).unlink(missing_ok=True)


def remove_stale_configs(directory: Path) -> list[Path]:
    """Delete the configuration files (API keys) that servers killed before they could
    remove them (SIGKILL, a crash) left in ``directory``: each is named by its server's
    pid, and removed once no process has that pid. Files of other users stay.

    Returns:
        The files removed.
    """
    removed = []
    for path in directory.glob(f"{_CONFIG_PREFIX}*.json"):
        pid = path.name[len(_CONFIG_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            path.unlink()
        except OSError:  # another user's, or gone already
            continue
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _announce(
    progress: Callable[[str], None], scheme: str, host: str, port: int, workers: int
) -> None:
    """Report start-up from a daemon thread: what is starting, then ``listening on``
    once a ``GET /health`` over the real socket is answered."""
    url = f"{scheme}://{_url_host(host)}:{port}"
    plural = "s" if workers != 1 else ""
    progress(f"starting {workers} worker{plural} on {url}: loading the feature registry")
    # where to reach a wildcard bind from here (a connect address, not a bind)
    probe_host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104

    def answers() -> bool:
        connection: http.client.HTTPConnection
        if scheme == "https":
            context = ssl.create_default_context()
            context.check_hostname = False  # our own socket: any certificate will do
            context.verify_mode = ssl.CERT_NONE
            connection = http.client.HTTPSConnection(probe_host, port, timeout=2, context=context)
        else:
            connection = http.client.HTTPConnection(probe_host, port, timeout=2)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()

    def watch() -> None:
        started = time.monotonic()
        next_note = 10.0
        while not answers():
            waited = time.monotonic() - started
            if waited >= next_note:
                progress(
                    f"still starting after {waited:.0f} s "
                    "(the workers import Feast and load the registry)"
                )
                next_note += 10.0
            time.sleep(0.1)
        progress(f"listening on {url} ({workers} worker{plural})")

    threading.Thread(target=watch, name="serve-announce", daemon=True).start()


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
        http=ReadDeadlineProtocol,
        ws="none",  # no WebSocket routes: no upgrade to another protocol
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
