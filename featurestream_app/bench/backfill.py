"""``featurestream bench backfill``: events/s of a backfill from Parquet (no Kafka)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from featurestream.events import AvroCodec, load_contracts
from featurestream_app.stack import cli_env
from producers import TrafficConfig, TrafficGenerator

from .machine import describe_machine
from .workspace import bench_stack

__all__ = ["bench_backfill"]

_CHUNK = 100_000
# The command prints its own rate, computed from the unrounded time (the printed
# seconds are rounded: a small run could print 0.00).
_RATE = re.compile(r"read (\d+) events in ([\d.]+) s \(([\d,]+) events/s\)")


def _write_clicks(path: Path, events: int, end_ms: int) -> None:
    """``events`` synthetic clicks (100k Zipf users) over the 50 minutes before ``end_ms``."""
    generator = TrafficGenerator(
        TrafficConfig(topic="clicks", users=100_000, seed=11), AvroCodec(load_contracts())
    )
    step = 3_000_000 / events
    start = end_ms - 3_000_000
    writer = None
    try:
        for first in range(0, events, _CHUNK):
            n = min(_CHUNK, events - first)
            times = [start + int((first + i) * step) for i in range(n)]
            rows = [e.record for e in generator.batch(times) if e.record is not None]
            table = pa.Table.from_pylist(rows)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _run(env: dict[str, str], *args: str) -> tuple[float, int, float, str]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "featurestream_app.cli", "backfill", *args],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall = time.perf_counter() - started
    match = _RATE.search(result.stdout)
    if match is None:
        raise RuntimeError(f"unexpected backfill output: {result.stdout!r}")
    rate = int(match.group(3).replace(",", ""))
    return float(match.group(2)), rate, wall, result.stdout


def bench_backfill(events: int, out_dir: Path, command: str) -> dict[str, Any]:
    """Run the benchmark and write ``backfill.{json,md}``."""
    results: dict[str, Any] = {"command": command, "events": events, "machine": describe_machine()}
    with bench_stack() as (work, settings):
        now_ms = time.time_ns() // 1_000_000
        parquet = work / "clicks.parquet"
        _write_clicks(parquet, events, now_ms)
        results["parquet_bytes"] = parquet.stat().st_size
        env = cli_env(settings)
        window = ("--from", str(now_ms - 3_600_000), "--to", str(now_ms + 1), "--events")
        for name, extra in (("offline", ()), ("offline_and_online", ("--online",))):
            seconds, rate, wall, output = _run(
                env, "user_click_stats", *window, str(parquet), *extra
            )
            results[name] = {
                "seconds": round(seconds, 2),
                "events_per_s": rate,
                "wall_seconds_with_process_start": round(wall, 2),
                "output": output.strip(),
            }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "backfill.json").write_text(json.dumps(results, indent=2) + "\n")
    m, off, on = results["machine"], results["offline"], results["offline_and_online"]
    (out_dir / "backfill.md").write_text(
        "# Backfill\n\n"
        f"`{command}` on {m['cores']} cores ({m['cpu']}), Python {m['python']}, {m['when']}.\n\n"
        f"`featurestream backfill user_click_stats --events clicks.parquet` over {events:,} "
        "clicks (100k Zipf users, event times over 50 min) in one Parquet file "
        f"({results['parquet_bytes'] / 1e6:.1f} MB), no Kafka; every event is checked "
        "against the contract (types, nulls, bounds), deduplicated and written to the "
        "offline log:\n\n"
        f"- offline log only: **{off['events_per_s']:,} events/s** ({off['seconds']} s; "
        f"{off['wall_seconds_with_process_start']} s with process start)\n"
        f"- offline log and online tiles (`--online`, folded by the stream's tile code and "
        f"written to Redis): **{on['events_per_s']:,} events/s** ({on['seconds']} s)\n"
    )
    return results
