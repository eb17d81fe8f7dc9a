"""``featurestream up``, ``down``, ``status``: the local stack."""

from __future__ import annotations

import click

from .common import load_settings, one_line_errors


@click.command()
@one_line_errors
def up() -> None:
    """Start the local stack (broker + Redis) or check the configured one; create topics."""
    from featurestream_app.stack import stack_topics
    from featurestream_app.stack import up as stack_up

    settings = load_settings()
    for svc in stack_up(settings):
        click.echo(f"{svc.name:<8} {svc.endpoint:<32} {svc.state}")
    click.echo(f"topics   {', '.join(stack_topics(settings))}")
    click.echo(f"state    {settings.state_dir.resolve()}  (stop with: featurestream down)")


@click.command()
@one_line_errors
def down() -> None:
    """Stop every process the local stack started (by pid)."""
    from featurestream_app.stack import down as stack_down

    stopped = stack_down(load_settings())
    click.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@click.command()
@one_line_errors
def status() -> None:
    """Show what runs and where."""
    from featurestream_app.stack import status as stack_status

    for svc in stack_status(load_settings()):
        click.echo(f"{svc.name:<8} {svc.endpoint:<32} {svc.state}")
