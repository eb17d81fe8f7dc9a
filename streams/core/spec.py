"""Feature specs: what the engine runs, compiled from Feast objects (never restated).

Specs are frozen and hold only plain values, so the pure core can use them
without importing Feast. ``streams.definitions`` builds them from the registry.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from .aggregators import Aggregator, aggregator_for

__all__ = ["AggregationSpec", "ViewSpec", "default_tile_ms"]

_MS = 1000


def default_tile_ms(window_ms: int) -> int:
    """Tile size when the view sets no ``tiling_hop_size``: W/60 in whole seconds, >= 1 s."""
    return max(1, round(window_ms / 60 / _MS)) * _MS


@dataclass(frozen=True)
class AggregationSpec:
    """One windowed aggregation of one view.

    Attributes:
        name: Feature name (the ``Aggregation.name``).
        function: ``count``, ``sum``, ``mean``, ``min``, ``max``, ``count_distinct`` or ``last``.
        column: Event field aggregated.
        window_ms: Window length W.
        tile_ms: Tile size g; W is a whole number of tiles.
    """

    name: str
    function: str
    column: str
    window_ms: int
    tile_ms: int

    @functools.cached_property
    def aggregator(self) -> Aggregator:
        """The aggregator implementing ``function``."""
        return aggregator_for(self.function)

    @property
    def window_tiles(self) -> int:
        """W / g."""
        return self.window_ms // self.tile_ms

    @functools.cached_property
    def slot(self) -> str:
        """Identity of the tile contents: function, column and tile size.

        Two aggregations with the same slot share tiles (e.g. a count over 5 and
        over 10 minutes with the same tile size). A changed function, column or
        tile size gets a new slot, so old tiles are never reused for it.
        """
        digest = hashlib.sha1(
            f"{self.function}|{self.column}|{self.tile_ms}".encode(), usedforsecurity=False
        ).hexdigest()
        return digest[:6]


@dataclass(frozen=True)
class ViewSpec:
    """A stream feature view as the engine runs it.

    Attributes:
        project: Feast project.
        name: Feature view name.
        topic: Kafka topic of the source events.
        join_keys: Entity join keys, in order; each is an event field.
        timestamp_field: Event field with the event time in milliseconds.
        allowed_lateness_ms: The source's ``watermark_delay_threshold``.
        aggregations: The view's aggregations, in schema order.
        field_types: Avro type of every join key and aggregated column
            (``long``, ``double``, ``string``, ...), from the event contract.
    """

    project: str
    name: str
    topic: str
    join_keys: tuple[str, ...]
    timestamp_field: str
    allowed_lateness_ms: int
    aggregations: tuple[AggregationSpec, ...]
    field_types: tuple[tuple[str, str], ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        """Aggregated event fields, each once, in order."""
        return tuple(dict.fromkeys(a.column for a in self.aggregations))

    @functools.cached_property
    def slots(self) -> dict[str, AggregationSpec]:
        """One representative aggregation per distinct tile slot (do not mutate)."""
        out: dict[str, AggregationSpec] = {}
        for agg in self.aggregations:
            out.setdefault(agg.slot, agg)
        return out

    @functools.cached_property
    def slot_items(self) -> tuple[tuple[str, AggregationSpec], ...]:
        """``(slot, aggregation)`` pairs in a fixed order: the layout of the state."""
        return tuple(self.slots.items())

    @functools.cached_property
    def slot_names(self) -> tuple[str, ...]:
        """The slots in state-layout order (one shared tuple per view)."""
        return tuple(self.slots)

    @functools.cached_property
    def retention_ms(self) -> int:
        """How long a tile can still be read or revised: longest window + one tile + lateness."""
        return max(a.window_ms + a.tile_ms for a in self.aggregations) + self.allowed_lateness_ms

    @functools.cached_property
    def state_id(self) -> str:
        """Short hash of everything that defines this view's state.

        Used in dataflow step ids and state keys: a changed definition gets fresh
        state instead of silently resuming the old one.
        """
        parts = [
            self.project,
            self.name,
            self.topic,
            ",".join(self.join_keys),
            self.timestamp_field,
            str(self.allowed_lateness_ms),
        ]
        # The window is part of the state: it decides how long tiles are kept.
        parts += [f"{a.slot}:{a.column}:{a.window_ms}" for a in self.aggregations]
        return hashlib.sha1("|".join(parts).encode(), usedforsecurity=False).hexdigest()[:8]
