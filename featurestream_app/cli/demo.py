"""``featurestream demo``: the end-to-end walk-through."""

from __future__ import annotations

import sys

import click

from .common import load_settings, one_line_errors


@click.command()
@click.option("--duration", default=30.0, show_default=True, help="Seconds of synthetic clicks.")
@click.option("--rate", default=1000.0, show_default=True, help="Clicks per second.")
@click.option("--users", default=500, show_default=True)
@one_line_errors
def demo(duration: float, rate: float, users: int) -> None:
    """Start the stack, stream clicks, and check features read through Feast against the events."""
    from featurestream_app.demo import run_demo

    ok = run_demo(load_settings(), duration_s=duration, rate=rate, users=users)
    sys.exit(0 if ok else 1)
