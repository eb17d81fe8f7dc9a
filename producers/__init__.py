"""Producers: publish typed, Avro-encoded events to Kafka (library + synthetic traffic)."""

from .events import Click, Event, Impression, Purchase
from .producer import DeliveryStats, EventProducer
from .synthetic import ClickTraffic, zipf_cdf

__all__ = [
    "Click",
    "ClickTraffic",
    "DeliveryStats",
    "Event",
    "EventProducer",
    "Impression",
    "Purchase",
    "zipf_cdf",
]
