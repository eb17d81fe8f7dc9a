"""The ``featurestream`` command: the composition root of every process.

Each subcommand loads :class:`~featurestream.settings.Settings` once, wires the
adapters it needs and runs. Errors of the project's tree become one line on
stderr with the fix, never a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from featurestream.errors import (
    ConfigError,
    FeaturestreamError,
    OnlineStoreLost,
    TransientError,
)
from featurestream.settings import Settings

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "FEATURESTREAM_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"{field}: {first['msg']} (got {first.get('input')!r})") from exc


def _one_line_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FeaturestreamError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(3 if isinstance(exc, TransientError) else 2)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def cli(verbose: bool) -> None:
    """featurestream: streaming features, exact at read time, served through Feast."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # Feast flags every StreamFeatureView as alpha; featurestream is what runs them.
    warnings.filterwarnings("ignore", message="Stream feature views are experimental")
    for noisy in ("feast", "bytewax", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)


def _codec(settings: Settings, *, for_producing: bool) -> Any:
    """The codec of this process: Confluent wire format when a registry is configured."""
    from featurestream.events import AvroCodec, load_contracts

    if settings.schema_registry_url is None:
        return AvroCodec(load_contracts())
    from streams.kafka.registry import registry_lookup

    return AvroCodec(
        load_contracts(),
        registry_lookup(settings.schema_registry_url),
        confluent_framing=for_producing,
    )


@cli.command()
@_one_line_errors
def up() -> None:
    """Start the local stack (broker + Redis) or check the configured one; create topics."""
    from featurestream_app.stack import stack_topics
    from featurestream_app.stack import up as stack_up

    settings = _settings()
    for svc in stack_up(settings):
        click.echo(f"{svc.name:<8} {svc.endpoint:<32} {svc.state}")
    click.echo(f"topics   {', '.join(stack_topics(settings))}")
    click.echo(f"state    {settings.state_dir.resolve()}  (stop with: featurestream down)")


@cli.command()
@_one_line_errors
def down() -> None:
    """Stop every process the local stack started (by pid)."""
    from featurestream_app.stack import down as stack_down

    stopped = stack_down(_settings())
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@cli.command()
@_one_line_errors
def status() -> None:
    """Show what runs and where."""
    from featurestream_app.stack import status as stack_status

    for svc in stack_status(_settings()):
        click.echo(f"{svc.name:<8} {svc.endpoint:<32} {svc.state}")


@cli.command()
@_one_line_errors
def apply() -> None:
    """Register the feature repository's definitions (feast apply)."""
    from streams.repo import apply_repo

    settings = _settings()
    apply_repo(settings.repo_path, settings.online_redis_url)
    click.echo(f"applied {settings.repo_path}")


@cli.command()
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
@_one_line_errors
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
    from producers import EventProducer, TrafficConfig, TrafficGenerator

    from .produce import FileSink, KafkaSink, produce_generated, read_replay, tty_progress

    settings = _settings()
    codec = _codec(settings, for_producing=True)
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


@cli.command("seed-data")
@click.option("--users", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("--first-user", default=1, show_default=True)
@click.option("--items", default=10_000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True)
@_one_line_errors
def seed_data_cmd(users: int, first_user: int, items: int, seed: int) -> None:
    """Write the batch data of user_profile and item_features (deterministic)."""
    from .seed import seed_data

    settings = _settings()
    data = settings.repo_path / "data"
    seed_data(data, first_user=first_user, users=users, items=items, seed=seed)
    click.echo(
        f"wrote {data / 'user_profile.parquet'} ({users} users) and "
        f"{data / 'item_features.parquet'} ({items} items)"
    )


@cli.command()
@_one_line_errors
def materialize() -> None:
    """Load the batch views into the online store (what feast materialize-incremental does)."""
    from datetime import UTC, datetime

    from feast.errors import FeastError

    from featurestream_app.stack import check_redis
    from streams.repo import open_store

    settings = _settings()
    check_redis(settings.online_redis_url, settings.connect_timeout_s)
    store = open_store(settings.repo_path, settings.online_redis_url)
    try:
        store.materialize_incremental(end_date=datetime.now(tz=UTC))
    except (FeastError, FileNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"materialize failed: {exc}; run featurestream seed-data and featurestream apply first"
        ) from exc
    click.echo("materialized the batch views (stream views are kept online by featurestream run)")


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@_one_line_errors
def features(names: tuple[str, ...], as_json: bool) -> None:
    """List every view and feature: type, window, aggregation, entity, source, owner, freshness.

    NAMES (views, or features as view:feature) narrow the list.
    """
    from streams.online import TileStore, connect
    from streams.repo import open_store

    from .discovery import describe_features, select_rows

    settings = _settings()
    store = open_store(settings.repo_path, settings.online_redis_url)
    tiles = TileStore(connect(settings.online_redis_url, timeout_s=1.0), settings.online_redis_url)
    rows = select_rows(describe_features(store, tiles), names)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    columns = [
        "view",
        "kind",
        "feature",
        "type",
        "aggregation",
        "window",
        "entity",
        "source",
        "owner",
        "freshness",
    ]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) if rows else len(c) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        click.echo("  ".join(str(row[c]).ljust(widths[c]) for c in columns))


