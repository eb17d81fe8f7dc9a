"""Live synthetic traffic: events paced at a rate, stamped with the current time."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable

from producers import Click, ClickTraffic, EventProducer

__all__ = ["produce_live"]


def produce_live(
    producer: EventProducer,
    traffic: ClickTraffic,
    rate: float,
    total: int,
    show_progress: bool,
    on_event: Callable[[Click], None] | None = None,
) -> None:
    """Produce ``total`` clicks from ``traffic`` at ``rate`` per second, event time = now."""
    started = time.monotonic()
    clicks = traffic.clicks(0, rate, total)
    last_report = started
    sent = 0
    for sent, click in enumerate(clicks, start=1):
        due = started + (sent - 1) / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        event = dataclasses.replace(click, event_time=time.time_ns() // 1_000_000)
        producer.send(event)
        if on_event is not None:
            on_event(event)
        now = time.monotonic()
        if show_progress and now - last_report >= 0.5:
            last_report = now
            sys.stderr.write(
                f"\r  produced {sent:>8}/{total} events ({sent / (now - started):,.0f}/s)  "
            )
            sys.stderr.flush()
    producer.flush()
    if show_progress:
        sys.stderr.write("\n")
