"""The blocking online store on Redis (standalone).

Writes are coalesced per batch (last value of a tile wins) and sent in one atomic
Lua script call together with the source progress, so progress never claims
events whose tiles Redis does not hold. Reads fetch every requested entity's hash
in one pipelined round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from featurestream.clock import Clock, wall_clock_ms

from ...core import StoredTiles, TileUpdate, ViewSpec
from ..base import (
    Marker,
    OnlineStore,
    ProgressKey,
    StoreStats,
    ViewProgress,
    ViewRows,
    ViewState,
    WriteResult,
    serves,
)
from .client import STATS_COMMANDS, parse, stats_of, translated
from .client import connect as connect_client
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

# KEYS: freshness hash; per view group its marker and progress hash; then one tile
# hash per entity. ARGV: n_groups; per group check (1: the marker must be there),
# n_offsets, partition/offset pairs; per tile hash (in KEYS order) ttl_ms, n_sets,
# n_deletes, field/value pairs, deleted fields; then n_views, now_ms, views. Returns
# the (1-based) groups whose marker was checked and gone: their progress is not
# recorded.
_WRITE_LUA = """
-- Redis's Lua unpacks at most about 8,000 values per call: commands go in slices.
local function sliced(cmd, key, from, to)
  for i = from, to, 1000 do
    redis.call(cmd, key, unpack(ARGV, i, math.min(i + 999, to)))
  end
end
local ng = tonumber(ARGV[1])
local a = 2
local lost = {}
local groups = {}
for g = 1, ng do
  local check, np = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local ok = check == 0 or redis.call('EXISTS', KEYS[2 * g]) == 1
  if not ok then lost[#lost + 1] = g end
  groups[g] = {ok, a + 2, np}
  a = a + 2 + 2 * np
end
for k = 2 + 2 * ng, #KEYS do
  local ttl, ns, nd = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  if nd > 0 then sliced('HDEL', KEYS[k], a + 2 * ns, a + 2 * ns + nd - 1) end
  if ns > 0 then sliced('HSET', KEYS[k], a, a + 2 * ns - 1) end
  redis.call('PEXPIRE', KEYS[k], ttl)
  a = a + 2 * ns + nd
end
-- Progress only when the tiles before it are known to be there.
for g = 1, ng do
  local ok, from, np = groups[g][1], groups[g][2], groups[g][3]
  if ok and np > 0 then sliced('HSET', KEYS[2 * g + 1], from, from + 2 * np - 1) end
end
local nv = tonumber(ARGV[a])
local now = ARGV[a + 1]
for v = a + 2, a + 1 + nv do redis.call('HSET', KEYS[1], ARGV[v], now) end
return lost
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
        progress: Sequence[ViewProgress] = (),
        *,
        project: str = "",
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
        keys = [freshness_key(project)]
        args: list[Any] = [len(progress)]
        for group in progress:
            keys += (marker_key(group.state), progress_key(group.state))
            args += (1 if group.check_marker else 0, len(group.offsets))
            for k, offset in group.offsets.items():
                args += (f"{k.topic}:{k.partition}", offset)
        written = 0
        for key, fields in latest.items():
            gone = deletes[key]
            keys.append(key)
            args += (ttl_ms[key], len(fields), len(gone))
            for name, (encode, value) in fields.items():
                args += (name, encode(value))
            args += gone
            written += len(fields)
        args += (len(views), self._clock(), *views)
        with translated(self._where, "write"):
            lost: list[int] = self._write_script(keys=keys, args=args)
        return WriteResult(written, tuple(progress[int(g) - 1].state for g in lost))

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

    def read_views(self, requests: Sequence[tuple[ViewSpec, Sequence[str]]]) -> list[ViewRows]:
        with translated(self._where, "read"):
            pipe = self._client.pipeline(transaction=False)
            for view, entities in requests:
                pipe.get(marker_key(ViewState.of(view)))
                for entity in entities:
                    pipe.hgetall(tile_key(view.project, view.name, entity))
            raw: list[Any] = pipe.execute()
        out: list[ViewRows] = []
        pos = 0
        for view, entities in requests:
            marker = None if raw[pos] is None else Marker.decode(raw[pos].decode())
            rows = raw[pos + 1 : pos + 1 + len(entities)]
            pos += 1 + len(entities)
            found = [decode_tiles(view, f) if f else None for f in rows]
            # the stats after the rows: asked only for a ready view with an entity missing
            ready = serves(marker, any(f is None for f in found), self.stats)
            out.append(ViewRows(ready, found))
        return out

    def markers(self, states: Sequence[ViewState]) -> list[Marker | None]:
        if not states:
            return []
        with translated(self._where, "MGET"):
            raw: list[bytes | None] = self._client.mget([marker_key(s) for s in states])  # type: ignore[assignment]
        return [None if value is None else Marker.decode(value.decode()) for value in raw]

    def set_marker(self, state: ViewState, marker: Marker) -> None:
        with translated(self._where, "SET"):
            self._client.set(marker_key(state), marker.encode().encode())

    def progress(self, state: ViewState) -> dict[ProgressKey, int]:
        with translated(self._where, "HGETALL"):
            raw: dict[bytes, bytes] = self._client.hgetall(progress_key(state))  # type: ignore[assignment]
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
            pipe = self._client.pipeline(transaction=False)
            for command in STATS_COMMANDS:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            return stats_of(pipe.execute())

    def close(self) -> None:
        self._client.close()
