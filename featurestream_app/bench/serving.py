"""``featurestream bench serving``: Feast's feature server and ours, same data, one run.

Both serve the same applied repository, Redis and data (batch views materialized,
stream tiles written by ``featurestream run``). wrk drives each in turn with
``POST /get-online-features`` for one random user and the whole ``recommender_v1``
service (batch + stream + on-demand features): at full speed with 8 connections,
and paced at 1,000 requests/s. Results: ``serving.{json,md}``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from featurestream.errors import StackError
from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from featurestream_app.stack import cli_env, free_port, log_tail
from producers import EventProducer, TrafficConfig, TrafficGenerator

from .machine import describe_machine
from .workspace import bench_stack

__all__ = ["bench_serving", "running_server"]

_LUA = Path(__file__).with_name("wrk.lua")
_USERS = 20_000


def _wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise StackError("wrk is not installed; run scripts/setup-system.sh test (apt: wrk)")
    return found


def _prepare(settings: Settings, events: int) -> list[int]:
    """Batch data materialized and ``events`` stream events run through the engine."""
    from featurestream_app.seed import seed_data
    from streams.repo import open_store

    seed_data(settings.repo_path / "data", first_user=1, users=_USERS, items=1_000, seed=3)
    store = open_store(settings.repo_path, settings.online_redis_url)
    store.materialize_incremental(end_date=datetime.now(tz=UTC))
    codec = AvroCodec(load_contracts())
    now_ms = time.time_ns() // 1_000_000
    users: set[int] = set()
    with EventProducer(settings.bootstrap_servers) as producer:
        for topic, share in (("clicks", 0.5), ("impressions", 0.45), ("purchases", 0.05)):
            n = max(1, int(events * share))
            generator = TrafficGenerator(
                TrafficConfig(topic=topic, users=_USERS, items=1_000, seed=9), codec
            )
            times = [now_ms - 240_000 + i * 240_000 // n for i in range(n)]
            for emission in generator.batch(times):
                if emission.record is not None:
                    users.add(emission.record["user_id"])
                    producer.send_record(topic, emission.record)
    subprocess.run(
        [sys.executable, "-m", "featurestream_app.cli", "run", "--stop-at-end"],
        env=cli_env(
            settings,
            FEATURESTREAM_STATE_DIR=str(settings.state_dir / "engine"),
            FEATURESTREAM_METRICS_PORT="0",
        ),
        check=True,
        capture_output=True,
        timeout=1800,
    )
    return sorted(users)


@contextmanager
def running_server(
    name: str, command: Sequence[str], env: dict[str, str], port: int, log: Path
) -> Iterator[int]:
    """A server process started and answering ``/health``; yields its pid."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"{name} did not start; log {log}:\n{log_tail(log)}")
            time.sleep(0.3)
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _drive(
    port: int, users: Sequence[int], *, connections: int, seconds: int, rate: int = 0
) -> dict[str, Any]:
    env = {
        **os.environ,
        "USERS": ",".join(str(u) for u in users),
        # Paced: each connection waits between requests so that all of them together
        # send about ``rate`` req/s (2 ms of the period are left for the request itself).
        "DELAY_MS": str(max(1, round(connections * 1000 / rate) - 2)) if rate else "0",
    }
    result = subprocess.run(
        [
            _wrk(),
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "-s",
            str(_LUA),
            f"http://127.0.0.1:{port}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    line = next((x for x in result.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise StackError(f"unexpected wrk output: {result.stdout!r} {result.stderr!r}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds_run = raw["duration_us"] / 1e6
    return {
        "connections": connections,
        "target_rate": rate or None,
        "requests": raw["requests"],
        "req_per_s": round(raw["requests"] / seconds_run),
        "errors": raw["errors"],
        "non_2xx": raw["non_2xx"],
        **{k: round(raw[f"{k}_us"] / 1000, 3) for k in ("p50", "p90", "p99", "p999", "max")},
    }


def bench_serving(seconds: int, events: int, out_dir: Path, command: str) -> dict[str, Any]:
    """Run the benchmark and write ``serving.{json,md}``."""
    _wrk()
    results: dict[str, Any] = {
        "command": command,
        "seconds_per_run": seconds,
        "machine": describe_machine(),
    }
    with bench_stack() as (work, settings):
        users = _prepare(settings, events)
        sample = random.Random(5).sample(users, min(1000, len(users)))  # noqa: S311 - load
        env = cli_env(settings, FEATURESTREAM_REDIS_URL=settings.online_redis_url)
        feast_cli = str(Path(sys.executable).with_name("feast"))
        servers: dict[str, Callable[[int], list[str]]] = {
            "feast serve -w 2 --no-access-log": lambda port: [
                feast_cli,
                "-c",
                str(settings.repo_path),
                "serve",
                "-p",
                str(port),
                "-w",
                "2",
                "--no-access-log",
            ],
            "featurestream serve --workers 2": lambda port: [
                sys.executable,
                "-m",
                "featurestream_app.cli",
                "serve",
                "--port",
                str(port),
                "--workers",
                "2",
            ],
        }
        for name, build in servers.items():
            port = free_port()
            log = work / f"{name.split()[0]}.log"
            with running_server(name, build(port), env, port, log):
                _drive(port, sample, connections=8, seconds=2)  # warm up
                results[name] = {
                    "max": _drive(port, sample, connections=8, seconds=seconds),
                    "at_1000_rps": _drive(port, sample, connections=10, seconds=seconds, rate=1000),
                }
    feast = results["feast serve -w 2 --no-access-log"]["max"]["req_per_s"]
    ours = results["featurestream serve --workers 2"]["max"]["req_per_s"]
    results["speedup_req_per_s"] = round(ours / feast, 2) if feast else None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "serving.json").write_text(json.dumps(results, indent=2) + "\n")
    m = results["machine"]
    lines = [
        "# Serving\n",
        f"`{command}` on {m['cores']} cores ({m['cpu']}), Python {m['python']}, {m['when']}.\n",
        "`POST /get-online-features`, one random user of 1,000 per request, the whole "
        "`recommender_v1` service (batch, stream and on-demand features), wrk with 2 threads "
        "on the same machine as the server and Redis.\n",
        "| server | load | req/s | p50 ms | p99 ms | p99.9 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in servers:
        for load, label in (
            ("max", "8 connections, full speed"),
            ("at_1000_rps", "paced at 1,000 req/s"),
        ):
            r = results[name][load]
            lines.append(
                f"| `{name}` | {label} | {r['req_per_s']:,} | {r['p50']} | {r['p99']} | "
                f"{r['p999']} | {r['errors']} |"
            )
    lines.append(
        f"\nfeaturestream / Feast, req/s at full speed: **{results['speedup_req_per_s']}x**\n"
    )
    (out_dir / "serving.md").write_text("\n".join(lines) + "\n")
    return results
