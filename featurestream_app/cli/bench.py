"""``featurestream bench``: the benchmarks (results under bench/results/)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import one_line_errors


@click.group()
def bench() -> None:
    """Benchmarks (results under bench/results/)."""


@bench.command("producer")
@click.option("--events", default=1_000_000, show_default=True, type=click.IntRange(min=1))
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--out", default=Path("bench/results"), show_default=True, type=click.Path(path_type=Path)
)
@one_line_errors
def bench_producer_cmd(events: int, rounds: int, out: Path) -> None:
    """Events/s of one producer process into a fresh local broker."""
    from featurestream_app.bench.producer import bench_producer

    command = f"featurestream bench producer --events {events} --rounds {rounds}"
    result = bench_producer(events, rounds, out, command)
    click.echo(
        f"to Kafka: {result['to_kafka_events_per_s']} events/s "
        f"(median {result['to_kafka_median_events_per_s']:,}); "
        f"generate+encode only: {result['generate_and_encode_events_per_s']}"
    )
    click.echo(f"written: {out / 'producer.json'}, {out / 'producer.md'}")


@bench.command("engine")
@click.option("--events", default=500_000, show_default=True, type=click.IntRange(min=1000))
@click.option("--reads", default=2000, show_default=True, type=click.IntRange(min=10))
@click.option(
    "--out", default=Path("bench/results"), show_default=True, type=click.Path(path_type=Path)
)
@one_line_errors
def bench_engine_cmd(events: int, reads: int, out: Path) -> None:
    """Engine events/s, state bytes per entity, Feast read latency."""
    from featurestream_app.bench.engine import bench_engine

    command = f"featurestream bench engine --events {events} --reads {reads}"
    result = bench_engine(events, reads, out, command)
    click.echo(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


@bench.command("backfill")
@click.option("--events", default=1_000_000, show_default=True, type=click.IntRange(min=1000))
@click.option(
    "--out", default=Path("bench/results"), show_default=True, type=click.Path(path_type=Path)
)
@one_line_errors
def bench_backfill_cmd(events: int, out: Path) -> None:
    """Backfill events/s from Parquet (no Kafka), offline only and with online tiles."""
    from featurestream_app.bench.backfill import bench_backfill

    command = f"featurestream bench backfill --events {events}"
    result = bench_backfill(events, out, command)
    click.echo(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


@bench.command("pipeline")
@click.option("--events", default=2_000_000, show_default=True, type=click.IntRange(min=1000))
@click.option("--users", default=100_000, show_default=True, type=click.IntRange(min=10))
@click.option(
    "--baseline-events",
    default=300_000,
    show_default=True,
    type=click.IntRange(min=100),
    help="Clicks the Feast-docs baseline runs over (at most --events).",
)
@click.option("--freshness-seconds", default=30.0, show_default=True, type=click.FloatRange(1))
@click.option("--memory-users", default=1_000_000, show_default=True, type=click.IntRange(10))
@click.option("--serving-seconds", default=15, show_default=True, type=click.IntRange(min=1))
@click.option("--serving-events", default=100_000, show_default=True, type=click.IntRange(100))
@click.option("--backfill-events", default=1_000_000, show_default=True, type=click.IntRange(1000))
@click.option(
    "--out", default=Path("bench/results"), show_default=True, type=click.Path(path_type=Path)
)
@one_line_errors
def bench_pipeline_cmd(
    events: int,
    users: int,
    baseline_events: int,
    freshness_seconds: float,
    memory_users: int,
    serving_seconds: int,
    serving_events: int,
    backfill_events: int,
    out: Path,
) -> None:
    """Throughput against the ceiling and the Feast-docs baseline, freshness, serving,
    memory and backfill in one run: pipeline.{json,md} and plots."""
    from featurestream_app.bench.pipeline import bench_pipeline

    command = (
        f"featurestream bench pipeline --events {events} --users {users} "
        f"--baseline-events {baseline_events} --freshness-seconds {freshness_seconds:g} "
        f"--memory-users {memory_users} --serving-seconds {serving_seconds} "
        f"--serving-events {serving_events} --backfill-events {backfill_events}"
    )
    result = bench_pipeline(
        events,
        users,
        out,
        command,
        baseline_events=baseline_events,
        freshness_seconds=freshness_seconds,
        memory_users=memory_users,
        serving_seconds=serving_seconds,
        serving_events=serving_events,
        backfill_events=backfill_events,
        progress=lambda step: click.echo(step, err=True),
    )
    click.echo((out / "pipeline.md").read_text())
    click.echo(json.dumps(result["ratios"]))


@bench.command("serving")
@click.option("--seconds", default=15, show_default=True, type=click.IntRange(min=1))
@click.option("--events", default=100_000, show_default=True, type=click.IntRange(min=100))
@click.option(
    "--out", default=Path("bench/results"), show_default=True, type=click.Path(path_type=Path)
)
@one_line_errors
def bench_serving_cmd(seconds: int, events: int, out: Path) -> None:
    """req/s and latency of feast serve and featurestream serve on the same data (wrk)."""
    from featurestream_app.bench.serving import bench_serving

    command = f"featurestream bench serving --seconds {seconds} --events {events}"
    result = bench_serving(seconds, events, out, command)
    click.echo(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    click.echo(f"written: {out / 'serving.json'}, {out / 'serving.md'}")
