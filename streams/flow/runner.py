"""Wire the dataflow to Kafka and Redis and run it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from bytewax.connectors.kafka import KafkaSource
from bytewax.dataflow import Dataflow
from confluent_kafka import OFFSET_BEGINNING

from featurestream.events import AvroCodec, load_contracts

from ..core import ViewSpec
from ..online.tile_store import TileStore, connect
from .dataflow import build_flow
from .sinks import DeadLetterSink, OnlineTileSink

__all__ = ["RunConfig", "kafka_flow", "run_flow"]


@dataclass(frozen=True)
class RunConfig:
    """What a run of the engine needs beyond the views.

    Attributes:
        bootstrap_servers: Kafka bootstrap servers.
        redis_url: The online store.
        dlq_topic: Dead-letter topic.
        stop_at_end: Stop when every partition is consumed to its end (catch-up
            runs and tests) instead of tailing forever.
        write_retry_s: How long failing online writes are retried before stopping.
    """

    bootstrap_servers: str
    redis_url: str
    dlq_topic: str
    stop_at_end: bool = False
    write_retry_s: float = 60.0


def kafka_flow(
    views: Sequence[ViewSpec], config: RunConfig, codec: AvroCodec | None = None
) -> Dataflow:
    """The dataflow of ``views`` reading Kafka and writing Redis (no I/O until run).

    Args:
        views: The views to run.
        config: Where to read and write.
        codec: The decoder (default: the checked-in contracts, single-object framing
            and no registry).
    """
    topics = sorted({v.topic for v in views})
    source = KafkaSource(
        brokers=config.bootstrap_servers.split(","),
        topics=topics,
        tail=not config.stop_at_end,
        starting_offset=OFFSET_BEGINNING,
        add_config={"enable.partition.eof": "true"} if config.stop_at_end else None,
    )
    project = views[0].project if views else ""
    redis_url = config.redis_url

    def store() -> TileStore:
        return TileStore(connect(redis_url), redis_url)

    return build_flow(
        views,
        codec or AvroCodec(load_contracts()),
        source,
        OnlineTileSink(store, project, config.write_retry_s),
        DeadLetterSink(
            {"bootstrap.servers": config.bootstrap_servers, "log.connection.close": False},
            config.dlq_topic,
        ),
    )


def run_flow(flow: Dataflow, *, epoch_interval_s: float = 1.0) -> None:
    """Run ``flow`` in this process with one worker until it ends (or forever when tailing)."""
    from bytewax._bytewax import cli_main

    cli_main(  # type: ignore[no-untyped-call]
        flow, workers_per_process=1, epoch_interval=timedelta(seconds=epoch_interval_s)
    )
