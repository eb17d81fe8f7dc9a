"""The engine's Kafka code, all of it: reading a partition, producing rejected
messages, the backfill's replay, the admin calls and the schema registry lookup.

What the messages mean (decoding, lateness, duplicates) is decided by the pure
core (:mod:`streams.core.classify`); this package only moves bytes.
"""

from .admin import check_broker, create_topics, holds, partitions_of, watermarks
from .producer import RejectedProducer, rejected_headers
from .reader import PartitionReader, produced_ms
from .replay import replay

__all__ = [
    "PartitionReader",
    "RejectedProducer",
    "check_broker",
    "create_topics",
    "holds",
    "partitions_of",
    "produced_ms",
    "rejected_headers",
    "replay",
    "watermarks",
]
