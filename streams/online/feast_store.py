"""Feast online store plugin: exact read-time windows through Feast's own API.

Configure it in ``feature_store.yaml``::

    online_store:
      type: streams.online.feast_store.TiledRedisOnlineStore
      connection_string: ${FEATURESTREAM_REDIS_URL}

``FeatureStore.get_online_features`` and ``feast serve`` then return, for every
aggregating ``StreamFeatureView``, the window values merged from tiles at the
time of the read. Every other view (batch, plain stream) is delegated unchanged
to Feast's Redis online store.

Values of an entity with no events in the window: ``count`` and
``count_distinct`` are 0 (status PRESENT); ``mean``, ``min``, ``max`` and ``last``
are missing (status NOT_FOUND). The row's event timestamp is the newest event
applied for the entity, or unset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from feast import utils as feast_utils
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.stream_feature_view import StreamFeatureView
from feast.type_map import feast_value_type_to_python_type
from pydantic import StrictStr, field_validator

from featurestream.clock import Clock, wall_clock_ms
from featurestream.settings import DEFAULT_REDIS_PORT

from ..core import ViewSpec, entity_id
from ..definitions import compile_view
from .base import OnlineStore
from .redis import RedisOnlineStore as TileRedisStore
from .redis import connect, parse

__all__ = ["TiledRedisOnlineStore", "TiledRedisOnlineStoreConfig"]

_TYPE = "streams.online.feast_store.TiledRedisOnlineStore"
_DEFAULT_URL = f"redis://127.0.0.1:{DEFAULT_REDIS_PORT}/0"


class TiledRedisOnlineStoreConfig(RedisOnlineStoreConfig):
    """Feast's Redis config; ``connection_string`` also takes ``redis://`` URLs.

    An unexpanded ``${FEATURESTREAM_REDIS_URL}`` (the variable is unset) means the
    embedded local stack's Redis.
    """

    type: Literal["streams.online.feast_store.TiledRedisOnlineStore"] = _TYPE  # type: ignore[assignment]
    connection_string: StrictStr = _DEFAULT_URL

    @field_validator("connection_string", mode="before")
    @classmethod
    def _default_when_unset(cls, value: Any) -> Any:
        if not value or (isinstance(value, str) and value.startswith("${")):
            return _DEFAULT_URL
        return value


class TiledRedisOnlineStore(RedisOnlineStore):
    """Redis online store that merges stream-view tiles at read time."""

    clock: Clock = staticmethod(wall_clock_ms)

    def __init__(self) -> None:
        super().__init__()
        self._tiles: OnlineStore | None = None
        self._specs: dict[tuple[Any, ...], ViewSpec] = {}

    # ------------------------------------------------------------ plumbing
    def _get_client(self, online_store_config: Any) -> Any:
        if not self._client:
            self._client = connect(online_store_config.connection_string)
        return self._client

    async def _get_client_async(self, online_store_config: Any) -> Any:
        if not self._client_async:
            address = parse(online_store_config.connection_string)
            cfg = online_store_config.model_copy(
                update={"connection_string": address.feast_connection_string}
            )
            return await super()._get_client_async(cfg)
        return self._client_async

    def _tile_store(self, config: Any) -> OnlineStore:
        if self._tiles is None:
            url = config.online_store.connection_string
            self._tiles = TileRedisStore(url, client=self._get_client(config.online_store))
        return self._tiles

    @staticmethod
    def _is_tiled(table: Any) -> bool:
        return isinstance(table, StreamFeatureView) and bool(table.aggregations)

    def _spec(self, config: Any, table: Any) -> ViewSpec:
        source = table.stream_source or table.source
        options = getattr(source, "kafka_options", None)
        cache_key = (
            config.project,
            table.name,
            getattr(options, "topic", None),
            tuple((a.name, a.function, a.column, a.time_window) for a in table.aggregations),
            table.tiling_hop_size,
            tuple(f.name for f in table.entity_columns),
        )
        spec = self._specs.get(cache_key)
        if spec is None:
            spec = compile_view(config.project, table, [f.name for f in table.entity_columns])
            self._specs[cache_key] = spec
        return spec

    # ------------------------------------------------------------ reads
    def _read_tiled(
        self, config: Any, table: Any, entity_keys: list[Any], requested: list[str] | None
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        spec = self._spec(config, table)
        entities = [_entity_of(spec, key) for key in entity_keys]
        (rows,) = self._tile_store(config).read([(spec, entities)], self.clock(), only_ready=True)
        return _to_rows(spec, rows, requested)

    def online_read(
        self,
        config: Any,
        table: Any,
        entity_keys: list[Any],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        if self._is_tiled(table):
            return self._read_tiled(config, table, entity_keys, requested_features)
        return super().online_read(config, table, entity_keys, requested_features)

    async def online_read_async(
        self,
        config: Any,
        table: Any,
        entity_keys: list[Any],
        requested_features: list[str] | None = None,
    ) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
        if self._is_tiled(table):
            return self._read_tiled(config, table, entity_keys, requested_features)
        return await super().online_read_async(config, table, entity_keys, requested_features)

    # Feast calls these with (config, grouped_refs, join_key_values,
    # entity_name_to_join_key_map, online_features_response, full_feature_names,
    # include_feature_view_version_metadata), positionally: ``rest`` is the last five.
    def _read_features_per_fv(self, config: Any, grouped_refs: Any, *rest: Any) -> None:
        plain = [(t, f) for t, f in grouped_refs if not self._is_tiled(t)]
        if plain:
            super()._read_features_per_fv(config, plain, *rest)
        self._populate_tiled(config, grouped_refs, *rest)

    async def _read_features_per_fv_async(self, config: Any, grouped_refs: Any, *rest: Any) -> None:
        plain = [(t, f) for t, f in grouped_refs if not self._is_tiled(t)]
        if plain:
            await super()._read_features_per_fv_async(config, plain, *rest)
        self._populate_tiled(config, grouped_refs, *rest)

    def _populate_tiled(
        self,
        config: Any,
        grouped_refs: Any,
        join_key_values: Any,
        entity_name_to_join_key_map: Any,
        response: Any,
        full_feature_names: bool,
        include_version: bool,
    ) -> None:
        # Every stream view of the request in one pipelined round trip.
        work = []
        for table, requested in grouped_refs:
            if not self._is_tiled(table):
                continue
            values, idxs, output_len = feast_utils._get_unique_entities(
                table, join_key_values, entity_name_to_join_key_map
            )
            spec = self._spec(config, table)
            keys = feast_utils._get_entity_key_protos(values)
            work.append(
                (table, requested, spec, [_entity_of(spec, k) for k in keys], idxs, output_len)
            )
        if not work:
            return
        results = self._tile_store(config).read(
            [(w[2], w[3]) for w in work], self.clock(), only_ready=True
        )
        for (table, requested, spec, _, idxs, output_len), rows in zip(work, results, strict=True):
            feast_utils._populate_response_from_feature_data(
                requested,
                _to_rows(spec, rows, requested),
                idxs,
                response,
                full_feature_names,
                table,
                output_len,
                include_version,
            )


def _entity_of(spec: ViewSpec, entity_key: Any) -> str:
    by_name = {
        name: feast_value_type_to_python_type(value)
        for name, value in zip(entity_key.join_keys, entity_key.entity_values, strict=True)
    }
    return entity_id([by_name[k] for k in spec.join_keys])


def _to_rows(
    spec: ViewSpec, rows: list[tuple[dict[str, Any], int | None]], requested: list[str] | None
) -> list[tuple[datetime | None, dict[str, ValueProto] | None]]:
    wanted = set(requested) if requested else None
    types = {a.name: a.aggregator.value_type for a in spec.aggregations}
    out: list[tuple[datetime | None, dict[str, ValueProto] | None]] = []
    for values, last_ms in rows:
        protos = {
            name: _to_proto(types[name], value)
            for name, value in values.items()
            if value is not None and (wanted is None or name in wanted)
        }
        ts = None if last_ms is None else datetime.fromtimestamp(last_ms / 1000, tz=UTC)
        out.append((ts, protos))
    return out


def _to_proto(value_type: str, value: Any) -> ValueProto:
    if value_type == "int64":
        return ValueProto(int64_val=int(value))
    return ValueProto(double_val=float(value))
