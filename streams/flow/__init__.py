"""The Bytewax dataflow and its Kafka/Redis adapters."""

from .dataflow import DeadLetter, Envelope, Routed, SinkItem, build_flow

__all__ = ["DeadLetter", "Envelope", "Routed", "SinkItem", "build_flow"]
