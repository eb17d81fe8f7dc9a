"""Synthetic, deterministic traffic for the demo, tests and benchmarks (pure, no I/O).

Users act in sessions (bursts of events from one Zipf-drawn user among a pool of
concurrent sessions) on Zipf-distributed items. Event times are jittered (out of
order within ``jitter_ms``); a fraction of events is late (older than the
allowed lateness), a fraction are duplicates (an earlier event sent again, same
``event_id``) and a fraction are malformed records of several kinds. The same
seed and base times give the same emissions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurestream.events import AvroCodec, encode_single_object

from .events import Click

__all__ = ["BAD_KINDS", "ClickTraffic", "Emission", "TrafficConfig", "TrafficGenerator", "zipf_cdf"]

_PAGES = ("home", "search", "item", "cart", "category")
_CURRENCIES = ("EUR", "USD", "GBP")
_HISTORY = 4096

# Malformed record kinds, named as the decoder reports them.
BAD_KINDS = ("not_avro", "truncated", "unknown_schema", "schema_mismatch", "out_of_range", "empty")


def zipf_cdf(n: int, exponent: float) -> np.ndarray:
    """Cumulative distribution of ranks 1..n under Zipf's law with ``exponent``."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights)
    out: np.ndarray = cdf / cdf[-1]
    return out