def _engine_views(settings: Settings) -> tuple[tuple[Any, ...], Path]:
    """Every compiled stream view and the offline log root. Engine processes start
    without importing Feast while the registry is unchanged (a cache in the state dir)."""
    from streams.definitions import cached_views

    def compile_all() -> tuple[tuple[Any, ...], Path]:
        from streams.definitions import compile_registry
        from streams.offline.feast_store import log_root
        from streams.repo import open_store

        store = open_store(settings.repo_path, settings.online_redis_url)
        return compile_registry(store), log_root(store.config)

    return cached_views(settings.repo_path, settings.state_dir / "views", compile_all)


@cli.command()
@click.argument("views", nargs=-1)
@click.option("--stop-at-end", is_flag=True, help="Stop when every partition is consumed.")
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Engine processes, each reading a share of the partitions.",
)
@click.option("--process-index", default=0, hidden=True, type=click.IntRange(min=0))
@click.option("--process-count", default=1, hidden=True, type=click.IntRange(min=1))
@_one_line_errors
def run(
    views: tuple[str, ...],
    stop_at_end: bool,
    processes: int,
    process_index: int,
    process_count: int,
) -> None:
    """Run the dataflow of every stream feature view (or the VIEWS named)."""
    from featurestream_app.stack import check_broker, check_redis
    from streams.definitions import select_views
    from streams.flow import FlowMetrics
    from streams.flow.restore import restore_online
    from streams.flow.runner import RunConfig, caused_by, engine_marker, run_engine
    from streams.online import TileStore, connect

    from .engine import LOST_EXIT, check_shardable, recovery_dir, run_processes
    from .progress import serve_metrics, show_progress

    settings = _settings()
    if process_index >= process_count:
        raise ConfigError(f"--process-index {process_index} must be < --process-count")
    check_broker(settings.bootstrap_servers, settings.connect_timeout_s)
    check_redis(settings.online_redis_url, settings.connect_timeout_s)
    compiled, offline_root = _engine_views(settings)
    specs = select_views(compiled, list(views))
    if not specs:
        raise ConfigError(
            f"no aggregating stream feature views in {settings.repo_path}; run featurestream apply"
        )
    if processes > 1 or process_count > 1:
        check_shardable(specs)
    if processes > 1:
        tiles = TileStore(connect(settings.online_redis_url), settings.online_redis_url)
        marker = engine_marker(specs)
        lost = [not tiles.has_marker(marker)]

        def restore() -> None:
            if lost[0] and settings.restore_online:
                restore_online(specs, offline_root, tiles)
                tiles.set_marker(marker)
            lost[0] = True  # a restart means a child found Redis emptied

        click.echo(f"running {processes} engine processes", err=True)
        sys.exit(
            run_processes(settings, views, processes, stop_at_end=stop_at_end, restore=restore)
        )
    child = process_count > 1
    click.echo(
        f"running {', '.join(s.name for s in specs)} from "
        f"{settings.bootstrap_servers} into {settings.online_redis_url}"
        + (f" (process {process_index + 1} of {process_count})" if child else ""),
        err=True,
    )
    config = RunConfig(
        bootstrap_servers=settings.bootstrap_servers,
        redis_url=settings.online_redis_url,
        dlq_topic=settings.dlq_topic,
        late_topic=settings.late_topic,
        offline_log=offline_root,
        stop_at_end=stop_at_end,
        dedupe_horizon_ms=settings.dedupe_horizon_ms,
        # Several processes: the parent restores, with every child stopped.
        restore_online=settings.restore_online and not child,
        detect_lost=settings.restore_online,
        process_index=process_index,
        process_count=process_count,
    )
    metrics = FlowMetrics()
    if settings.metrics_port:
        serve_metrics(metrics, settings.metrics_port)
    if sys.stderr.isatty() and not child:
        show_progress(metrics, specs)
    # Recovery state per set of view definitions: a changed definition starts afresh.
    flow_key = "-".join(s.state_id for s in specs)
    try:
        run_engine(
            specs,
            config,
            _codec(settings, for_producing=False),
            metrics,
            epoch_interval_s=settings.snapshot_interval_s,
            recovery_dir=recovery_dir(settings, flow_key, process_index, process_count),
        )
    except Exception as exc:
        if child and caused_by(exc, OnlineStoreLost):
            click.echo("error: Redis lost the online tiles; the parent restores them", err=True)
            sys.exit(LOST_EXIT)
        raise


