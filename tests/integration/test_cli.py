"""The CLI as a user runs it: the local stack's life cycle and one-line errors."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from featurestream.settings import Settings
from featurestream_app.stack import free_port
from tests.support import run_cli


def _cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env={**os.environ, **env}, timeout=timeout, ok=False)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def _pids(text: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"\(pid (\d+)\)", text)]


def test_up_down_status_are_idempotent_and_leave_no_process(tmp_path: Path) -> None:
    env = {
        "FEATURESTREAM_STATE_DIR": str(tmp_path / "state"),
        "FEATURESTREAM_BROKER_PORT": str(free_port()),
        "FEATURESTREAM_REDIS_PORT": str(free_port()),
    }
    try:
        _up_down_cycle(env)
    finally:
        _cli(env, "down")


def _up_down_cycle(env: dict[str, str]) -> None:
    first = _cli(env, "up")
    assert first.returncode == 0, first.stderr
    pids = _pids(first.stdout)
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    assert "clicks" in first.stdout

    second = _cli(env, "up")
    assert second.returncode == 0, second.stderr
    assert _pids(second.stdout) == pids  # reported, not restarted

    status = _cli(env, "status")
    assert status.stdout.count("running") == 2

    stopped = _cli(env, "down")
    assert "broker" in stopped.stdout and "redis" in stopped.stdout
    assert not any(_alive(p) for p in pids)
    again = _cli(env, "down")
    assert again.returncode == 0 and "nothing was running" in again.stdout
    assert _cli(env, "status").stdout.count("stopped") == 2


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unreachable_broker_is_a_one_line_error_within_seconds(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    result = _cli(
        {
            "FEATURESTREAM_STATE_DIR": str(tmp_path),
            "FEATURESTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
            "FEATURESTREAM_CONNECT_TIMEOUT_S": "2",
        },
        "up",
    )
    # Bounded by the connect timeout (plus start-up), not a hang until the 60 s limit.
    assert time.monotonic() - started < 45
    _assert_one_line_error(result, f"127.0.0.1:{port}", "FEATURESTREAM_KAFKA_BOOTSTRAP")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:{port}/0", "http://nowhere"])
def test_wrong_redis_url_is_a_one_line_error(
    url: str, local_stack: Settings, tmp_path: Path
) -> None:
    result = _cli(
        {
            "FEATURESTREAM_STATE_DIR": str(tmp_path),
            "FEATURESTREAM_KAFKA_BOOTSTRAP": local_stack.bootstrap_servers,
            "FEATURESTREAM_REDIS_URL": url.format(port=free_port()),
        },
        "up",
    )
    _assert_one_line_error(result, "FEATURESTREAM_REDIS_URL")


def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _cli(
            {"FEATURESTREAM_STATE_DIR": str(tmp_path), "FEATURESTREAM_BROKER_PORT": str(port)}, "up"
        )
    _assert_one_line_error(result, str(port), "in use")


def test_invalid_setting_is_a_one_line_error(tmp_path: Path) -> None:
    result = _cli(
        {"FEATURESTREAM_STATE_DIR": str(tmp_path), "FEATURESTREAM_REDIS_PORT": "not-a-port"},
        "status",
    )
    _assert_one_line_error(result, "FEATURESTREAM_REDIS_PORT")


def test_run_without_broker_is_a_one_line_error(tmp_path: Path) -> None:
    result = _cli(
        {
            "FEATURESTREAM_STATE_DIR": str(tmp_path),
            "FEATURESTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        },
        "run",
    )
    _assert_one_line_error(result, "did not answer")
