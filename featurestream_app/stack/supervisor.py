"""Supervised background processes: pid files, logs, readiness with a deadline.

A process is "ours" only when its pid file exists, the pid is alive and its
command line still is the one we started (so a recycled pid is never killed).
Processes are stopped by pid, never by name patterns.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from featurestream.errors import PortInUse, StackError

__all__ = ["Running", "Supervisor", "free_port", "log_tail", "port_open"]


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on the loopback interface nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _identity(pid: int) -> tuple[str, str] | None:
    """(executable, start time) of ``pid``: together they survive process-title
    rewrites (redis does) and tell a recycled pid apart."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            started = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    return exe, started


@dataclass(frozen=True)
class Running:
    """A supervised process that is alive."""

    name: str
    pid: int
    argv: tuple[str, ...]
    endpoint: str
    log: Path


class Supervisor:
    """Starts, finds and stops the background processes of one state directory.

    Args:
        state_dir: Where pid files (``run/``) and logs (``logs/``) live.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._run = state_dir / "run"
        self._logs = state_dir / "logs"

    def _pid_file(self, name: str) -> Path:
        return self._run / f"{name}.json"

    def log_file(self, name: str) -> Path:
        """The log of process ``name``."""
        return self._logs / f"{name}.log"

    def find(self, name: str) -> Running | None:
        """The running process ``name``, or None (a stale pid file is removed)."""
        path = self._pid_file(name)
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        pid, argv = int(info["pid"]), tuple(info["argv"])
        if _alive(pid) and _identity(pid) == (info.get("exe"), info.get("started")):
            return Running(name, pid, argv, info.get("endpoint", ""), self.log_file(name))
        path.unlink(missing_ok=True)
        return None

    def all_running(self) -> list[Running]:
        """Every supervised process that is alive, by name."""
        if not self._run.is_dir():
            return []
        found = (self.find(p.stem) for p in sorted(self._run.glob("*.json")))
        return [r for r in found if r is not None]

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        endpoint: str,
        ready: Callable[[], bool],
        deadline_s: float = 60.0,
        env: Mapping[str, str] | None = None,
        port: tuple[str, int] | None = None,
    ) -> Running:
        """Start ``argv`` in the background and wait until ``ready()`` holds.

        Raises:
            PortInUse: when ``port`` already accepts connections (another process).
            StackError: when the process exits or is not ready by the deadline,
                with the end of its log.
        """
        existing = self.find(name)
        if existing is not None:
            return existing
        if port is not None and port_open(*port):
            host, number = port
            raise PortInUse(
                f"{name}: port {number} on {host} is already in use by another process; stop "
                f"it or choose another port (FEATURESTREAM_{name.upper()}_PORT)"
            )
        self._run.mkdir(parents=True, exist_ok=True)
        self._logs.mkdir(parents=True, exist_ok=True)
        log_path = self.log_file(name)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        identity = None
        for _ in range(100):  # /proc/PID/exe names the new binary once exec has happened
            identity = _identity(proc.pid)
            if identity is None or identity[0] == os.path.realpath(argv[0]):
                break
            time.sleep(0.01)
        exe, started = identity or ("", "")
        self._pid_file(name).write_text(
            json.dumps(
                {
                    "pid": proc.pid,
                    "argv": list(argv),
                    "endpoint": endpoint,
                    "exe": exe,
                    "started": started,
                }
            )
        )
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._pid_file(name).unlink(missing_ok=True)
                raise StackError(
                    f"{name} exited with code {proc.returncode} at start; "
                    f"last log lines ({log_path}):\n{log_tail(log_path)}"
                )
            if ready():
                return Running(name, proc.pid, tuple(argv), endpoint, log_path)
            time.sleep(0.05)
        self.stop(name)
        raise StackError(
            f"{name} was not ready within {deadline_s:.0f} s; last log lines ({log_path}):\n"
            f"{log_tail(log_path)}"
        )

    def stop(self, name: str, timeout_s: float = 10.0) -> bool:
        """Stop process ``name`` (SIGTERM, then SIGKILL after ``timeout_s``).

        Returns:
            True when a running process was stopped.
        """
        running = self.find(name)
        if running is None:
            return False
        _signal(running.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _alive(running.pid) and time.monotonic() < deadline:
            _reap(running.pid)
            time.sleep(0.05)
        if _alive(running.pid):
            _signal(running.pid, signal.SIGKILL)
            while _alive(running.pid):
                _reap(running.pid)
                time.sleep(0.05)
        _reap(running.pid)
        self._pid_file(name).unlink(missing_ok=True)
        return True


def _signal(pid: int, sig: int) -> None:
    # Each process leads its own session (start_new_session): signal the group so
    # helpers it spawned stop too.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError as exc:
        raise StackError(f"not allowed to stop pid {pid}: {exc}") from exc


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(path: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of a log file (for error messages)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
