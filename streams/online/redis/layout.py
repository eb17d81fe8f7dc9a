"""How featurestream's data lies in Redis: keys, fields and their encodings (pure).

Tiles (one hash per view and entity, read in one round trip):

* key ``fst:{project}:{view}:{entity}``, entity = :func:`~streams.core.entity_id`
* field ``{slot}:{tile_index}`` -> the aggregator's encoded partial
* field ``_last_ms`` -> newest event time applied for the entity
* the key expires a retention after its last write

Engine records, per view definition (``{view}:{state_id}``):
``fst:{project}:_progress:{view}:{state_id}`` (hash ``{topic}:{partition}`` -> next
offset) and ``fst:{project}:_online:{view}:{state_id}`` (the view's marker: ``ready``
or ``building``, then Redis's eviction count when it was set, see
:class:`~streams.online.base.Marker`); per project ``fst:{project}:_written`` (hash ``{view}`` ->
wall-clock ms of the last write).

Batch views are in Feast's own Redis layout (:mod:`.feast_layout`). Nothing here
imports Feast: the engine's processes start without it.
"""

from __future__ import annotations

from collections.abc import Mapping

from ...core import Partial, StoredTiles, ViewSpec
from ..base import ViewState

__all__ = [
    "LAST_EVENT_FIELD",
    "decode_tiles",
    "entity_of_key",
    "freshness_key",
    "marker_key",
    "progress_key",
    "tile_field",
    "tile_key",
    "tile_key_prefix",
]

LAST_EVENT_FIELD = "_last_ms"
_LAST = LAST_EVENT_FIELD.encode()


def tile_key(project: str, view: str, entity: str) -> str:
    """Key of one entity's tiles in one view."""
    return f"fst:{project}:{view}:{entity}"


def tile_key_prefix(project: str, view: str) -> str:
    """What every tile key of ``view`` starts with."""
    return f"fst:{project}:{view}:"


def entity_of_key(project: str, view: str, key: bytes | str) -> str:
    """The entity of a tile key of ``view``."""
    text = key.decode() if isinstance(key, bytes) else key
    return text[len(tile_key_prefix(project, view)) :]


def tile_field(slot: str, tile_index: int) -> str:
    """Hash field of one tile."""
    return f"{slot}:{tile_index}"


def freshness_key(project: str) -> str:
    """Hash of ``{view}`` -> wall-clock ms of the last online write for the view."""
    return f"fst:{project}:_written"


def marker_key(state: ViewState) -> str:
    """Key of a view definition's marker."""
    return f"fst:{state.project}:_online:{state.view}:{state.state_id}"


def progress_key(state: ViewState) -> str:
    """Hash of ``{topic}:{partition}`` -> next offset to process, of a view definition."""
    return f"fst:{state.project}:_progress:{state.view}:{state.state_id}"


def decode_tiles(view: ViewSpec, raw: Mapping[bytes, bytes]) -> StoredTiles:
    """One entity's hash (as HGETALL returns it) as the port's :class:`StoredTiles`.

    Fields of slots the view no longer has (an old definition) are ignored.
    """
    slots = view.slots
    tiles: dict[str, dict[int, Partial]] = {slot: {} for slot in slots}
    for field, value in raw.items():
        name = field.decode() if isinstance(field, bytes) else field
        slot, sep, index = name.partition(":")
        spec = slots.get(slot)
        if not sep or spec is None:
            continue
        tiles[slot][int(index)] = spec.aggregator.decode(value)
    last = raw.get(_LAST)
    return StoredTiles(tiles, int(last) if last else None)
