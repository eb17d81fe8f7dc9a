"""The online tile store on Redis: the one place that writes and reads tiles.

Writes are coalesced per batch (last value of a field wins) and sent in one
atomic Lua script call together with the source progress, so progress never
claims events whose tiles Redis does not hold. Reads fetch every requested
entity's hash in one pipelined round trip and merge tiles in the pure core.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from featurestream.errors import ConfigError, OnlineStoreUnavailable

from ..core import TileUpdate, ViewSpec, read_view, tile_key

__all__ = [
    "Clock",
    "ProgressKey",
    "TileStore",
    "connect",
    "freshness_key",
    "marker_key",
    "progress_key",
    "wall_clock_ms",
]

_REDIS_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.ResponseError,  # EXECABORT, OOM, READONLY replica: not acknowledged either way
)


# KEYS: marker ('' for none), progress hash, freshness hash, then one tile hash per
# entity. ARGV: per tile hash (in KEYS order) ttl_ms, n_sets, n_deletes, field/value
# pairs, deleted fields; then n_progress, partition/offset pairs; then n_views, now_ms,
# views. Returns whether the marker existed (1 when there is none to check).
_WRITE_LUA = """
-- Redis's Lua unpacks at most about 8,000 values per call: commands go in slices.
local function sliced(cmd, key, from, to)
  for i = from, to, 1000 do
    redis.call(cmd, key, unpack(ARGV, i, math.min(i + 999, to)))
  end
end
local had = 1
if KEYS[1] ~= '' then had = redis.call('EXISTS', KEYS[1]) end
local a = 1
for k = 4, #KEYS do
  local ttl, ns, nd = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  if nd > 0 then sliced('HDEL', KEYS[k], a + 2 * ns, a + 2 * ns + nd - 1) end
  if ns > 0 then sliced('HSET', KEYS[k], a, a + 2 * ns - 1) end
  redis.call('PEXPIRE', KEYS[k], ttl)
  a = a + 2 * ns + nd
