"""Backfill and online/offline consistency, against the real broker, Redis and log.

* A backfill of the events a streaming run consumed (from Parquet, JSON Lines and
  a Kafka replay) writes the same offline log and the same online values.
* Late events the stream dropped online reach training data after a backfill.
* ``check-consistency`` finds 0 mismatches on a streaming run's output, and finds
  the mismatches when a tile is corrupted (negative control).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis

from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from producers import EventProducer, TrafficConfig, TrafficGenerator
from streams.core import ViewSpec, read_view
from streams.core.reference import window_value
from streams.definitions import compile_registry
from streams.offline.feast_store import log_root
from streams.offline.log import read_view_log
from streams.online import connect_online_store
from streams.online.redis.layout import tile_key
from streams.repo import apply_repo, open_store
from tests.support import copy_feature_repo, run_cli, run_engine_to_end, stack_env

VIEWS = ("user_click_stats", "user_purchase_stats")


def _cli(
    settings: Settings, repo: Path, *args: str, redis_db: int = 0, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    url = f"redis://127.0.0.1:{settings.redis_port}/{redis_db}"
    return run_cli(*args, env=stack_env(settings, repo, FEATURESTREAM_REDIS_URL=url), ok=ok)


def _produce(
    settings: Settings, topic: str, first_user: int, times: list[int], **kw: Any
) -> list[Any]:
    generator = TrafficGenerator(
        TrafficConfig(
            topic=topic, users=20, items=40, seed=first_user, first_user=first_user, **kw
        ),
        AvroCodec(load_contracts()),
    )
    emissions = generator.batch(times)
    with EventProducer(settings.bootstrap_servers) as producer:
        for emission in emissions:
            assert emission.record is not None
            producer.send_record(topic, emission.record)
    return [e.record for e in emissions]


def _applied(repo: Path, view: ViewSpec, users: set[int]) -> dict[tuple[Any, ...], Any]:
    root = log_root(open_store(repo, "redis://127.0.0.1:1/0").config)
    logged = read_view_log(root, view, {(u,) for u in users})
    return {k: (v.times_ms, v.columns) for k, v in logged.items()}


def _specs(repo: Path, settings: Settings) -> dict[str, ViewSpec]:
    return {s.name: s for s in compile_registry(open_store(repo, settings.online_redis_url))}


def test_backfill_from_files_and_kafka_equals_the_streaming_run(
    local_stack: Settings, tmp_path: Path
) -> None:
    first_user = 70_000_000 + (uuid.uuid4().int % 1000) * 100
    now_ms = time.time_ns() // 1_000_000
    clicks = _produce(
        local_stack,
        "clicks",
        first_user,
        [now_ms - 20_000 + i * 25 for i in range(600)],
        duplicate_fraction=0.05,
    )
    purchases = _produce(
        local_stack, "purchases", first_user, [now_ms - 20_000 + i * 400 for i in range(40)]
    )
    users = {r["user_id"] for r in clicks + purchases}

    streamed = copy_feature_repo(tmp_path / "streamed")
    apply_repo(streamed, local_stack.online_redis_url)
    run_engine_to_end(local_stack, streamed)

    # The same events as files: clicks as Parquet (event_time a timestamp column),
    # purchases as JSON Lines.
    files = tmp_path / "events"
    files.mkdir()
    frame = pd.DataFrame(clicks)
    frame["event_time"] = pd.to_datetime(frame["event_time"], unit="ms", utc=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), files / "clicks.parquet")
    (files / "purchases.jsonl").write_text("\n".join(json.dumps(r) for r in purchases))

    # Day boundaries: every tile size divides a day, so --online writes all the tiles.
    day = now_ms // 86_400_000 * 86_400_000
    window = ("--from", str(day - 86_400_000), "--to", str(day + 2 * 86_400_000))
    from_files = copy_feature_repo(tmp_path / "files")
    apply_repo(from_files, local_stack.online_redis_url)
    out = _cli(
        local_stack, from_files, "backfill", *window, "--events", str(files), "--online", redis_db=1
    ).stdout
    assert "user_click_stats: " in out and "user_purchase_stats: " in out, out
    from_kafka = copy_feature_repo(tmp_path / "kafka")
    apply_repo(from_kafka, local_stack.online_redis_url)
    _cli(
        local_stack, from_kafka, "backfill", *window, "--events", "clicks", "--events", "purchases"
    )

    specs = _specs(streamed, local_stack)
    for name in VIEWS:
        expected = _applied(streamed, specs[name], users)
        assert expected and sum(len(t) for t, _ in expected.values()) > 0
        assert _applied(from_files, specs[name], users) == expected, name
        assert _applied(from_kafka, specs[name], users) == expected, name

    # Online: the backfilled tiles (Redis db 1) read the same as the stream's (db 0),
    # now and as the windows slide.
    stream_db = connect_online_store(f"redis://127.0.0.1:{local_stack.redis_port}/0")
    backfill_db = connect_online_store(f"redis://127.0.0.1:{local_stack.redis_port}/1")
    compared = 0
    for name in VIEWS:
        spec = specs[name]
        for user in users:
            ((theirs,),), ((ours,),) = (
                db.read_tiles([(spec, [str(user)])]) for db in (stream_db, backfill_db)
            )
            newest = (
                ours.newest_event_ms if ours else None,
                theirs.newest_event_ms if theirs else None,
            )
            assert newest[0] == newest[1]
            for read_ms in (now_ms + 1_000, now_ms + 200_000, now_ms + 3_000_000):
                assert read_view(spec, ours, read_ms) == read_view(spec, theirs, read_ms)
                compared += 1
    assert compared >= 3 * len(users)


def test_late_events_dropped_online_are_repaired_offline_by_a_backfill(
    local_stack: Settings, tmp_path: Path
) -> None:
    user = 71_000_000 + (uuid.uuid4().int % 1000) * 10
    now_ms = time.time_ns() // 1_000_000
    on_time = _produce(
        local_stack, "clicks", user, [now_ms - 15_000 + i * 100 for i in range(60)], jitter_ms=0
    )
    # Older than the watermark minus the 30 s lateness when they arrive: dropped online.
    late = _produce(
        local_stack, "clicks", user, [now_ms - 600_000 + i * 1000 for i in range(25)], jitter_ms=0
    )
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, local_stack.online_redis_url)
    run_engine_to_end(local_stack, repo)

    store = open_store(repo, local_stack.online_redis_url)
    spec = _specs(repo, local_stack)["user_click_stats"]
    agg = next(a for a in spec.aggregations if a.name == "clicks_last_1h")
    users = sorted({r["user_id"] for r in on_time + late})
    read_ms = now_ms + 1_000
    entity_df = pd.DataFrame(
        {
            "user_id": users,
            "event_timestamp": pd.to_datetime([read_ms] * len(users), unit="ms", utc=True),
        }
    )

    def training() -> list[int]:
        return (
            store.get_historical_features(
                entity_df=entity_df, features=["user_click_stats:clicks_last_1h"]
            )
            .to_df()
            .sort_values("user_id")["clicks_last_1h"]
            .tolist()
        )

    def oracle(events: list[dict[str, Any]]) -> list[int]:
        return [
            window_value(
                [e for e in events if e["user_id"] == u],
                function=agg.function,
                column=agg.column,
                window_ms=agg.window_ms,
                tile_ms=agg.tile_ms,
                read_time_ms=read_ms,
            )
            for u in users
        ]

    assert training() == oracle(on_time)
    assert oracle(on_time) != oracle(on_time + late)  # the late events matter

    _cli(
        local_stack,
        repo,
        "backfill",
        "user_click_stats",
        "--from",
        "now-2h",
        "--to",
        "now",
        "--events",
        "clicks",
    )
    assert training() == oracle(on_time + late)


def test_check_consistency_reports_zero_mismatches_and_catches_a_corrupted_tile(
    local_stack: Settings, tmp_path: Path
) -> None:
    first_user = 72_000_000 + (uuid.uuid4().int % 1000) * 100
    now_ms = time.time_ns() // 1_000_000
    for topic, count in (("clicks", 400), ("impressions", 400), ("purchases", 40)):
        _produce(
            local_stack,
            topic,
            first_user,
            [now_ms - 15_000 + i * (15_000 // count) for i in range(count)],
        )
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, local_stack.online_redis_url)
    run_engine_to_end(local_stack, repo)

    args = ("check-consistency", "--entities", "15", "--rounds", "2", "--interval", "0.5", "--json")
    report = json.loads(_cli(local_stack, repo, *args).stdout)
    assert report["mismatches"] == 0, report
    assert set(report["entities"]) == {
        "user_click_stats",
        "user_impression_stats",
        "user_purchase_stats",
    }
    assert report["compared"] >= 2 * 15 * 8
    assert all(f["compared"] > 0 for f in report["features"].values())

    # Negative control: one count tile made wrong online must be reported.
    spec = _specs(repo, local_stack)["user_click_stats"]
    client = redis.Redis.from_url(local_stack.online_redis_url)
    slot = next(a.slot for a in spec.aggregations if a.name == "clicks_last_1h")
    for key in client.scan_iter(match=tile_key(spec.project, spec.name, "*")):
        fields = [f for f in client.hkeys(key) if f.decode().startswith(slot + ":")]
        for field in fields:
            client.hset(key, field, b"1000000")
    result = _cli(local_stack, repo, *args, ok=False)
    assert result.returncode == 1
    bad = json.loads(result.stdout)["features"]
    assert bad["user_click_stats:clicks_last_1h"]["mismatches"] > 0
    assert bad["user_click_stats:clicks_last_1h"]["examples"][0]["online"] >= 1_000_000
    assert bad["user_impression_stats:impressions_last_1h"]["mismatches"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "2026-01-01T00:00:00", "--to", "now"), "has no timezone"),
        (("--from", "yesterday", "--to", "now"), "'yesterday' is not a time"),
        (("--from", "now", "--to", "now-1h"), "empty backfill range"),
        (("--from", "2001-01-01T00:00:00Z", "--to", "2001-01-02T00:00:00Z"), "no events of"),
        (("user_clicks_stats", "--from", "now-1h", "--to", "now"), "unknown stream feature view"),
    ],
)
def test_backfill_bad_input_is_one_line(
    local_stack: Settings, repo: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    events = tmp_path / "clicks.jsonl"
    now_ms = time.time_ns() // 1_000_000
    generator = TrafficGenerator(TrafficConfig(users=3), AvroCodec(load_contracts()))
    events.write_text("\n".join(json.dumps(e.record) for e in generator.batch([now_ms - 1000] * 5)))
    result = _cli(local_stack, repo, "backfill", *args, "--events", str(events), ok=False)
    assert result.returncode == 2, result
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr


def test_unknown_view_and_feature_names_are_one_line_with_near_matches(
    local_stack: Settings, repo: Path
) -> None:
    result = _cli(local_stack, repo, "features", "user_click_stats:clicks_last_5m", ok=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "unknown feature 'user_click_stats:clicks_last_5m'" in result.stderr
    assert "did you mean user_click_stats:clicks_last_5min" in result.stderr
    result = _cli(local_stack, repo, "check-consistency", "user_clicks_stats", ok=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "did you mean user_click_stats" in result.stderr
    rows = json.loads(_cli(local_stack, repo, "features", "user_profile", "--json").stdout)
    assert rows and {r["view"] for r in rows} == {"user_profile"}
