"""``featurestream produce``: synthetic traffic or a replay, to Kafka or to a file."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import click

from featurestream.errors import ConfigError

from .common import load_settings, make_codec, one_line_errors


@click.command()
@click.option(
    "--topic",
    default="clicks",
    show_default=True,
    type=click.Choice(["clicks", "impressions", "purchases"]),
)
@click.option(
    "--rate",
    default=1000.0,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Events per second.",
)
@click.option("--users", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("--items", default=10_000, show_default=True, type=click.IntRange(min=1))
@click.option("--first-user", default=1, show_default=True, help="Id of the most active user.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds of traffic (count = rate x duration).",
)
@click.option(
    "--count",
    type=click.IntRange(min=0),
    default=None,
    help="Number of events (instead of --duration).",
)
@click.option("--seed", default=0, show_default=True, help="Same seed, same traffic.")
@click.option(
    "--jitter-ms",
    default=2000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Event times are out of order within this bound.",
)
@click.option(
    "--late-fraction",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fraction of events delayed beyond --lateness-ms.",
)
@click.option("--lateness-ms", default=30_000, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--duplicate-fraction",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fraction of events sent again (same event_id).",
)
@click.option(
    "--bad-fraction",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fraction of malformed records (several kinds).",
)
@click.option(
    "--no-pace",
    is_flag=True,
    help="Produce as fast as possible; event times spaced at --rate from --start-ms.",
)
@click.option(
    "--start-ms",
    type=int,
    default=None,
    help="First event time with --no-pace (default: now - count/rate).",
)
@click.option(
    "--from",
    "from_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Replay events from a JSON Lines or Parquet file.",
)
@click.option("--shift-to-now", is_flag=True, help="With --from: shift event times to end now.")
@click.option(
    "--dry-run",
    type=click.Path(path_type=Path),
    default=None,
    help="Write JSON Lines to this file instead of Kafka.",
)
@one_line_errors
def produce(
    topic: str,
    rate: float,
    users: int,
    items: int,
    first_user: int,
    duration: float | None,
    count: int | None,
    seed: int,
    jitter_ms: int,
    late_fraction: float,
    lateness_ms: int,
    duplicate_fraction: float,
    bad_fraction: float,
    no_pace: bool,
    start_ms: int | None,
    from_file: Path | None,
    shift_to_now: bool,
    dry_run: Path | None,
) -> None:
    """Produce realistic synthetic events (or replay a file) to Kafka."""
    from featurestream.events import AvroCodec, load_contracts
    from featurestream_app.traffic import (
        FileSink,
        KafkaSink,
        produce_generated,
        read_replay,
        tty_progress,
    )
    from producers import EventProducer, TrafficConfig, TrafficGenerator

    settings = load_settings()
    codec = make_codec(settings, for_producing=True)
    sink: FileSink | KafkaSink
    sink = (
        FileSink(dry_run)
        if dry_run
        else KafkaSink(EventProducer(settings.bootstrap_servers, codec))
    )
    now_ms = time.time_ns() // 1_000_000
    if from_file is not None:
        kinds: Counter[str] = Counter()
        for emission in read_replay(from_file, topic, now_ms if shift_to_now else None):
            sink.emit(emission)
            kinds[emission.kind] += 1
        sink.close()
    else:
        if (duration is None) == (count is None):
            raise ConfigError("give exactly one of --duration or --count (or --from FILE)")
        total = count if count is not None else int(rate * (duration or 0))
        try:
            config = TrafficConfig(
                topic=topic,
                users=users,
                items=items,
                seed=seed,
                first_user=first_user,
                jitter_ms=jitter_ms,
                late_fraction=late_fraction,
                lateness_ms=lateness_ms,
                duplicate_fraction=duplicate_fraction,
                bad_fraction=bad_fraction,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        generator = TrafficGenerator(config, AvroCodec(load_contracts()))  # malformed bytes
        first_ms = start_ms if start_ms is not None else now_ms - int(total * 1000 / rate)
        kinds = produce_generated(
            generator,
            sink,
            rate=rate,
            total=total,
            pace=not no_pace,
            start_ms=first_ms,
            progress=tty_progress(total),
        )
    summary = ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))
    if isinstance(sink, KafkaSink):
        stats = sink.producer.stats
        rejected = ", ".join(f"{k}={v}" for k, v in sorted(sink.rejected.items())) or "none"
        click.echo(
            f"produced {sum(kinds.values())} messages ({summary}); delivered "
            f"{stats.delivered}, failed {stats.failed}, rejected {rejected}"
        )
        if stats.failed:
            sys.exit(3)
    else:
        click.echo(f"wrote {sum(kinds.values())} messages ({summary}) to {dry_run}")
