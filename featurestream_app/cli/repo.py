"""``featurestream apply``, ``seed-data``, ``materialize``, ``features``: the feature repository."""

from __future__ import annotations

import json

import click

from featurestream.errors import ConfigError

from .common import load_settings, one_line_errors


@click.command()
@one_line_errors
def apply() -> None:
    """Register the feature repository's definitions (feast apply)."""
    from streams.repo import apply_repo

    settings = load_settings()
    apply_repo(settings.repo_path, settings.online_redis_url)
    click.echo(f"applied {settings.repo_path}")


@click.command("seed-data")
@click.option("--users", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("--first-user", default=1, show_default=True)
@click.option("--items", default=10_000, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True)
@one_line_errors
def seed_data_cmd(users: int, first_user: int, items: int, seed: int) -> None:
    """Write the batch data of user_profile and item_features (deterministic)."""
    from featurestream_app.seed import seed_data

    settings = load_settings()
    data = settings.repo_path / "data"
    seed_data(data, first_user=first_user, users=users, items=items, seed=seed)
    click.echo(
        f"wrote {data / 'user_profile.parquet'} ({users} users) and "
        f"{data / 'item_features.parquet'} ({items} items)"
    )


@click.command()
@one_line_errors
def materialize() -> None:
    """Load the batch views into the online store (what feast materialize-incremental does)."""
    from datetime import UTC, datetime

    from feast.errors import FeastError

    from streams.online import check_online_store
    from streams.repo import open_store

    settings = load_settings()
    check_online_store(settings.online_redis_url, settings.connect_timeout_s)
    store = open_store(settings.repo_path, settings.online_redis_url)
    try:
        store.materialize_incremental(end_date=datetime.now(tz=UTC))
    except (FeastError, FileNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"materialize failed: {exc}; run featurestream seed-data and featurestream apply first"
        ) from exc
    click.echo("materialized the batch views (stream views are kept online by featurestream run)")


@click.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@one_line_errors
def features(names: tuple[str, ...], as_json: bool) -> None:
    """List every view and feature: type, window, aggregation, entity, source, owner, freshness.

    NAMES (views, or features as view:feature) narrow the list.
    """
    from featurestream_app.discovery import describe_features, select_rows
    from streams.online import connect_online_store
    from streams.repo import open_store

    settings = load_settings()
    store = open_store(settings.repo_path, settings.online_redis_url)
    tiles = connect_online_store(settings.online_redis_url, timeout_s=1.0)
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
