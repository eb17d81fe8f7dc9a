"""Producers: publish typed, Avro-encoded events to Kafka (library, synthetic traffic, replays)."""

from .events import Click, Event, Impression, Purchase, check_record
from .producer import DeliveryStats, EventProducer
from .replay import ReplayRow, read_replay
from .synthetic import BAD_KINDS, ClickTraffic, Emission, TrafficConfig, TrafficGenerator, zipf_cdf

__all__ = [
    "BAD_KINDS",
    "Click",
    "ClickTraffic",
    "DeliveryStats",
    "Emission",
    "Event",
    "EventProducer",
    "Impression",
    "Purchase",
    "ReplayRow",
    "TrafficConfig",
    "TrafficGenerator",
    "check_record",
    "read_replay",
    "zipf_cdf",
]
