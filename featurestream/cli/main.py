"""The ``featurestream`` command: the composition root of every process.

Each subcommand loads :class:`~featurestream.settings.Settings` once, wires the
adapters it needs and runs. Errors of the project's tree become one line on
stderr with the fix, never a traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from featurestream.errors import ConfigError, FeaturestreamError, TransientError
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


@cli.command()
@_one_line_errors
def up() -> None:
    """Start the local stack (broker + Redis) or check the configured one; create topics."""
    from featurestream.stack import stack_topics
    from featurestream.stack import up as stack_up

    settings = _settings()
    for svc in stack_up(settings):
        click.echo(f"{svc.name:<8} {svc.endpoint:<32} {svc.state}")
    click.echo(f"topics   {', '.join(stack_topics(settings))}")
    click.echo(f"state    {settings.state_dir.resolve()}  (stop with: featurestream down)")


@cli.command()
@_one_line_errors
def down() -> None:
    """Stop every process the local stack started (by pid)."""
    from featurestream.stack import down as stack_down

    stopped = stack_down(_settings())
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@cli.command()
@_one_line_errors
def status() -> None:
    """Show what runs and where."""
    from featurestream.stack import status as stack_status

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
@click.option("--topic", default="clicks", show_default=True, type=click.Choice(["clicks"]))
@click.option("--rate", default=1000.0, show_default=True, help="Events per second.")
@click.option("--users", default=1000, show_default=True)
@click.option("--items", default=10_000, show_default=True)
@click.option("--duration", type=float, default=None, help="Seconds to produce for.")
@click.option("--count", type=int, default=None, help="Number of events (instead of --duration).")
@click.option("--seed", default=0, show_default=True)
@_one_line_errors
def produce(
    topic: str,
    rate: float,
    users: int,
    items: int,
    duration: float | None,
    count: int | None,
    seed: int,
) -> None:
    """Produce synthetic events at a fixed rate, with event time = now."""
    from producers import ClickTraffic, EventProducer

    from .live import produce_live

    settings = _settings()
    if (duration is None) == (count is None):
        raise ConfigError("give exactly one of --duration or --count")
    total = count if count is not None else int(rate * (duration or 0))
    traffic = ClickTraffic(users=users, items=items, seed=seed)
    with EventProducer(settings.bootstrap_servers) as producer:
        produce_live(producer, traffic, rate, total, sys.stderr.isatty())
    click.echo(
        f"produced {producer.stats.delivered} events to {topic} ({producer.stats.failed} failed)"
    )


@cli.command()
@click.argument("views", nargs=-1)
@click.option("--stop-at-end", is_flag=True, help="Stop when every partition is consumed.")
@_one_line_errors
def run(views: tuple[str, ...], stop_at_end: bool) -> None:
    """Run the dataflow of every stream feature view (or the VIEWS named)."""
    from featurestream.stack import check_broker, check_redis
    from streams.definitions import compile_registry, select_views
    from streams.flow.runner import RunConfig, kafka_flow, run_flow
    from streams.repo import open_store

    settings = _settings()
    check_broker(settings.bootstrap_servers, settings.connect_timeout_s)
    check_redis(settings.online_redis_url, settings.connect_timeout_s)
    store = open_store(settings.repo_path, settings.online_redis_url)
    specs = select_views(compile_registry(store), list(views))
    if not specs:
        raise ConfigError(
            f"no aggregating stream feature views in {settings.repo_path}; run featurestream apply"
        )
    click.echo(
        f"running {', '.join(s.name for s in specs)} from "
        f"{settings.bootstrap_servers} into {settings.online_redis_url}",
        err=True,
    )
    config = RunConfig(
        bootstrap_servers=settings.bootstrap_servers,
        redis_url=settings.online_redis_url,
        dlq_topic=settings.dlq_topic,
        stop_at_end=stop_at_end,
    )
    run_flow(kafka_flow(specs, config))


@cli.command()
@click.option("--host", default=None, help="Bind address (default FEATURESTREAM_SERVE_HOST).")
@click.option("--port", type=int, default=None, help="Port (default FEATURESTREAM_SERVE_PORT).")
@click.option("--workers", default=1, show_default=True)
@_one_line_errors
def serve(host: str | None, port: int | None, workers: int) -> None:
    """Serve online features over HTTP (Feast's feature server API)."""
    from featurestream.stack import check_redis
    from serving.feast_server import serve_feast

    settings = _settings()
    check_redis(settings.online_redis_url, settings.connect_timeout_s)
    serve_feast(
        settings.repo_path,
        settings.online_redis_url,
        host=host or settings.serve_host,
        port=port or settings.serve_port,
        workers=workers,
    )


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


def main() -> None:
    """Console script entry point."""
    cli()