@dataclass(frozen=True)
class TrafficConfig:
    """What traffic to make.

    Attributes:
        topic: ``clicks``, ``impressions`` or ``purchases``.
        users: Distinct users, ids ``first_user .. first_user + users - 1`` (Zipf by rank).
        items: Distinct items, ids ``1 .. items`` (Zipf by rank).
        seed: The same seed gives the same traffic.
        first_user: Id of the most active user.
        exponent: Zipf exponent of users and items.
        session_length: Mean number of events in a user session.
        concurrent_sessions: Sessions interleaved at any time.
        jitter_ms: Event times lag the base time by up to this (out of order within it).
        late_fraction: Fraction of events older than the allowed lateness.
        lateness_ms: The allowed lateness late events exceed.
        duplicate_fraction: Fraction of emissions that resend an earlier event.
        bad_fraction: Fraction of emissions that are malformed records.
    """

    topic: str = "clicks"
    users: int = 100_000
    items: int = 10_000
    seed: int = 0
    first_user: int = 1
    exponent: float = 1.1
    session_length: float = 8.0
    concurrent_sessions: int = 256
    jitter_ms: int = 2_000
    late_fraction: float = 0.0
    lateness_ms: int = 30_000
    duplicate_fraction: float = 0.0
    bad_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.topic not in ("clicks", "impressions", "purchases"):
            raise ValueError(f"unknown topic {self.topic!r}; known: clicks, impressions, purchases")
        for name in ("late_fraction", "duplicate_fraction", "bad_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.late_fraction + self.duplicate_fraction + self.bad_fraction > 1.0:
            raise ValueError("late + duplicate + bad fractions exceed 1")
        if self.users < 1 or self.items < 1:
            raise ValueError("users and items must be >= 1")


@dataclass(frozen=True, slots=True)
class Emission:
    """One message to produce.

    ``record`` is set for events (kinds ``event``, ``late``, ``duplicate``): the
    producer validates and encodes it. ``value`` is set for malformed records
    (kind one of :data:`BAD_KINDS`): bytes sent as they are.
    """

    topic: str
    key: bytes
    kind: str
    record: dict[str, Any] | None = None
    value: bytes | None = None


class TrafficGenerator:
    """Makes :class:`Emission` batches from a :class:`TrafficConfig`.

    Args:
        config: The traffic.
        codec: Encodes the raw bytes of malformed records.
    """

    def __init__(self, config: TrafficConfig, codec: AvroCodec) -> None:
        self.config = config
        self._codec = codec
        self._rng = np.random.default_rng(config.seed)
        self._user_cdf = zipf_cdf(config.users, config.exponent)
        self._item_cdf = zipf_cdf(config.items, config.exponent)
        self._sessions = self._draw_users(max(1, min(config.concurrent_sessions, config.users)))
        self._history: list[Emission] = []
        self._history_next = 0

    def _draw_users(self, n: int) -> np.ndarray:
        drawn: np.ndarray = (
            np.searchsorted(self._user_cdf, self._rng.random(n)) + self.config.first_user
        )
        return drawn

    def _event_ids(self, n: int) -> list[str]:
        raw = self._rng.bytes(16 * n).hex()
        ids = []
        for i in range(0, 32 * n, 32):
            h = raw[i : i + 32]
            variant = "89ab"[int(h[16], 16) & 3]
            ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}")
        return ids

    def batch(self, base_times_ms: Sequence[int] | np.ndarray) -> list[Emission]:
        """One emission per base time (the moment the event happens, before jitter)."""
        cfg = self.config
        n = len(base_times_ms)
        if n == 0:
            return []
        rng = self._rng
        kinds = rng.random(n)
        slots = rng.integers(0, len(self._sessions), n)
        ends = rng.random(n) < 1.0 / cfg.session_length
        fresh = self._draw_users(n)
        items = np.searchsorted(self._item_cdf, rng.random(n)) + 1
        pages = rng.integers(0, len(_PAGES), n)
        jitter = rng.integers(0, cfg.jitter_ms + 1, n)
        late_extra = rng.integers(1, max(2, cfg.lateness_ms), n)
        amounts = np.round(rng.lognormal(3.0, 1.0, n), 2)
        currencies = rng.integers(0, len(_CURRENCIES), n)
        bad_kinds = rng.integers(0, len(BAD_KINDS), n)
        picks = rng.integers(0, _HISTORY, n)
        ids = self._event_ids(n)
        bad_cut = cfg.bad_fraction
        dup_cut = bad_cut + cfg.duplicate_fraction
        late_cut = dup_cut + cfg.late_fraction
        sessions = self._sessions
        out: list[Emission] = []
        for i in range(n):
            slot = slots[i]
            user = int(sessions[slot])
            if ends[i]:
                sessions[slot] = fresh[i]
            u = kinds[i]
            if u < dup_cut and u >= bad_cut and self._history:
                out.append(self._duplicate(int(picks[i])))
                continue
            kind = "event"
            event_time = int(base_times_ms[i]) - int(jitter[i])
            if u >= dup_cut and u < late_cut:
                kind = "late"
                event_time = (
                    int(base_times_ms[i]) - 2 * cfg.lateness_ms - cfg.jitter_ms - int(late_extra[i])
                )
            record: dict[str, Any] = {"event_id": ids[i], "user_id": user, "item_id": int(items[i])}
            if cfg.topic == "purchases":
                record["amount"] = float(amounts[i])
                record["currency"] = _CURRENCIES[currencies[i]]
            else:
                record["page"] = _PAGES[pages[i]]
            record["event_time"] = max(0, event_time)
            key = str(user).encode()
            if u < bad_cut:
                out.append(self._malformed(BAD_KINDS[bad_kinds[i]], key, record))
                continue
            emission = Emission(cfg.topic, key, kind, record=record)
            self._remember(emission)
            out.append(emission)
        return out

    def _remember(self, emission: Emission) -> None:
        if len(self._history) < _HISTORY:
            self._history.append(emission)
        else:
            self._history[self._history_next] = emission
            self._history_next = (self._history_next + 1) % _HISTORY

    def _duplicate(self, pick: int) -> Emission:
        original = self._history[pick % len(self._history)]
        return Emission(original.topic, original.key, "duplicate", record=original.record)

    def _malformed(self, kind: str, key: bytes, record: dict[str, Any]) -> Emission:
        topic = self.config.topic
        good = self._codec.encode(topic, record)
        if kind == "not_avro":
            value = b"{" + record["event_id"].encode() + b"}"
        elif kind == "truncated":
            value = good[:-3]  # inside the last field (event_time is a multi-byte varint)
        elif kind == "unknown_schema":
            value = good[:2] + bytes(8) + good[10:]
        elif kind == "schema_mismatch":
            value = good + b"\x02x"  # a record written with a schema that has one more field
        elif kind == "out_of_range":
            # below the contract's minimum: bypasses the range check on purpose
            value = encode_single_object(
                self._codec.reader(topic), {**record, "event_time": -86_400_000}
            )
        else:
            value = b""
        return Emission(topic, key, kind, value=value)


@dataclass(frozen=True)
class ClickTraffic:
    """Plain clicks at evenly spaced event times (the simple case for tests and the demo).

    Attributes:
        users: Number of distinct users (ids ``first_user .. first_user + users - 1``).
        items: Number of distinct items.
        seed: Random seed: the same seed gives the same events.
        first_user: Id of the most active user.
        exponent: Zipf exponent of users and items.
    """

    users: int
    items: int = 10_000
    seed: int = 0
    first_user: int = 1
    exponent: float = 1.1

    def clicks(self, start_ms: int, rate_per_s: float, count: int) -> list[Click]:
        """``count`` clicks with event times spaced at ``rate_per_s`` from ``start_ms``."""
        config = TrafficConfig(
            topic="clicks",
            users=self.users,
            items=self.items,
            seed=self.seed,
            first_user=self.first_user,
            exponent=self.exponent,
            jitter_ms=0,
        )
        generator = TrafficGenerator(config, AvroCodec(()))
        step_ms = 1000.0 / rate_per_s
        times = [start_ms + int(i * step_ms) for i in range(count)]
        return [Click(**e.record) for e in generator.batch(times) if e.record is not None]
