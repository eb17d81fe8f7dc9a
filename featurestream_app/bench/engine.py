"""``featurestream bench engine``: engine throughput, state size and Feast read latency.

On a fresh embedded stack: produce N clicks (100k Zipf users), then time
``featurestream run --stop-at-end`` over them (a process, as users run it), then
read ``user_click_stats`` through ``FeatureStore.get_online_features`` for single
random users. State size is measured by applying the same events to the engine's
per-entity state object.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from featurestream.events import AvroCodec, load_contracts
from featurestream_app.stack import cli_env
from featurestream_app.traffic import KafkaSink, produce_generated
from producers import Emission, EventProducer, TrafficConfig, TrafficGenerator

from .machine import describe_machine
from .workspace import bench_stack

__all__ = ["bench_engine"]

VIEW = "user_click_stats"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _state_size(view: Any, records: list[dict[str, Any]]) -> dict[str, float]:
    from streams.core import EntityTiles

    tracemalloc.start()
    states: dict[int, EntityTiles] = {}
    for record in records:
        state = states.get(record["user_id"])
        if state is None:
            state = states[record["user_id"]] = EntityTiles()
        state.apply(view, "k", record)
    in_memory, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    packed = sum(len(s.pack()) for s in states.values())
    n = len(states)
    return {
        "active_entities": n,
        "bytes_in_memory_per_entity": round(in_memory / n),
        "bytes_packed_per_entity": round(packed / n),
    }


def bench_engine(events: int, reads: int, out_dir: Path, command: str) -> dict[str, Any]:
    """Run the benchmark and write ``engine.{json,md}``."""
    from streams.definitions import compile_registry
    from streams.repo import open_store

    results: dict[str, Any] = {"command": command, "events": events, "machine": describe_machine()}
    with bench_stack(partitions=4) as (work, settings):
        repo = settings.repo_path
        store = open_store(repo, settings.online_redis_url)
        view = next(v for v in compile_registry(store) if v.name == VIEW)
        records: list[dict[str, Any]] = []

        def keep(emission: Emission) -> None:
            if emission.record is not None:
                records.append(emission.record)

        generator = TrafficGenerator(
            TrafficConfig(topic="clicks", users=100_000, seed=7), AvroCodec(load_contracts())
        )
        now_ms = time.time_ns() // 1_000_000
        rate = events / 3000  # spread over the last 50 minutes
        produce_generated(
            generator,
            KafkaSink(EventProducer(settings.bootstrap_servers)),
            rate=rate,
            total=events,
            pace=False,
            start_ms=now_ms - int(events / rate * 1000),
            on_emission=keep,
        )

        from streams.repo import apply_repo

        for processes, db in ((2, 1), (1, 0)):  # the 1-process run last: reads use db 0
            url = f"redis://127.0.0.1:{settings.redis_port}/{db}"
            apply_repo(repo, url)
            env = cli_env(
                settings,
                FEATURESTREAM_STATE_DIR=str(work / f"s{processes}"),
                FEATURESTREAM_METRICS_PORT="0",
                FEATURESTREAM_REDIS_URL=url,
                # The runs share the offline log: no restore from it into the next run's db.
                FEATURESTREAM_RESTORE_ONLINE="false",
            )
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "featurestream_app.cli",
                    "run",
                    VIEW,
                    "--stop-at-end",
                    "--processes",
                    str(processes),
                ],
                env=env,
                check=True,
                capture_output=True,
                timeout=3600,
            )
            elapsed = time.perf_counter() - started
            suffix = "" if processes == 1 else f"_{processes}_processes"
            results[f"run{suffix}_seconds"] = round(elapsed, 2)
            results[f"run{suffix}_events_per_s"] = round(events / elapsed)

        users = sorted({r["user_id"] for r in records})
        features = [f"{VIEW}:{a.name}" for a in view.aggregations]
        rng = random.Random(1)  # noqa: S311 - sampling users to read, not security
        for _ in range(50):  # warm up
            store.get_online_features(features=features, entity_rows=[{"user_id": users[0]}])
        latencies = []
        for _ in range(reads):
            user = rng.choice(users)
            t0 = time.perf_counter()
            store.get_online_features(features=features, entity_rows=[{"user_id": user}])
            latencies.append((time.perf_counter() - t0) * 1000)
        results["read_ms"] = {
            "p50": round(statistics.median(latencies), 3),
            "p99": round(_percentile(latencies, 0.99), 3),
            "reads": reads,
        }
        results["state"] = _state_size(view, records)
        results["aggregations"] = len(view.aggregations)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "engine.json").write_text(json.dumps(results, indent=2) + "\n")
    m, st, rd = results["machine"], results["state"], results["read_ms"]
    (out_dir / "engine.md").write_text(
        "# Engine\n\n"
        f"`{command}` on {m['cores']} cores ({m['cpu']}), Python {m['python']}, {m['when']}.\n\n"
        f"- `featurestream run {VIEW} --stop-at-end` over {events:,} clicks (100k Zipf users, "
        f"event times over 50 min), one process, broker and Redis on the same machine, "
        f"including process start: **{results['run_events_per_s']:,} events/s** "
        f"({results['run_seconds']} s); with `--processes 2` (4 partitions): "
        f"**{results['run_2_processes_events_per_s']:,} events/s** "
        f"({results['run_2_processes_seconds']} s).\n"
        f"- Engine state per active entity ({st['active_entities']:,} entities, the view's "
        f"{results['aggregations']} aggregations): "
        f"**{st['bytes_in_memory_per_entity']:,} B in memory**, "
        f"{st['bytes_packed_per_entity']:,} B packed (how a shard holds it between the "
        "epochs it is active in).\n"
        f"- `FeatureStore.get_online_features`, one entity, all features of `{VIEW}` merged "
        f"from tiles, in process: **p50 {rd['p50']} ms, p99 {rd['p99']} ms** ({reads:,} reads).\n"
    )
    return results
