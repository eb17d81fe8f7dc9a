"""The blocking online store on Redis (standalone).

Writes are coalesced per batch (last value of a tile wins) and sent in one atomic
Lua script call together with the source progress, so progress never claims
events whose tiles Redis does not hold. Reads fetch every requested entity's hash
in one pipelined round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis

from featurestream.clock import Clock, wall_clock_ms

from ...core import StoredTiles, TileUpdate, ViewSpec
from ..base import EngineMarker, OnlineStore, ProgressKey, StoreStats, WriteResult
from .client import connect as connect_client
from .client import parse, translated
from .layout import (
    LAST_EVENT_FIELD,
    decode_tiles,
    entity_of_key,
    freshness_key,
    marker_key,
    progress_key,
    tile_key,
    tile_key_prefix,
)

__all__ = ["RedisOnlineStore"]

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

_SCAN_COUNT = 10_000


def _encode_int(value: int) -> bytes:
    return str(value).encode()


class RedisOnlineStore(OnlineStore):
    """The online store on one Redis server.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL (or Feast's connection string).
        timeout_s: Socket and connect timeout of every command.
        clock: Wall clock of the freshness records.
        client: An existing redis-py client to use instead of one for ``url``.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        clock: Clock = wall_clock_ms,
        client: redis.Redis | None = None,
    ) -> None:
        self._where = parse(url).where
        self._client = client if client is not None else connect_client(url, timeout_s=timeout_s)
        self._clock = clock
        # Loaded on first use and again after a restart of Redis (NOSCRIPT).
        self._write_script = self._client.register_script(_WRITE_LUA)

    @property
    def where(self) -> str:
        """Where the store is (the URL without its password)."""
        return self._where

    def ping(self) -> None:
        with translated(self._where, "PING"):
            self._client.ping()

    def write(
        self,
        updates: Sequence[TileUpdate],
        progress: Mapping[ProgressKey, int] | None = None,
        *,
        project: str = "",
        marker: EngineMarker | None = None,
    ) -> WriteResult:
        # The last value of every field and every deleted field, per key.
        latest: dict[str, dict[str, Any]] = {}
        deletes: dict[str, set[str]] = {}
        ttl_ms: dict[str, int] = {}
        views: set[str] = set()
        for update in updates:
            key = tile_key(update.project, update.view, update.entity)
            fields = latest.get(key)
            if fields is None:
                fields = latest[key] = {}
                deletes[key] = set()
                views.add(update.view)
            gone = deletes[key]
            for slot, index in update.deletes:
                name = f"{slot}:{index}"
                fields.pop(name, None)
                gone.add(name)
            for (slot, index), value in update.sets.items():
                name = f"{slot}:{index}"
                fields[name] = value
                gone.discard(name)
            if update.newest_event_ms is not None:
                fields[LAST_EVENT_FIELD] = (_encode_int, update.newest_event_ms)
            ttl_ms[key] = update.ttl_ms
        # One atomic script call per batch (instead of three commands per key): the
        # last value of every field, encoded once.
        keys = [
            marker_key(marker) if marker is not None else "",
            progress_key(project),
            freshness_key(project),
        ]
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
        args += (len(views), self._clock(), *views)
        with translated(self._where, "write"):
            had_marker = bool(self._write_script(keys=keys, args=args))
        return WriteResult(written, had_marker)

    def read_tiles(
        self, requests: Sequence[tuple[ViewSpec, Sequence[str]]]
    ) -> list[list[StoredTiles | None]]:
        with translated(self._where, "read"):
            pipe = self._client.pipeline(transaction=False)
            for view, entities in requests:
                for entity in entities:
                    pipe.hgetall(tile_key(view.project, view.name, entity))
            raw: list[dict[bytes, bytes]] = pipe.execute()
        out: list[list[StoredTiles | None]] = []
        pos = 0
        for view, entities in requests:
            rows = raw[pos : pos + len(entities)]
            pos += len(entities)
            out.append([decode_tiles(view, fields) if fields else None for fields in rows])
        return out

    def has_marker(self, marker: EngineMarker) -> bool:
        with translated(self._where, "EXISTS"):
            return bool(self._client.exists(marker_key(marker)))

    def set_marker(self, marker: EngineMarker) -> None:
        with translated(self._where, "SET"):
            self._client.set(marker_key(marker), b"1")

    def progress(self, project: str) -> dict[ProgressKey, int]:
        with translated(self._where, "HGETALL"):
            raw: dict[bytes, bytes] = self._client.hgetall(progress_key(project))  # type: ignore[assignment]
        out = {}
        for field, value in raw.items():
            topic, _, partition = field.decode().rpartition(":")
            out[ProgressKey(topic, int(partition))] = int(value)
        return out

    def freshness(self, project: str) -> dict[str, int]:
        with translated(self._where, "HGETALL"):
            raw: dict[bytes, bytes] = self._client.hgetall(freshness_key(project))  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}

    def entities(self, view: ViewSpec, limit: int) -> list[str]:
        prefix = tile_key_prefix(view.project, view.name)
        out: list[str] = []
        with translated(self._where, "SCAN"):
            for key in self._client.scan_iter(match=prefix + "*", count=_SCAN_COUNT):
                out.append(entity_of_key(view.project, view.name, key))
                if len(out) >= limit:
                    break
        return out

    def stats(self) -> StoreStats:
        with translated(self._where, "INFO"):
            keys = int(self._client.dbsize())  # type: ignore[arg-type]
            memory: dict[str, Any] = self._client.info("memory")  # type: ignore[assignment]
            counters: dict[str, Any] = self._client.info("stats")  # type: ignore[assignment]
        return StoreStats(
            keys,
            int(memory["used_memory"]),
            int(counters.get("evicted_keys", 0)),
            str(memory.get("maxmemory_policy", "")) or None,
        )

    def close(self) -> None:
        self._client.close()
