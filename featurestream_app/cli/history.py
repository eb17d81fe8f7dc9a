"""``featurestream backfill`` and ``check-consistency``: history, and how it agrees with
what is served."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from featurestream.errors import ConfigError

from .common import load_settings, make_codec, one_line_errors, time_ms


@click.command()
@click.argument("views", nargs=-1)
@click.option("--from", "start", required=True, help="First event time (inclusive).")
@click.option("--to", "end", required=True, help="Last event time (exclusive).")
@click.option(
    "--events",
    "sources",
    required=True,
    multiple=True,
    help="Parquet/JSON Lines file or folder, or a topic to replay from Kafka (repeatable).",
)
@click.option("--topic", default=None, help="Topic of the file events (default: from columns).")
@click.option("--online", is_flag=True, help="Also set the online tiles still in their windows.")
@one_line_errors
def backfill(
    views: tuple[str, ...],
    start: str,
    end: str,
    sources: tuple[str, ...],
    topic: str | None,
    online: bool,
) -> None:
    """Compute the stream views' history from historical events (offline log, optionally online).

    Times: ISO 8601 with a timezone, epoch ms, ``now`` or ``now-2h``. Late events
    are included: a backfill repairs what the stream dropped as late. With
    --online the tiles are replaced, so use it while the views' engine is stopped.
    """
    from featurestream.clock import fixed_clock, wall_clock_ms
    from featurestream.events import load_contracts
    from streams.backfill import FileEvents, KafkaEvents, TimeRange, run_backfill
    from streams.definitions import compile_registry, select_views
    from streams.offline.feast_store import log_root
    from streams.online import OnlineStore, check_online_store, connect_online_store
    from streams.repo import open_store

    settings = load_settings()
    now_ms = wall_clock_ms()
    time_range = TimeRange(time_ms(start, "--from", now_ms), time_ms(end, "--to", now_ms))
    store = open_store(settings.repo_path, settings.online_redis_url)
    specs = select_views(compile_registry(store), list(views))
    contracts = load_contracts()
    topics = {c.topic for c in contracts}
    if topic is not None and topic not in topics:
        raise ConfigError(f"--topic {topic!r} has no event contract; known: {sorted(topics)}")
    paths = [Path(s) for s in sources if Path(s).exists()]
    named = [s for s in sources if not Path(s).exists()]
    unknown = [s for s in named if s not in topics]
    if unknown:
        raise ConfigError(
            f"--events {unknown}: no such file or folder, and not a topic; topics: {sorted(topics)}"
        )
    if paths and named:
        raise ConfigError("--events takes files or topics, not both in one backfill")
    source: Any
    if paths:
        source = FileEvents(paths, contracts, topic)
    else:
        from streams.kafka import check_broker

        check_broker(settings.bootstrap_servers, settings.connect_timeout_s)
        source = KafkaEvents(settings.bootstrap_servers, named, time_range.start_ms)
    skipped = [s.name for s in specs if s.topic not in source.topics()]
    specs = tuple(s for s in specs if s.topic in source.topics())
    if skipped and specs and views:  # named on the command line
        click.echo(f"not backfilled (no events of their topics here): {skipped}", err=True)
    if not specs:
        raise ConfigError(
            f"no stream view{' of ' + str(list(views)) if views else ''} reads "
            f"{list(source.topics())}"
        )
    tiles: OnlineStore | None = None
    if online:
        check_online_store(settings.online_redis_url, settings.connect_timeout_s)
        tiles = connect_online_store(settings.online_redis_url)
    report = run_backfill(
        specs,
        source,
        time_range,
        make_codec(settings, for_producing=False),
        log_root(store.config),
        online=tiles,
        horizon_ms=settings.dedupe_horizon_ms,
        clock=fixed_clock(now_ms),
    )
    stats = report.stats
    invalid = ", ".join(f"{k} {v}" for k, v in sorted(stats.invalid.items())) or "none"
    click.echo(
        f"read {stats.read} events in {report.seconds:.2f} s "
        f"({report.events_per_s:,.0f} events/s): "
        f"{stats.outside_range} outside the range, {stats.duplicates} duplicates, "
        f"invalid: {invalid}"
    )
    for spec in specs:
        line = (
            f"  {spec.name}: {stats.applied[spec.name]} events into "
            f"{report.files.get(spec.name, 0)} log files"
        )
        if online:
            line += f", {report.online_entities.get(spec.name, 0)} entities online"
        click.echo(line)


@click.command("check-consistency")
@click.argument("views", nargs=-1)
@click.option("--entities", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds between read times.",
)
@click.option("--seed", default=0, show_default=True)
@click.option("--wait", default=30.0, show_default=True, help="Max s for the log to catch up.")
@click.option("--json", "as_json", is_flag=True, help="The report as JSON.")
@one_line_errors
def check_consistency_cmd(
    views: tuple[str, ...],
    entities: int,
    rounds: int,
    interval: float,
    seed: int,
    wait: float,
    as_json: bool,
) -> None:
    """Read sampled entities online and offline at the same times; report mismatches.

    Exits 1 when any feature differs.
    """
    from streams.consistency import check_consistency
    from streams.definitions import compile_registry, select_views
    from streams.online import check_online_store, connect_online_store
    from streams.repo import open_store

    settings = load_settings()
    check_online_store(settings.online_redis_url, settings.connect_timeout_s)
    store = open_store(settings.repo_path, settings.online_redis_url)
    specs = select_views(compile_registry(store), list(views))
    report = check_consistency(
        store,
        specs,
        connect_online_store(settings.online_redis_url),
        entities=entities,
        rounds=rounds,
        interval_s=interval,
        seed=seed,
        wait_s=wait,
    )
    if not report.log_caught_up:
        click.echo(
            f"warning: the offline log was still behind the online reads after {wait:.0f} s "
            "(is the engine running?); mismatches may only mean that",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        width = max(len(name) for name in report.features)
        click.echo(f"{'feature'.ljust(width)}  compared  mismatches")
        for name, result in report.features.items():
            click.echo(f"{name.ljust(width)}  {result.compared:>8}  {result.mismatches:>10}")
            for example in result.examples:
                click.echo(f"{'':{width}}    e.g. {json.dumps(example)}")
        click.echo(
            f"{sum(report.entities.values())} entities x {len(report.read_times_ms)} read times: "
            f"{report.compared} values compared, {report.mismatches} mismatches"
        )
    if report.mismatches:
        sys.exit(1)
