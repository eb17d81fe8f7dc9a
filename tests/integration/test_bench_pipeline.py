"""A tiny run of ``featurestream bench pipeline``: the benchmark code keeps working.

Timings are not asserted (they are the benchmark's output, not a property); what
is checked is that every measurement ran on real components and is consistent.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.support import FEATURESTREAM

EVENTS = 6_000
MEMORY_USERS = 3_000


def test_pipeline_benchmark_writes_a_consistent_report(tmp_path: Path) -> None:
    out = tmp_path / "results"
    subprocess.run(
        [
            *FEATURESTREAM,
            "bench",
            "pipeline",
            "--events",
            str(EVENTS),
            "--users",
            "500",
            "--baseline-events",
            "2000",
            "--freshness-seconds",
            "3",
            "--memory-users",
            str(MEMORY_USERS),
            "--serving-seconds",
            "1",
            "--serving-events",
            "1000",
            "--backfill-events",
            "2000",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        # The servers of a smoke run wait for a loaded machine's Redis (a bench run keeps
        # the 50 ms default).
        env={**os.environ, "FEATURESTREAM_SERVE_ONLINE_TIMEOUT_MS": "5000"},
        timeout=1500,
    )
    results = json.loads((out / "pipeline.json").read_text())
    assert results["ceiling"]["events"] == EVENTS
    # Each engine run claimed every event online (checked against Redis progress).
    assert [e["processes"] for e in results["engine"]] == [1, 2]
    assert all(e["events"] == EVENTS and e["events_per_s"] > 0 for e in results["engine"])
    baseline = results["baseline"]
    assert baseline["events"] == 2000 and baseline["rows_pushed"] > 0
    for fresh in (results["freshness"], results["freshness_light"]):
        assert fresh["probes_never_readable"] == 0
        assert len(fresh["latencies_ms"]) == fresh["probes"] > 0
        assert fresh["broker_only"]["p50_ms"] > 0
        assert fresh["cores_busy"]["engine"] > 0
    memory = results["memory"]
    assert memory["redis_keys"] == MEMORY_USERS  # one tile hash per active user
    assert memory["engine_rss_bytes"] >= memory["marginal_from_rss_bytes"] > 0
    assert results["serving"]["featurestream serve --workers 2"]["max"]["non_2xx"] == 0
    assert results["backfill"]["offline"]["events_per_s"] > 0
    report = (out / "pipeline.md").read_text()
    for section in ("## Throughput", "## Freshness", "## Serving", "## Memory", "## Backfill"):
        assert section in report
    assert results["command"] in report
    for image in ("pipeline-throughput.png", "pipeline-latency.png"):
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
