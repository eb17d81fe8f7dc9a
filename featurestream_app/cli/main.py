"""The ``featurestream`` command: the composition root of every process.

Each subcommand (one module per group: :mod:`.stack`, :mod:`.repo`, :mod:`.produce`,
:mod:`.engine`, :mod:`.history`, :mod:`.serve`, :mod:`.demo`, :mod:`.bench`) loads
:class:`~featurestream.settings.Settings` once, wires the adapters it needs and runs.
Errors of the project's tree become one line on stderr with the fix, never a
traceback.
"""

from __future__ import annotations

import logging
import sys
import warnings

import click

from . import bench, demo, engine, history, produce, repo, serve, stack

__all__ = ["cli", "main"]


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


for command in (
    stack.up,
    stack.down,
    stack.status,
    repo.apply,
    produce.produce,
    repo.seed_data_cmd,
    repo.materialize,
    repo.features,
    engine.run,
    history.backfill,
    history.check_consistency_cmd,
    serve.serve,
    serve.train_model_cmd,
    serve.serve_model_cmd,
    demo.demo,
    bench.bench,
):
    cli.add_command(command)


def main() -> None:
    """Console script entry point."""
    cli()