end
local np = tonumber(ARGV[a])
-- Progress only when the tiles before it are known to be there.
if np > 0 and had == 1 then sliced('HSET', KEYS[2], a + 1, a + 2 * np) end
a = a + 1 + 2 * np
local nv = tonumber(ARGV[a])
local now = ARGV[a + 1]
for v = a + 2, a + 1 + nv do redis.call('HSET', KEYS[3], ARGV[v], now) end
return had
"""


def freshness_key(project: str) -> str:
    """Hash of ``{view}`` -> wall-clock ms of the last online write for the view."""
    return f"fst:{project}:_written"


def marker_key(project: str, engine: str) -> str:
    """Set when an engine (a set of views) starts with its tiles in place; its absence
    during the run means Redis lost what it held (it restarted empty)."""
    return f"fst:{project}:_online:{engine}"


def progress_key(project: str) -> str:
    """Hash of ``{topic}:{partition}`` -> next offset to process (all events before are online)."""
    return f"fst:{project}:_progress"


@dataclass(frozen=True)
class ProgressKey:
    """One source partition."""

    topic: str
    partition: int


def connect(url: str, *, timeout_s: float = 5.0) -> redis.Redis:
    """A Redis client for ``url`` (``redis://``, ``rediss://`` or Feast's ``host:port,db=N``).

    Raises:
        ConfigError: when the URL cannot be parsed.
    """
    try:
        if "://" not in url:
            host_port, *params = url.split(",")
            host, _, port = host_port.partition(":")
            kwargs: dict[str, Any] = dict(p.split("=", 1) for p in params if "=" in p)
            return redis.Redis(
                host=host or "localhost",
                port=int(port or 6379),
                db=int(kwargs.get("db", 0)),
                password=kwargs.get("password"),
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
            )
        return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    except ValueError as exc:
        raise ConfigError(
            f"invalid Redis URL {url!r}: {exc}; expected redis://host:port/db"
        ) from exc


class TileStore:
    """Reads and writes tiles of stream feature views in Redis.

    Args:
        client: A redis-py client (built by :func:`connect`).
        describe: Where the client points, for error messages.
    """

    def __init__(self, client: redis.Redis, describe: str = "redis") -> None:
        self._client = client
        self._describe = describe
        self.last_write_found_marker = True
        # Loaded on first use and again after a restart of Redis (NOSCRIPT).
        self._write_script = client.register_script(_WRITE_LUA)

    def ping(self) -> None:
        """Check that Redis answers.

        Raises:
            OnlineStoreUnavailable: when it does not.
        """
        try:
            self._client.ping()
        except (*_REDIS_ERRORS, redis.ResponseError, OSError) as exc:
            raise OnlineStoreUnavailable(
                f"Redis at {self._describe} does not answer: {exc}; start it (featurestream up) "
                "or set FEATURESTREAM_REDIS_URL"
            ) from exc

    def write(
        self,
        updates: Iterable[TileUpdate],
        progress: Mapping[ProgressKey, int] | None = None,
        *,
        project: str = "",
        marker: str | None = None,
    ) -> int:
        """Apply tile updates and the progress they cover, atomically.

        Returns:
            The number of tile fields set. With ``marker`` (a :func:`marker_key`),
            ``last_write_found_marker`` tells whether Redis still held it.

        Raises:
            OnlineStoreUnavailable: when Redis does not answer (nothing is acknowledged).
        """
        latest: dict[str, dict[str, Any]] = {}
        deletes: dict[str, set[str]] = {}
        ttl_ms: dict[str, int] = {}
        for update in updates:
            fields = latest.setdefault(update.key, {})
            gone = deletes.setdefault(update.key, set())
            for name in update.deletes:
                fields.pop(name, None)
                gone.add(name)
            for name, value in update.values.items():
                fields[name] = value
                gone.discard(name)
            ttl_ms[update.key] = update.ttl_ms
        # One atomic script call per batch (instead of three commands per key): the
        # last value of every field, encoded once.
        keys = [marker or "", progress_key(project), freshness_key(project)]
        args: list[Any] = []
        written = 0
        for key, fields in latest.items():
            gone = deletes[key]
            keys.append(key)
            args += (ttl_ms[key], len(fields), len(gone))
            for name, (encode, value) in fields.items():
                args += (name, encode(value))
            args += gone
            written += len(fields)
        progress = progress or {}
        args.append(len(progress))
        for k, offset in progress.items():
            args += (f"{k.topic}:{k.partition}", offset)
        views = {key.split(":", 3)[2] for key in latest}
        args += (len(views), time.time_ns() // 1_000_000, *views)
        try:
            had_marker = bool(self._write_script(keys=keys, args=args))
        except _REDIS_ERRORS as exc:
            raise OnlineStoreUnavailable(f"Redis at {self._describe}: write failed: {exc}") from exc
        self.last_write_found_marker = had_marker
        return written

    def write_many(self, updates: Iterable[TileUpdate], *, project: str, batch: int = 2_000) -> int:
        """Apply many tile updates in :meth:`write` batches of ``batch``; return how many.

        Raises:
            OnlineStoreUnavailable: when Redis does not answer.
        """
        pending: list[TileUpdate] = []
        count = 0
        for update in updates:
            pending.append(update)
            count += 1
            if len(pending) >= batch:
                self.write(pending, project=project)
                pending = []
        if pending:
            self.write(pending, project=project)
        return count

    def has_marker(self, marker: str) -> bool:
        """Whether ``marker`` (a :func:`marker_key`) is set.

        Raises:
            OnlineStoreUnavailable: when Redis does not answer.
        """
        try:
            return bool(self._client.exists(marker))
        except _REDIS_ERRORS as exc:
            raise OnlineStoreUnavailable(f"Redis at {self._describe}: {exc}") from exc

    def set_marker(self, marker: str) -> None:
        """Set ``marker``: this engine's tiles are in place.

        Raises:
            OnlineStoreUnavailable: when Redis does not answer.
        """
        try:
            self._client.set(marker, b"1")
        except _REDIS_ERRORS as exc:
            raise OnlineStoreUnavailable(f"Redis at {self._describe}: {exc}") from exc

    def progress(self, project: str) -> dict[ProgressKey, int]:
        """The next offset to process per source partition, as last written."""
        try:
            raw: dict[bytes, bytes] = self._client.hgetall(progress_key(project))  # type: ignore[assignment]
        except _REDIS_ERRORS as exc:
            raise OnlineStoreUnavailable(f"Redis at {self._describe}: {exc}") from exc
        out = {}
        for field, value in raw.items():
            topic, _, partition = field.decode().rpartition(":")
            out[ProgressKey(topic, int(partition))] = int(value)
        return out

    def freshness(self, project: str) -> dict[str, int]:
        """Wall-clock ms of the last online write per stream view."""
        try:
            raw: dict[bytes, bytes] = self._client.hgetall(freshness_key(project))  # type: ignore[assignment]
        except _REDIS_ERRORS as exc:
            raise OnlineStoreUnavailable(f"Redis at {self._describe}: {exc}") from exc
        return {k.decode(): int(v) for k, v in raw.items()}

    def read(
        self,
        requests: Sequence[tuple[ViewSpec, Sequence[str]]],
        read_time_ms: int,
    ) -> list[list[tuple[dict[str, Any], int | None]]]:
        """Read views for entities in one pipelined round trip.

        Args:
            requests: ``(view, entity ids)`` pairs.
            read_time_ms: The read time ``t`` of the window formula.

        Returns:
            Per request, per entity: ``(feature values, newest event time or None)``.
        """
        try:
            pipe = self._client.pipeline(transaction=False)
            for view, entities in requests:
                for entity in entities:
                    pipe.hgetall(tile_key(view.project, view.name, entity))
            raw: list[dict[bytes, bytes]] = pipe.execute()
        except _REDIS_ERRORS as exc:
            raise OnlineStoreUnavailable(f"Redis at {self._describe}: read failed: {exc}") from exc
        out: list[list[tuple[dict[str, Any], int | None]]] = []
        pos = 0
        for view, entities in requests:
            rows = []
            for _ in entities:
                fields = raw[pos]
                pos += 1
                last = fields.get(b"_last_ms")
                rows.append((read_view(view, fields, read_time_ms), int(last) if last else None))
            out.append(rows)
        return out


Clock = Callable[[], int]


def wall_clock_ms() -> int:
    """The read clock of online reads: now, in epoch milliseconds."""
    return time.time_ns() // 1_000_000
