"""``featurestream run``: the engine."""

from __future__ import annotations

import sys

import click

from featurestream.errors import ConfigError

from .common import engine_views, load_settings, make_codec, one_line_errors


@click.command()
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
@one_line_errors
def run(
    views: tuple[str, ...],
    stop_at_end: bool,
    processes: int,
    process_index: int,
    process_count: int,
) -> None:
    """Run the dataflow of every stream feature view (or the VIEWS named)."""
    from featurestream_app.engine import (
        EngineRun,
        check_shardable,
        run_engine,
        run_engine_process,
    )
    from featurestream_app.progress import serve_metrics, show_progress
    from streams.definitions import select_views
    from streams.flow import FlowMetrics
    from streams.kafka import check_broker
    from streams.online import check_online_store

    settings = load_settings()
    if process_index >= process_count:
        raise ConfigError(f"--process-index {process_index} must be < --process-count")
    check_broker(settings.bootstrap_servers, settings.connect_timeout_s)
    check_online_store(settings.online_redis_url, settings.connect_timeout_s)
    compiled, offline_root = engine_views(settings)
    specs = select_views(compiled, list(views))
    if not specs:
        raise ConfigError(
            f"no aggregating stream feature views in {settings.repo_path}; run featurestream apply"
        )
    if processes > 1 or process_count > 1:
        check_shardable(specs)
    child = process_count > 1
    metrics = FlowMetrics()
    engine = EngineRun(
        settings,
        specs,
        offline_root,
        stop_at_end,
        make_codec(settings, for_producing=False),
        metrics,
        (process_index, process_count),
    )
    if not child:  # one engine per state dir (its recovery state and log files)
        from featurestream_app.stack.locks import ENGINE_LOCK, hold

        hold(settings.state_dir / ENGINE_LOCK, "the engine state dir")
    if processes > 1:
        click.echo(f"running {processes} engine processes", err=True)
        sys.exit(run_engine(engine, processes=processes, names=views))
    click.echo(
        f"running {', '.join(s.name for s in specs)} from "
        f"{settings.bootstrap_servers} into {settings.online_redis_url}"
        + (f" (process {process_index + 1} of {process_count})" if child else ""),
        err=True,
    )
    if settings.metrics_port:
        serve_metrics(metrics, settings.metrics_port)
    if not child:
        if sys.stderr.isatty():
            show_progress(metrics, specs)
        sys.exit(run_engine(engine, processes=1, names=views))
    status = run_engine_process(engine)
    if status:
        click.echo("error: the online store lost the tiles; the parent restores them", err=True)
    sys.exit(status)