def _time_ms(value: str, option: str, now_ms: int) -> int:
    """An instant given as ISO 8601 with a timezone, epoch milliseconds, ``now`` or ``now-2h``."""
    import re
    from datetime import datetime

    text = value.strip()
    relative = re.fullmatch(r"now(?:-(\d+)([smhd]))?", text)
    if relative:
        amount, unit = relative.groups()
        scale = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
        return now_ms - (int(amount) * scale[unit] if amount else 0)
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(
            f"{option} {value!r} is not a time; use ISO 8601 with a timezone "
            "(2026-11-23T10:00:00Z), epoch milliseconds, now or now-2h"
        ) from exc
    if parsed.tzinfo is None:
        example = text if "T" in text else f"{text}T00:00:00"
        raise ConfigError(
            f"{option} {value!r} has no timezone; add one, e.g. {example}Z for UTC "
            f"or {example}+01:00"
        )
    return int(parsed.timestamp() * 1000)


@cli.command()
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
@_one_line_errors
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
    from featurestream.events import load_contracts
    from streams.backfill import FileEvents, KafkaEvents, TimeRange, run_backfill
    from streams.definitions import compile_registry, select_views
    from streams.offline.feast_store import log_root
    from streams.online import TileStore, connect
    from streams.repo import open_store

    settings = _settings()
    now_ms = time.time_ns() // 1_000_000
    time_range = TimeRange(_time_ms(start, "--from", now_ms), _time_ms(end, "--to", now_ms))
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
        from featurestream_app.stack import check_broker

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
    tiles = None
    if online:
        from featurestream_app.stack import check_redis

        check_redis(settings.online_redis_url, settings.connect_timeout_s)
        tiles = TileStore(connect(settings.online_redis_url), settings.online_redis_url)
    report = run_backfill(
        specs,
        source,
        time_range,
        _codec(settings, for_producing=False),
        log_root(store.config),
        online=tiles,
        now_ms=now_ms,
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


@cli.command("check-consistency")
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
@_one_line_errors
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
    from featurestream_app.stack import check_redis
    from streams.consistency import check_consistency
    from streams.definitions import compile_registry, select_views
    from streams.online import TileStore, connect
    from streams.repo import open_store

    settings = _settings()
    check_redis(settings.online_redis_url, settings.connect_timeout_s)
    store = open_store(settings.repo_path, settings.online_redis_url)
    specs = select_views(compile_registry(store), list(views))
    client = connect(settings.online_redis_url)
    report = check_consistency(
        store,
        specs,
        TileStore(client, settings.online_redis_url),
        client,
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


@cli.command()
@click.option("--host", default=None, help="Bind address (default FEATURESTREAM_SERVE_HOST).")
@click.option("--port", type=int, default=None, help="Port (default FEATURESTREAM_SERVE_PORT).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--feast", "use_feast", is_flag=True, help="Run Feast's own feature server.")
@_one_line_errors
def serve(host: str | None, port: int | None, workers: int, use_feast: bool) -> None:
    """Serve online features over HTTP: Feast's POST /get-online-features API, fast.

    API keys come from FEATURESTREAM_SERVE_API_KEYS_FILE, TLS from
    FEATURESTREAM_SERVE_TLS_KEYFILE and FEATURESTREAM_SERVE_TLS_CERTFILE.
    """
    from featurestream_app.stack import check_redis

    settings = _settings()
    check_redis(settings.online_redis_url, settings.connect_timeout_s)
    host, port = host or settings.serve_host, port or settings.serve_port
    if use_feast:
        from serving.feast_server import serve_feast

        serve_feast(
            settings.repo_path, settings.online_redis_url, host=host, port=port, workers=workers
        )
        return
    from serving import ServerSettings, load_api_keys, run_server

    keys = settings.serve_api_keys_file
    run_server(
        settings.repo_path,
        settings.online_redis_url,
        host=host,
        port=port,
        workers=workers,
        settings=ServerSettings(api_keys=load_api_keys(keys)) if keys else ServerSettings(),
        ssl_keyfile=settings.serve_tls_keyfile,
        ssl_certfile=settings.serve_tls_certfile,
        log_level="warning",
    )


@cli.command("train-model")
@click.option("--max-clicks", default=20_000, show_default=True, type=click.IntRange(min=1))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Model file.")
@_one_line_errors
def train_model_cmd(max_clicks: int, out: Path | None) -> None:
    """Train the example recommender on point-in-time training data from the offline log."""
    from streams.repo import open_store

    from .model import default_model_path, train

    settings = _settings()
    store = open_store(settings.repo_path, settings.online_redis_url)
    path = out or default_model_path(settings)
    model = train(store, path, max_clicks=max_clicks)
    click.echo(f"trained on {model.metrics['rows']} rows: {json.dumps(model.metrics)}")
    click.echo(f"written: {path}")


@cli.command("serve-model")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=6570, show_default=True)
@click.option("--model", "model_path", type=click.Path(path_type=Path), default=None)
@_one_line_errors
def serve_model_cmd(host: str, port: int, model_path: Path | None) -> None:
    """Serve POST /predict: the recommender's score for a user and a candidate item."""
    import uvicorn

    from featurestream_app.stack import check_redis
    from serving.inference.app import build_model_app
    from streams.repo import open_store

    from .model import default_model_path, load_model

    settings = _settings()
    check_redis(settings.online_redis_url, settings.connect_timeout_s)
    model = load_model(model_path or default_model_path(settings))
    store = open_store(settings.repo_path, settings.online_redis_url)
    uvicorn.run(build_model_app(store, model), host=host, port=port, log_level="warning")


@cli.command()
@click.option("--duration", default=30.0, show_default=True, help="Seconds of synthetic clicks.")
@click.option("--rate", default=1000.0, show_default=True, help="Clicks per second.")
@click.option("--users", default=500, show_default=True)
@_one_line_errors
def demo(duration: float, rate: float, users: int) -> None:
    """Start the stack, stream clicks, and check features read through Feast against the events."""
    from .demo import run_demo

    ok = run_demo(_settings(), duration_s=duration, rate=rate, users=users)
    sys.exit(0 if ok else 1)


@cli.group()
def bench() -> None:
    """Benchmarks (results under bench/results/)."""


@bench.command("producer")
@click.option("--events", default=1_000_000, show_default=True, type=click.IntRange(min=1))
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--out", default=Path("bench/results"), show_default=True, type=click.Path(path_type=Path)
)
@_one_line_errors
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
@_one_line_errors
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
@_one_line_errors
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
@_one_line_errors
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
@_one_line_errors
def bench_serving_cmd(seconds: int, events: int, out: Path) -> None:
    """req/s and latency of feast serve and featurestream serve on the same data (wrk)."""
    from featurestream_app.bench.serving import bench_serving

    command = f"featurestream bench serving --seconds {seconds} --events {events}"
    result = bench_serving(seconds, events, out, command)
    click.echo(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    click.echo(f"written: {out / 'serving.json'}, {out / 'serving.md'}")


def main() -> None:
    """Console script entry point."""
    cli()
