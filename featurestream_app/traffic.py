"""``featurestream produce``: synthetic traffic or a replay, to Kafka or to a file."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from featurestream.errors import InvalidEvent
from producers import Emission, EventProducer, TrafficGenerator

__all__ = ["EmissionSink", "FileSink", "KafkaSink", "produce_generated"]

_MAX_BATCH = 5_000


class EmissionSink(Protocol):
    """Where emissions go: Kafka, or a file for ``--dry-run``."""

    def emit(self, emission: Emission) -> None:
        """Send one emission."""

    def close(self) -> None:
        """Deliver everything outstanding."""


class KafkaSink:
    """Emissions to Kafka through :class:`EventProducer` (records validated and encoded)."""

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer
        self.rejected: Counter[str] = Counter()

    def emit(self, emission: Emission) -> None:
        if emission.record is not None:
            try:
                self.producer.send_record(emission.topic, emission.record)
            except InvalidEvent as exc:  # one bad event: counted, the rest go on
                self.rejected[exc.kind] += 1
        else:
            self.producer.produce_raw(emission.topic, emission.key, emission.value)

    def close(self) -> None:
        self.producer.flush()


class FileSink:
    """Emissions as JSON Lines (``--dry-run``); ``--from`` reads the same format back."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("w", encoding="utf-8")

    def emit(self, emission: Emission) -> None:
        line: dict[str, Any] = {
            "topic": emission.topic,
            "key": emission.key.decode(),
            "kind": emission.kind,
        }
        if emission.record is not None:
            line["record"] = emission.record
        else:
            line["value_b64"] = base64.b64encode(emission.value or b"").decode()
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._file.close()


def produce_generated(
    generator: TrafficGenerator,
    sink: EmissionSink,
    *,
    rate: float,
    total: int,
    pace: bool,
    start_ms: int,
    progress: Callable[[int, float], None] | None = None,
    on_emission: Callable[[Emission], None] | None = None,
) -> Counter[str]:
    """Produce ``total`` emissions; return their count per kind.

    With ``pace``, emissions leave at ``rate`` per second and their base event time
    is the wall clock. Without, they leave as fast as possible with base event times
    spaced at ``rate`` from ``start_ms``.
    """
    kinds: Counter[str] = Counter()
    step_ms = 1000.0 / rate
    started = time.monotonic()
    last_report = started
    sent = 0
    while sent < total:
        if pace:
            due = min(total, int((time.monotonic() - started) * rate) + 1) - sent
            if due <= 0:
                time.sleep(max(0.0, started + sent / rate - time.monotonic()))
                continue
            n = min(due, _MAX_BATCH)
            base = np.full(n, time.time_ns() // 1_000_000, dtype=np.int64)
        else:
            n = min(total - sent, _MAX_BATCH)
            base = start_ms + ((sent + np.arange(n)) * step_ms).astype(np.int64)
        for emission in generator.batch(base):
            sink.emit(emission)
            kinds[emission.kind] += 1
            if on_emission is not None:
                on_emission(emission)
        sent += n
        now = time.monotonic()
        if progress is not None and (now - last_report >= 0.5 or sent == total):
            last_report = now
            progress(sent, sent / max(now - started, 1e-9))
    sink.close()
    return kinds


def tty_progress(total: int) -> Callable[[int, float], None] | None:
    """A one-line progress display on a terminal, or None when stderr is not one."""
    if not sys.stderr.isatty():
        return None

    def show(sent: int, rate: float) -> None:
        sys.stderr.write(f"\r  produced {sent:>10,}/{total:,}  {rate:>10,.0f} events/s  ")
        if sent >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show
