"""``featurestream run --processes N``: one engine process per share of the partitions.

Events are keyed by their entity, so each Kafka partition holds whole entities: a
process reading the partitions ``p % N == i`` owns its entities' state, its
partitions' watermarks and their progress, and exchanges nothing with the others
(Bytewax's cluster mode would route every item between processes by key, which
here is pure overhead). Each process has its own recovery state and offline log
files. This parent starts them, restores the online tiles when Redis lost them
(a child exits with :data:`LOST_EXIT` then) and restarts them all from their
snapshots; it stops them all when one fails or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featurestream.errors import ConfigError
from featurestream.events import contract_for_topic
from featurestream.settings import Settings

__all__ = ["LOST_EXIT", "check_shardable", "recovery_dir", "run_processes"]

LOST_EXIT = 75  # EX_TEMPFAIL: Redis lost the online tiles


def check_shardable(specs: Sequence[Any]) -> None:
    """Views keyed by anything but their topic's message key cannot be split by partition.

    Raises:
        ConfigError: naming the view.
    """
    for spec in specs:
        key = contract_for_topic(spec.topic).key_field
        if tuple(spec.join_keys) != (key,):
            raise ConfigError(
                f"view {spec.name!r} is keyed by {list(spec.join_keys)} but topic "
                f"{spec.topic!r} by {key!r}: its entities span partitions, so it cannot run "
                "in several processes; run it with --processes 1"
            )


def _die_with_parent() -> None:
    """In a child, before exec: the kernel sends SIGKILL when the parent dies, so a killed
    parent never leaves engine processes behind to clash with its restart."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def run_processes(
    settings: Settings,
    views: Sequence[str],
    count: int,
    *,
    stop_at_end: bool,
    restore: Any,
) -> int:
    """Run ``count`` engine processes until they end; return the exit status.

    Args:
        settings: This process's settings (children inherit the environment).
        views: The views named on the command line.
        count: Processes.
        stop_at_end: Children stop when their partitions are consumed.
        restore: Called (no arguments) to restore the online tiles from the log.
    """
    args = [sys.executable, "-m", "featurestream_app.cli", "run", *views]
    if stop_at_end:
        args.append("--stop-at-end")
    children: list[subprocess.Popen[bytes]] = []

    def terminate(signum: int, _frame: Any) -> None:
        _stop(children)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    while True:
        restore()
        children = []
        for index in range(count):
            env = {**os.environ}
            if settings.metrics_port:
                env["FEATURESTREAM_METRICS_PORT"] = str(settings.metrics_port + index)
            children.append(
                subprocess.Popen(
                    [*args, "--process-index", str(index), "--process-count", str(count)],
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads run here yet
                )
            )
        status = _wait(children)
        if status != LOST_EXIT:
            return status


def _wait(children: list[subprocess.Popen[bytes]]) -> int:
    """Wait until all end (0), or one fails: stop the others, return its status."""
    while True:
        codes = [c.poll() for c in children]
        failed = next((c for c in codes if c not in (None, 0)), None)
        if failed is not None:
            _stop(children)
            return failed
        if all(c == 0 for c in codes):
            return 0
        time.sleep(0.2)


def recovery_dir(settings: Settings, flow_key: str, index: int, count: int) -> Path:
    """Each process's Bytewax recovery state (one process keeps the old layout)."""
    base = settings.state_dir / "recovery" / flow_key
    return base if count == 1 else base / f"{index}of{count}"
