"""``featurestream bench pipeline``: throughput, freshness, serving, memory and backfill
in one run, side by side with the ceiling and the baseline a Feast user builds.

On a fresh embedded stack (broker, Redis, everything on this machine):

1. produce N clicks of the demo stream (Zipf users, event times over the last
   50 minutes) into a 4-partition topic;
2. (a) the ceiling: consume + decode only (confluent-kafka + fastavro);
3. (b) ``featurestream run user_click_stats --stop-at-end`` with 1 and with 2
   processes, each into its own Redis database and state: events/s from the first
   progress the engine writes online to the last, watched in Redis (and with the
   process start, from launch to exit);
4. (c) the Feast-docs baseline (:mod:`featurestream_app.bench.baseline`): Bytewax
   ``KafkaSource`` -> decode -> sliding windows -> ``FeatureStore.push``;
5. freshness: the engine (the faster process count) tails the topic while clicks are
   produced at half of (b)'s best rate; probe clicks of fresh users are timed from
   their produce call until ``featurestream serve`` returns their count;
6. memory: on a second stack, 2 clicks each for ``memory_users`` users: engine RSS
   growth per active entity and Redis bytes per entity;
7. serving (``bench serving``) and backfill (``bench backfill``) on their own stacks.

Results: ``pipeline.json``, ``pipeline.md`` and PNG plots under ``out_dir``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .freshness import measure_freshness
from .machine import describe_machine
from .memory import measure_memory
from .runs import (
    PARTITIONS,
    consume_decode,
    db_url,
    produce_stream,
    project_of,
    run_engine_timed,
)
from .workspace import bench_stack

__all__ = ["bench_pipeline"]


def bench_pipeline(
    events: int,
    users: int,
    out_dir: Path,
    command: str,
    *,
    baseline_events: int,
    freshness_seconds: float,
    memory_users: int,
    serving_seconds: int,
    serving_events: int,
    backfill_events: int,
    timeout_s: float = 3600,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run every measurement and write ``pipeline.{json,md}`` and the plots."""
    from .backfill import bench_backfill
    from .baseline import run_baseline, write_baseline_repo
    from .report import write_pipeline_report
    from .serving import bench_serving

    results: dict[str, Any] = {"command": command, "machine": describe_machine()}
    with bench_stack(partitions=PARTITIONS) as (work, settings):
        project = project_of(settings)
        progress(f"producing {events:,} clicks of {users:,} users")
        results["produce"] = produce_stream(settings, events, users, seed=7) | {"users": users}
        progress("(a) consume + decode")
        results["ceiling"] = consume_decode(settings.bootstrap_servers, "clicks", events, timeout_s)
        engines = []
        for processes, db in ((1, 1), (2, 2)):
            progress(f"(b) featurestream run, {processes} process(es)")
            engines.append(run_engine_timed(settings, processes, db, work, events, project))
        results["engine"] = engines
        n = min(events, baseline_events)
        progress(f"(c) Feast-docs baseline over {n:,} clicks")
        # The reference: windows close on new input and at the end (no wall-clock
        # wake-ups, which on a backlog re-run every open window; bytewax#578).
        repo = write_baseline_repo(work / "baseline", db_url(settings, 3))
        results["baseline"] = run_baseline(
            settings.bootstrap_servers, "clicks", repo, n, timeout_s, wake_on_window_close=False
        )
        # As the docs' examples leave EventClock (slower on a backlog): a sixth of the run.
        repo = write_baseline_repo(work / "baseline-docs-clock", db_url(settings, 4))
        results["baseline_docs_clock"] = run_baseline(
            settings.bootstrap_servers, "clicks", repo, max(100, n // 6), timeout_s
        )
        best = max(engines, key=lambda e: e["events_per_s"])
        # Half the best rate, but no more events than the run itself has per second of
        # freshness measurement (a tiny run's rate says little).
        rate = max(1, min(best["events_per_s"] // 2, events // max(1, int(freshness_seconds))))
        # The light load first, on the shorter log: in an earlier run, after the heavy
        # load, the local broker alone kept 1.3 cores busy at 1,000 events/s.
        light = min(rate, 1_000)
        progress(f"freshness at {light:,} clicks/s for {freshness_seconds / 2} s")
        results["freshness_light"] = measure_freshness(
            settings, work, best, light, freshness_seconds / 2
        ) | {"engine_processes": best["processes"]}
        progress(f"freshness at {rate:,} clicks/s for {freshness_seconds} s")
        results["freshness"] = measure_freshness(settings, work, best, rate, freshness_seconds) | {
            "engine_processes": best["processes"]
        }
    progress(f"memory with {memory_users:,} users")
    results["memory"] = measure_memory(memory_users, timeout_s)
    progress("serving")
    results["serving"] = bench_serving(
        serving_seconds, serving_events, out_dir, command + " (serving)"
    )
    progress("backfill")
    results["backfill"] = bench_backfill(backfill_events, out_dir, command + " (backfill)")
    ceiling = results["ceiling"]["events_per_s"]
    two = next(e for e in engines if e["processes"] == 2)["events_per_s"]
    base = results["baseline"]["events_per_s"]
    results["ratios"] = {
        "engine_2p_over_ceiling": round(two / ceiling, 3),
        "engine_2p_over_baseline": round(two / base, 1) if base else None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "pipeline.json").write_text(json.dumps(results, indent=2) + "\n")
    write_pipeline_report(results, out_dir)
    return results
