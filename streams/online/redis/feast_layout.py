"""Batch views in Feast's own Redis layout (written by ``feast materialize``), and the
commands of the port's reads: key = Feast's serialized entity key + project, field
``mmh3("{view}:{feature}")`` per feature and ``_ts:{view}`` for the row's timestamp.

:func:`commands_for` and :func:`decode_replies` turn the port's reads into Redis
commands and their replies into the port's answers; every Redis reader uses them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.value_type import ValueType

from ...core import StoredTiles
from ..base import (
    FeastRow,
    FeastRowRead,
    FeastRows,
    Marker,
    Read,
    TilesRead,
    ViewReady,
    ViewState,
)
from .layout import decode_tiles, marker_key, tile_key

__all__ = ["Command", "commands_for", "decode_replies", "feast_fields", "feast_key"]

Command = tuple[Any, ...]


def _entity_value(value_type: Any, value: Any) -> ValueProto:
    if value_type == ValueType.INT64:
        return ValueProto(int64_val=value)
    if value_type == ValueType.INT32:
        return ValueProto(int32_val=value)
    if value_type == ValueType.STRING:
        return ValueProto(string_val=value)
    if value_type == ValueType.UNIX_TIMESTAMP:
        return ValueProto(unix_timestamp_val=value)
    raise ValueError(f"join keys of type {value_type.name} are not supported")


@functools.lru_cache(maxsize=65_536)
def feast_key(
    project: str,
    version: int,
    join_keys: tuple[str, ...],
    types: tuple[Any, ...],
    values: tuple[Any, ...],
) -> bytes:
    """Feast's Redis key of one entity's row (its serialized entity key + project).

    Raises:
        ValueError: for a join key type Feast cannot key rows by.
    """
    entity_key = EntityKeyProto(
        join_keys=list(join_keys),
        entity_values=[_entity_value(t, v) for t, v in zip(types, values, strict=True)],
    )
    key: bytes = _redis_key(project, entity_key, entity_key_serialization_version=version)
    return key


@functools.lru_cache(maxsize=4096)
def feast_fields(view: str, features: tuple[str, ...]) -> tuple[bytes | str, ...]:
    """Feast's hash fields of ``features`` of ``view``, then the row timestamp's."""
    return (*(_mmh3(f"{view}:{name}") for name in features), f"_ts:{view}")


@functools.lru_cache(maxsize=1024)
def _marker(reply: bytes) -> Marker:
    return Marker.decode(reply.decode())


@functools.lru_cache(maxsize=1024)
def _marker_key(project: str, view: str, state_id: str) -> str:
    return marker_key(ViewState(project, view, state_id))


def _command(read: TilesRead | FeastRowRead) -> Command:
    if isinstance(read, TilesRead):
        view = read.view
        return ("HGETALL", tile_key(view.project, view.name, read.entity))
    rows: FeastRows = read.rows
    try:
        key = feast_key(
            rows.project, rows.key_version, rows.join_keys, rows.key_types, read.key_values
        )
    except ValueError as exc:
        raise ValueError(f"view {rows.view!r}: {exc}") from None
    return ("HMGET", key, *feast_fields(rows.view, rows.features))


def commands_for(reads: Sequence[Read]) -> list[Command]:
    """The Redis commands answering ``reads``: one per entity read (HGETALL of tiles,
    HMGET of Feast rows), in order, then one MGET of the markers of every
    :class:`ViewReady` (one Redis holds them all; a cluster's adapter splits it by slot).

    Raises:
        ValueError: for a Feast row keyed by a type Feast cannot key rows by.
    """
    commands: list[Command] = []
    markers: list[str] = []
    for read in reads:
        if isinstance(read, ViewReady):
            view = read.view
            markers.append(_marker_key(view.project, view.name, view.state_id))
        else:
            commands.append(_command(read))
    if markers:
        commands.append(("MGET", *markers))
    return commands


def decode_replies(
    reads: Sequence[Read], replies: Sequence[Any]
) -> list[StoredTiles | FeastRow | Marker | None]:
    """The answers to the replies to :func:`commands_for` (HGETALL replies as dicts), one
    per read: a view's marker (or None) for a :class:`ViewReady`, which
    :func:`~streams.online.base.ready_answers` turns into the port's bool."""
    out: list[StoredTiles | FeastRow | Marker | None] = []
    entity_replies = iter(replies)
    has_markers = any(isinstance(read, ViewReady) for read in reads)
    markers: Iterator[Any] = iter(replies[-1] if has_markers else ())
    for read in reads:
        if isinstance(read, ViewReady):
            reply = next(markers)
            out.append(None if reply is None else _marker(reply))
        elif isinstance(read, FeastRowRead):
            reply = next(entity_replies)
            out.append(FeastRow(tuple(reply[:-1]), reply[-1]))
        else:
            reply = next(entity_replies)
            out.append(decode_tiles(read.view, reply) if reply else None)
    return out
