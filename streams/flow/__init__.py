"""The Bytewax dataflow and its Kafka/Redis/Parquet adapters."""

from .dataflow import Envelope, LogRow, Rejected, Routed, SinkItem, build_flow
from .metrics import FlowMetrics

__all__ = ["Envelope", "FlowMetrics", "LogRow", "Rejected", "Routed", "SinkItem", "build_flow"]
