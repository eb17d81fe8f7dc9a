"""Locks on a state directory: one engine per directory, one ``up``/``down`` at a time.

A lock is an ``flock`` on a file in the state directory, held for the life of the
process (the kernel releases it when the process ends, however it ends), with the
holder's pid and command line written in the file for the error message.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from featurestream.errors import ConfigError, StackError

__all__ = ["ENGINE_LOCK", "STACK_LOCK", "hold", "holder", "locked"]

ENGINE_LOCK = "engine.lock"
STACK_LOCK = "stack.lock"
_HELD: dict[Path, IO[str]] = {}


def _describe(info: dict[str, object]) -> str:
    argv = info.get("argv")
    command = " ".join(str(a) for a in argv) if isinstance(argv, list) else ""
    return f"pid {info.get('pid')} ({command or 'unknown command'})"


def holder(path: Path) -> str | None:
    """Who holds the lock at ``path`` (``pid N (command)``), or None when nobody does."""
    try:
        handle = path.open("r+")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                info = json.loads(handle.read() or "{}")
            except ValueError:
                info = {}
            return _describe(info)
        fcntl.flock(handle, fcntl.LOCK_UN)
        return None


def hold(path: Path, what: str) -> None:
    """Take the lock at ``path`` for the rest of this process.

    Raises:
        ConfigError: when another process holds it, naming that process.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        try:
            info = json.loads(handle.read() or "{}")
        except ValueError:
            info = {}
        handle.close()
        raise ConfigError(
            f"{what} {path.parent} is in use by {_describe(info)}; stop it, or give this "
            "one its own FEATURESTREAM_STATE_DIR"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "argv": sys.argv}))
    handle.flush()
    _HELD[path] = handle  # kept open: the lock lasts as long as this process


@contextlib.contextmanager
def locked(path: Path, wait_s: float = 120.0) -> Iterator[None]:
    """Hold the lock at ``path`` for the block, waiting up to ``wait_s`` for it.

    Raises:
        StackError: when it is still held by another process after ``wait_s``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    handle.seek(0)
                    raise StackError(
                        f"{path} is held by another featurestream command for over "
                        f"{wait_s:.0f} s; is one stuck?"
                    ) from None
                time.sleep(0.1)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "argv": sys.argv}))
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
