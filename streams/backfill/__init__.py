"""Backfill: the stream views' history computed from historical events.

* ``streams.backfill.history``: the pure accumulation (range, duplicates, tiles).
* ``streams.backfill.sources``: historical events from Parquet, JSON Lines or Kafka.
* ``streams.backfill.run``: writes the offline log and, when asked, the online tiles.
"""

from .history import BackfillStats, History, TimeRange
from .run import BackfillReport, run_backfill
from .sources import EventSource, FileEvents, KafkaEvents

__all__ = [
    "BackfillReport",
    "BackfillStats",
    "EventSource",
    "FileEvents",
    "History",
    "KafkaEvents",
    "TimeRange",
    "run_backfill",
]
