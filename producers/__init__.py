"""Producers: publish typed, Avro-encoded events to Kafka (library + synthetic traffic)."""

from .events import Click, Event, Impression, Purchase
from .producer import DeliveryStats, EventProducer
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
    "TrafficConfig",
    "TrafficGenerator",
    "zipf_cdf",
]
