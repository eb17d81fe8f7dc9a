"""``featurestream bench producer``: events/s of one producer process into the local broker."""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from featurestream_app.stack import Supervisor, down, free_port, port_open, up
from featurestream_app.traffic import KafkaSink, produce_generated
from producers import EventProducer, TrafficConfig, TrafficGenerator

from .machine import describe_machine

__all__ = ["bench_producer"]

_START_MS = 1_790_000_000_000


class _NullSink:
    def emit(self, emission: Any) -> None:
        if emission.record is not None:
            self.codec.encode(emission.topic, emission.record)

    def __init__(self) -> None:
        self.codec = AvroCodec(load_contracts())

    def close(self) -> None:
        return None


def bench_producer(events: int, rounds: int, out_dir: Path, command: str) -> dict[str, Any]:
    """Run the benchmark on a fresh embedded stack and write ``producer.{json,md}``."""
    results: dict[str, Any] = {"command": command, "events": events, "machine": describe_machine()}
    config = TrafficConfig(topic="clicks", users=100_000, seed=1)
    with tempfile.TemporaryDirectory() as state:
        settings = Settings(state_dir=Path(state), broker_port=free_port(), redis_port=free_port())
        up(settings)
        try:
            encode_only = []
            kafka = []
            for _ in range(rounds):
                gen = TrafficGenerator(config, AvroCodec(load_contracts()))
                t0 = time.perf_counter()
                produce_generated(
                    gen, _NullSink(), rate=1000, total=events, pace=False, start_ms=_START_MS
                )
                encode_only.append(events / (time.perf_counter() - t0))

                gen = TrafficGenerator(config, AvroCodec(load_contracts()))
                producer = EventProducer(settings.bootstrap_servers)
                t0 = time.perf_counter()
                produce_generated(
                    gen,
                    KafkaSink(producer),
                    rate=1000,
                    total=events,
                    pace=False,
                    start_ms=_START_MS,
                )
                elapsed = time.perf_counter() - t0
                if producer.stats.delivered != events:
                    raise RuntimeError(f"delivered {producer.stats.delivered} of {events}")
                kafka.append(events / elapsed)
        finally:
            down(settings)
            assert not port_open("127.0.0.1", settings.broker_port)
            assert not Supervisor(settings.state_dir).all_running()
    results["generate_and_encode_events_per_s"] = [round(x) for x in encode_only]
    results["to_kafka_events_per_s"] = [round(x) for x in kafka]
    results["to_kafka_median_events_per_s"] = round(statistics.median(kafka))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "producer.json").write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    (out_dir / "producer.md").write_text(
        "# Producer throughput\n\n"
        f"`{command}` on {m['cores']} cores ({m['cpu']}), Python {m['python']}, {m['when']}.\n\n"
        f"One process generates synthetic clicks (100k Zipf users), validates, Avro-encodes "
        f"and produces them (idempotent, acks=all, lz4) into the embedded broker on the same "
        f"machine; time includes the final flush (every event delivered).\n\n"
        "| round | generate + encode (events/s) | to Kafka, delivered (events/s) |\n"
        "|---|---|---|\n"
        + "".join(
            f"| {i + 1} | {a:,.0f} | {b:,.0f} |\n"
            for i, (a, b) in enumerate(zip(encode_only, kafka, strict=True))
        )
        + f"\nMedian to Kafka: **{results['to_kafka_median_events_per_s']:,} events/s** "
        f"for {events:,} events per round.\n"
    )
    return results
