"""The HTTP adapter: a small ASGI application (no framework on the request path).

Routes:

* ``POST /get-online-features``: Feast's request and response JSON (see
  :mod:`serving.request`, :mod:`serving.plan`, :mod:`serving.lookup`);
* ``GET /health``: 200 while the process runs;
* ``GET /ready``: 200 when the registry is loaded and the online store answers in time;
* ``GET /features``: every view, feature and feature service;
* ``GET /metrics``: Prometheus text.

With API keys configured (:mod:`serving.auth`), ``/get-online-features`` and
``/features`` need a key; the probes (``/health``, ``/ready``, ``/metrics``) do not.

Errors are JSON ``{"error": {"code", "message", "request_id"}}`` with the status
mapped from the error class here (the one place that knows HTTP). Every response
carries ``X-Request-ID`` (the caller's, when it sent a usable one); error log lines
carry ``request_id=``. Unexpected exceptions are logged with their traceback and
answered with a generic 500, never with the traceback.

Slow clients: a lookup takes its ``max_in_flight`` slot only once its body has arrived,
and a body must arrive within ``body_timeout_s`` of the headers (else 408
``body_timeout`` and the connection closed). What happens before a request reaches the
app (its headers arriving, a body the app never reads) is bounded by the HTTP protocol
(:class:`serving.server.ReadDeadlineProtocol`), which finds its deadlines in the ASGI
lifespan state under :data:`serving.settings.READ_DEADLINES`, published at start-up.

Life cycle (ASGI lifespan): start-up creates the online-store reader, loads the registry
in a worker thread and starts the refresh task; shutdown stops both. Building the
application does no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import orjson

from featurestream.errors import (
    ConfigError,
    FeaturestreamError,
    Forbidden,
    InvalidRequest,
    NotReady,
    OnlineStoreUnavailable,
    Overloaded,
    RequestTooLarge,
    TransformFailed,
    Unauthenticated,
    UnknownName,
)
from streams.online import OnlineReader, check_eviction

from .auth import KeyTable, authorize_plan, authorize_selection, bearer_token
from .catalog import Catalog, RegistrySnapshot
from .lookup import assemble, bind
from .metrics import CONTENT_TYPE, ServerMetrics
from .openapi import OPENAPI
from .plan import plan_for
from .request import parse_request
from .settings import (
    BODY_WATCH,
    READ_DEADLINES,
    BodyWatch,
    ReadDeadlines,
    ReadPhase,
    ServerSettings,
)

__all__ = ["FeatureServer", "RegistrySource"]

_STORE_STATS_S = 0.25  # what a scrape waits for the online store's figures
log = logging.getLogger("serving")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
Response = tuple[int, bytes, Headers]

_JSON = (b"content-type", b"application/json")
_OPENAPI_JSON = orjson.dumps(OPENAPI)
_RETRY = (b"retry-after", b"1")
_CLOSE = (b"connection", b"close")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (InvalidRequest, 422),
    (UnknownName, 404),
    (RequestTooLarge, 413),
    (Unauthenticated, 401),
    (Forbidden, 403),
    (Overloaded, 503),
    (NotReady, 503),
    (OnlineStoreUnavailable, 503),
    (TransformFailed, 500),
    (ConfigError, 500),
)
_CODES: dict[type[BaseException], str] = {
    OnlineStoreUnavailable: "online_store_unavailable",
    ConfigError: "definition_error",
}


class RegistrySource(Protocol):
    """Where the catalog comes from (see :class:`serving.registry.StoreRegistry`)."""

    @property
    def project(self) -> str:
        """The Feast project."""
        ...

    def load(self, previous_fingerprint: str | None = None) -> RegistrySnapshot | None:
        """A new snapshot, or None when unchanged. Blocking; run in a thread."""
        ...


class _ClientGone(Exception):
    """The client disconnected before sending the whole body."""


class _BodyLate(Exception):
    """The body did not arrive within ``body_timeout_s``."""


def _status_of(exc: FeaturestreamError) -> int:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def _code_of(exc: FeaturestreamError) -> str:
    for kind, code in _CODES.items():
        if isinstance(exc, kind):
            return code
    return str(getattr(exc, "code", "internal"))


class FeatureServer:
    """The feature server as an ASGI application.

    Args:
        registry: Loads registry snapshots (blocking; called in a thread).
        reader: Builds the online-store reader at start-up (no I/O until then).
        settings: Limits and options.
        clock: The read clock of stream windows, epoch ms (injected; tests pin it).
    """

    def __init__(
        self,
        registry: RegistrySource,
        reader: Callable[[], OnlineReader],
        *,
        settings: ServerSettings,
        clock: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.metrics = ServerMetrics()
        self._registry = registry
        self._make_reader = reader
        self._reader: OnlineReader | None = None
        self._keys = KeyTable(settings.api_keys)
        self._catalog: Catalog | None = None
        self._registry_problem: str | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._in_flight = 0
        self._store_checked = False
        self._id_prefix = f"{os.getpid():x}-{time.time_ns() % 0xFFFFFF:x}-"
        self._id_counter = 0
        self._routes: dict[str, tuple[str, Callable[..., Awaitable[Response]]]] = {
            "/get-online-features": ("POST", self._get_online_features),
            "/health": ("GET", self._health),
            "/ready": ("GET", self._ready),
            "/features": ("GET", self._features),
            "/metrics": ("GET", self._metrics),
            "/openapi.json": ("GET", self._openapi),
        }

    @property
    def read_deadlines(self) -> ReadDeadlines:
        """What the HTTP protocol must enforce before a request reaches this app."""
        return ReadDeadlines(
            self.settings.header_timeout_s, self.settings.body_timeout_s, self._late
        )

    @property
    def catalog(self) -> Catalog | None:
        """The catalog of the registry version being served (None until loaded)."""
        return self._catalog

    # ------------------------------------------------------------ ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except FeaturestreamError as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                state = scope.get("state")
                if state is not None:  # the server supports lifespan state
                    state[READ_DEADLINES] = self.read_deadlines
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        """Create the online-store reader, check the store's eviction policy, load the
        registry, start the refresh task.

        Raises:
            ConfigError: for a store that evicts keys when full (unless allowed).
        """
        self._reader = self._make_reader()
        await self.check_store()
        await self.refresh_registry()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="registry-refresh")

    async def check_store(self) -> None:
        """Refuse (or warn about) an online store that may evict tiles; once it answered
        (a store down at start is checked with the next registry refresh).

        Raises:
            ConfigError: for a store that evicts keys when full (unless allowed).
        """
        if self._store_checked or self._reader is None:
            return
        try:
            stats = await self._reader.stats()
        except OnlineStoreUnavailable as exc:
            log.warning("online store not checked yet: %s", exc)
            return
        self.metrics.store = stats
        warning = check_eviction(stats, allowed=self.settings.allow_evicting_store)
        if warning:
            log.warning("%s", warning)
        self._store_checked = True

    async def shutdown(self) -> None:
        """Stop the refresh task and close the online-store reader."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        if self._reader is not None:
            await self._reader.close()
            self._reader = None

    async def refresh_registry(self) -> bool:
        """Re-read the registry; compile a new catalog if it changed.

        Returns:
            True when a new catalog is served from now on.
        """
        previous = self._catalog.fingerprint if self._catalog is not None else None
        max_plans = self.settings.max_plans

        def load() -> Catalog | None:
            snapshot = self._registry.load(previous)
            return None if snapshot is None else Catalog(snapshot, max_plans=max_plans)

        try:
            catalog = await asyncio.to_thread(load)
        except FeaturestreamError as exc:
            self._registry_problem = str(exc)
            self.metrics.registry_loads.labels("failed").inc()
            log.warning("registry load failed project=%s error=%s", self._registry.project, exc)
            return False
        if catalog is None:
            return False
        self._catalog = catalog
        self._registry_problem = None
        self.metrics.registry_loads.labels("loaded").inc()
        log.info(
            "registry loaded project=%s fingerprint=%s views=%d services=%d",
            catalog.project,
            catalog.fingerprint[:12],
            len(catalog.views) + len(catalog.odfvs),
            len(catalog.services),
        )
        return True

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.registry_refresh_s)
            try:
                try:
                    await self.check_store()
                except ConfigError as exc:  # found once the store answered: said, not fatal
                    log.error("%s", exc)
                    self._store_checked = True
                await self.refresh_registry()
            except Exception:  # the refresh must outlive any one bad registry version
                log.exception("registry refresh failed; serving the previous version")

    # ------------------------------------------------------------ HTTP
    def _request_id(self, given: bytes | None) -> str:
        if given:
            text = given.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
        self._id_counter += 1
        return f"{self._id_prefix}{self._id_counter:x}"

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        headers: dict[bytes, bytes] = dict(scope["headers"])
        request_id = self._request_id(headers.get(b"x-request-id"))
        route = self._routes.get(path)
        try:
            if route is None:
                raise UnknownName(
                    f"no route {scope['method']} {path}; routes: "
                    + ", ".join(f"{m} {p}" for p, (m, _) in self._routes.items())
                )
            method, handler = route
            if scope["method"] != method:
                status, body, extra = self._error_response(
                    405,
                    "method_not_allowed",
                    f"{path} takes {method}, not {scope['method']}",
                    request_id,
                )
                extra.append((b"allow", method.encode()))
                self.metrics.errors.labels("method_not_allowed").inc()
            else:
                status, body, extra = await handler(headers, receive, request_id, scope)
        except _ClientGone:
            return
        except _BodyLate:
            status, body, extra = self._timed_out("body", request_id)
        except FeaturestreamError as exc:
            status, body, extra = self._failure(exc, request_id, path)
        except Exception:  # the boundary: log it, never send a traceback
            log.exception("unexpected error request_id=%s path=%s", request_id, path)
            self.metrics.errors.labels("internal").inc()
            status, body, extra = self._error_response(
                500,
                "internal",
                "internal error; see the server log for this request id",
                request_id,
            )
        extra.append((b"x-request-id", request_id.encode()))
        extra.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(path, status, time.perf_counter() - started)

    def _error_response(self, status: int, code: str, message: str, request_id: str) -> Response:
        body = orjson.dumps({"error": {"code": code, "message": message, "request_id": request_id}})
        return status, body, [_JSON]

    def _failure(self, exc: FeaturestreamError, request_id: str, path: str) -> Response:
        status = _status_of(exc)
        code = _code_of(exc)
        self.metrics.errors.labels(code).inc()
        level = logging.INFO if status < 500 else logging.WARNING
        log.log(
            level,
            "request failed request_id=%s path=%s status=%d code=%s message=%s",
            request_id,
            path,
            status,
            code,
            exc,
        )
        response = self._error_response(status, code, str(exc), request_id)
        if status == 503:
            response[2].append(_RETRY)
        if status == 401:
            response[2].append((b"www-authenticate", b'Bearer realm="featurestream"'))
        return response

    def _late(self, phase: ReadPhase) -> Response:
        """:attr:`ReadDeadlines.late`: a request the app has not seen, so a new id."""
        request_id = self._request_id(None)
        status, body, extra = self._timed_out(phase, request_id)
        extra.append((b"x-request-id", request_id.encode()))
        return status, body, extra

    def _timed_out(self, phase: ReadPhase, request_id: str) -> Response:
        """Count a request whose headers or body came too late; its 408 answer."""
        settings = self.settings
        if phase == "headers":
            code = "header_timeout"
            message = (
                f"the request headers did not arrive within {settings.header_timeout_s:g} s "
                "(header_timeout_s); send the whole request at once"
            )
        else:
            code = "body_timeout"
            message = (
                f"the request body did not arrive within {settings.body_timeout_s:g} s of its "
                "headers (body_timeout_s); send the whole body at once"
            )
        self.metrics.errors.labels(code).inc()
        log.info("request timed out request_id=%s code=%s", request_id, code)
        status, body, extra = self._error_response(408, code, message, request_id)
        extra.append(_CLOSE)
        return status, body, extra

    async def _read_body_in_time(
        self, headers: dict[bytes, bytes], receive: Receive, scope: Scope
    ) -> bytes:
        """The request's body, refused once ``body_timeout_s`` passed after its headers:
        timed by the HTTP protocol when it says so (a :class:`BodyWatch` in the scope:
        no timer per request), else here."""
        watch = scope.get(BODY_WATCH)
        if isinstance(watch, BodyWatch):
            return await self._read_body(headers, receive, watch)
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):
                return await self._read_body(headers, receive, None)
        except TimeoutError as exc:
            raise _BodyLate from exc

    async def _read_body(
        self, headers: dict[bytes, bytes], receive: Receive, watch: BodyWatch | None
    ) -> bytes:
        limit = self.settings.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._discard(receive, 4 * limit - int(declared), watch)
            raise RequestTooLarge(
                f"the body has {int(declared)} bytes; this server accepts at most {limit}: "
                "send fewer entities per request"
            )
        chunks = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            if watch is not None and watch.late:
                raise _BodyLate
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > limit:
                if more:
                    await self._discard(receive, 4 * limit - size, watch)
                raise RequestTooLarge(
                    f"the body has more than {limit} bytes, the most this server accepts: "
                    "send fewer entities per request"
                )
            chunks.append(chunk)
            if not more:
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    async def _discard(receive: Receive, budget: int, watch: BodyWatch | None) -> None:
        """Read and drop the rest of a refused body, up to ``budget`` bytes.

        A client still sending when the connection closes gets a reset instead of
        the 413; a body up to 4x the limit is read to the end so the client sees the
        answer. Beyond that, the server closes the connection after answering.
        """
        while budget > 0:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            if watch is not None and watch.late:
                raise _BodyLate
            budget -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    # ------------------------------------------------------------ routes
    async def _get_online_features(
        self, headers: dict[bytes, bytes], receive: Receive, request_id: str, scope: Scope
    ) -> Response:
        settings = self.settings
        grants = self._grants(headers)  # an unknown key is refused before its body is read
        # A slot is taken only once the body is here: a slow sender holds a connection,
        # never a slot of the lookups being served.
        body = await self._read_body_in_time(headers, receive, scope)
        if self._in_flight >= settings.max_in_flight:
            raise Overloaded(
                f"{self._in_flight} lookups in flight, the most this worker serves "
                f"(max_in_flight={settings.max_in_flight}); retry after 1 s"
            )
        self._in_flight += 1
        self.metrics.in_flight.inc()
        try:
            request = parse_request(body, max_entities=settings.max_entities)
            catalog = self._catalog
            if catalog is None or self._reader is None:
                raise NotReady(
                    "the feature registry is not loaded yet"
                    + (f" ({self._registry_problem})" if self._registry_problem else "")
                    + "; retry shortly"
                )
            if grants is not None:
                authorize_selection(grants, request.feature_service)
            plan = plan_for(
                catalog,
                features=request.features,
                feature_service=request.feature_service,
                full_feature_names=request.full_feature_names,
            )
            if grants is not None:
                authorize_plan(grants, plan)
            lookup = bind(plan, request, catalog)
            self.metrics.entities.observe(request.rows)
            read_ms = self.clock()
            answers = await self._reader.fetch(lookup.reads)
            answer = assemble(lookup, answers, read_ms, enforce_ttl=settings.enforce_ttl)
            return 200, orjson.dumps(answer), [_JSON]
        finally:
            self._in_flight -= 1
            self.metrics.in_flight.dec()

    def _grants(self, headers: dict[bytes, bytes]) -> frozenset[str] | None:
        """The grants of the request's API key (None: auth is off).

        Raises:
            Unauthenticated: when auth is on and the key is missing or unknown.
        """
        if not self._keys.enabled:
            return None
        authorization = headers.get(b"authorization")
        api_key = headers.get(b"x-api-key")
        return self._keys.grants(
            bearer_token(
                authorization.decode("latin-1") if authorization else None,
                api_key.decode("latin-1") if api_key else None,
            )
        )

    async def _openapi(
        self, headers: dict[bytes, bytes], receive: Receive, rid: str, scope: Scope
    ) -> Response:
        return 200, _OPENAPI_JSON, [_JSON]

    async def _health(
        self, headers: dict[bytes, bytes], receive: Receive, rid: str, scope: Scope
    ) -> Response:
        return 200, b'{"status":"ok"}', [_JSON]

    async def _ready(
        self, headers: dict[bytes, bytes], receive: Receive, rid: str, scope: Scope
    ) -> Response:
        problems = []
        catalog = self._catalog
        if catalog is None:
            problems.append(self._registry_problem or "the feature registry is not loaded yet")
        if self._reader is None:
            problems.append("the server is not started")
        else:
            try:
                await self._reader.ping()
            except OnlineStoreUnavailable as exc:
                problems.append(str(exc))
        if problems:
            response = self._error_response(503, "not_ready", "; ".join(problems), rid)
            response[2].append(_RETRY)
            return response
        assert catalog is not None
        body = orjson.dumps(
            {"status": "ready", "project": catalog.project, "registry": catalog.fingerprint[:12]}
        )
        return 200, body, [_JSON]

    async def _features(
        self, headers: dict[bytes, bytes], receive: Receive, rid: str, scope: Scope
    ) -> Response:
        self._grants(headers)  # any valid key may list the features
        catalog = self._catalog
        if catalog is None:
            raise NotReady("the feature registry is not loaded yet; retry shortly")
        return 200, catalog.features_json, [_JSON]

    async def _metrics(
        self, headers: dict[bytes, bytes], receive: Receive, rid: str, scope: Scope
    ) -> Response:
        if self._reader is not None:
            # A scrape never waits long for a slow store: the last figures then.
            with contextlib.suppress(OnlineStoreUnavailable, TimeoutError):
                async with asyncio.timeout(_STORE_STATS_S):
                    self.metrics.store = await self._reader.stats()
        return 200, self.metrics.render(), [(b"content-type", CONTENT_TYPE.encode())]
