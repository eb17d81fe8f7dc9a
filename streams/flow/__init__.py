"""The Bytewax dataflow and its Bytewax wrappers of the Kafka, online-store and
offline-log adapters."""

from .dataflow import Routed, SinkItem, build_flow
from .metrics import FlowMetrics

__all__ = ["FlowMetrics", "Routed", "SinkItem", "build_flow"]
