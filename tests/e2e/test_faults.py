"""The fault suite: the whole path in containers while the engine is killed with
SIGKILL at random points, Redis restarts empty and later evicts the tiles to free
memory, and a window of the view is changed (applied, the engine restarted on it),
with 1% malformed (six kinds, plus huge messages and events from the future), 1%
late and 2% duplicated events, and producer clocks running 4.5 minutes fast.
Online values, the offline log and the dead-letter topic are checked against an
oracle computed from what the broker acknowledged (with the changed definition).

Every protection has a negative control: the same scenario with duplicate detection
off, with tile state not resumed after a crash, with the watermark moved by event
times alone, or with the store's evictions not looked at, must be caught.

CI runs a short scenario; ``make soak`` runs a long one (``FAULTS_EVENTS``,
``FAULTS_KILLS``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from confluent_kafka import Producer
from testcontainers.core.container import DockerContainer

from featurestream.events import AvroCodec, load_contracts
from featurestream_app.stack import free_port
from producers import TrafficConfig, TrafficGenerator
from streams.core.reference import classify_partition, view_values
from streams.definitions import compile_registry
from streams.offline.feast_store import log_root
from streams.offline.log import read_view_log
from streams.online import ProgressKey, ViewState, connect_online_store, evicted_since
from streams.repo import apply_repo, open_store
from tests.e2e.conftest import REDIS_IMAGE, kafka_container
from tests.support import (
    FEATURESTREAM,
    consume_all,
    copy_feature_repo,
    evict_tiles,
    run_cli,
    wait_until,
)

EVENTS = int(os.environ.get("FAULTS_EVENTS", "3000"))
KILLS = int(os.environ.get("FAULTS_KILLS", "3"))
USERS = 60
LATENESS_MS = 30_000


@dataclass
class Stats:
    """What one scenario saw."""

    kills: int = 0
    redis_restarts: int = 0
    evictions: int = 0
    definition_changes: int = 0
    recovery_s: list[float] = field(default_factory=list)
    mismatches: list[Any] = field(default_factory=list)
    applied: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    injected_bad: Counter[str] = field(default_factory=Counter)
    log_missing: int = 0
    log_extra: int = 0


@pytest.fixture(scope="module")
def kafka() -> Iterator[str]:
    """The suite's own broker: lateness is per partition, other tests' events must not
    share its partitions."""
    port = free_port()
    container = kafka_container(port)
    container.start()
    yield f"127.0.0.1:{port}"
    container.stop()


@pytest.fixture(scope="module")
def redis_container() -> Iterator[tuple[DockerContainer, int]]:
    """A Redis that keeps nothing on disk, on a fixed host port (it survives restarts)."""
    port = free_port()
    container = (
        DockerContainer(REDIS_IMAGE)
        .with_bind_ports(6379, port)
        .with_command("redis-server --bind 0.0.0.0 --protected-mode no --save '' --appendonly no")
    )
    container.start()
    wait_until(lambda: _pong(port), 60, "redis container")
    yield container, port
    container.stop()


def _change_window(repo: Path, env: dict[str, str]) -> Any:
    """``clicks_last_5min`` counted over 10 minutes, applied (``featurestream apply``, in
    a process of its own as a user runs it); the view's new spec."""
    source = repo / "user_click_stats.py"
    text = source.read_text()
    old = 'time_window=timedelta(minutes=5),\n            name="clicks_last_5min"'
    assert old in text
    source.write_text(text.replace(old, old.replace("minutes=5", "minutes=10")))
    run_cli("apply", env=env)
    url = env["FEATURESTREAM_REDIS_URL"]
    view = next(v for v in compile_registry(open_store(repo, url)) if v.name == "user_click_stats")
    assert view.aggregations[0].window_ms == 600_000
    return view


def _pong(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=0.5).ping())
    except redis.RedisError:
        return False


class Engine:
    """`featurestream run` as a process, killed and restarted at will."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self._log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.e2e.engine_variant", "run"],
                env=self.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _scenario(*args: Any, **kwargs: Any) -> Stats:
    """:func:`_run_scenario`, and the engine killed whatever happens (a failing scenario
    must not leave it running on the next one's Redis)."""
    engines: list[Engine] = []
    try:
        return _run_scenario(*args, engines=engines, **kwargs)
    finally:
        for engine in engines:
            if engine.alive():
                engine.kill()


def _run_scenario(
    kafka: str,
    redis_container: tuple[DockerContainer, int],
    tmp_path: Path,
    *,
    events: int,
    kills: int,
    variant: str = "",
    seed: int = 1,
    restart_redis: bool = True,
    evict: bool = True,
    change_definition: bool = True,
    engines: list[Engine],
) -> Stats:
    rng = random.Random(seed)
    container, port = redis_container
    url = f"redis://127.0.0.1:{port}/0"
    redis.Redis.from_url(url).flushall()
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, url)
    store = open_store(repo, url)
    view = next(v for v in compile_registry(store) if v.name == "user_click_stats")
    first_user = 1 + (uuid.uuid4().int % 10_000) * 1_000
    stats = Stats()
    engine = Engine(
        {
            **os.environ,
            "FEATURESTREAM_KAFKA_BOOTSTRAP": kafka,
            "FEATURESTREAM_REDIS_URL": url,
            "FEATURESTREAM_STATE_DIR": str(tmp_path / "state"),
            "FEATURESTREAM_REPO_PATH": str(repo),
            "FEATURESTREAM_METRICS_PORT": "0",
            "FEATURESTREAM_SNAPSHOT_INTERVAL_S": "0.5",
            "FAULTS_VARIANT": variant,
        },
        tmp_path / "engine.log",
    )
    engines.append(engine)
    up = subprocess.run(
        [*FEATURESTREAM, "up"],
        env=engine.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert up.returncode == 0, up.stderr  # topics on the containers' broker
    codec = AvroCodec(load_contracts())
    generator = TrafficGenerator(
        TrafficConfig(
            topic="clicks",
            users=USERS,
            items=50,
            seed=seed,
            first_user=first_user,
            bad_fraction=0.01,
            late_fraction=0.01,
            duplicate_fraction=0.02,
            lateness_ms=LATENESS_MS,
        ),
        codec,
    )
    # Per partition: (offset, record, kind, the Kafka timestamp).
    acked: dict[int, list[tuple[int, dict[str, Any] | None, str, int]]] = defaultdict(list)
    failed: list[str] = []

    def delivered(err: Any, msg: Any, record: dict[str, Any] | None, kind: str) -> None:
        if err is not None:
            failed.append(str(err))
        else:
            acked[msg.partition()].append((msg.offset(), record, kind, msg.timestamp()[1]))

    producer = Producer({"bootstrap.servers": kafka, "linger.ms": 5})
    tiles = connect_online_store(url, timeout_s=1.0)

    def progress_now() -> dict[ProgressKey, int]:
        try:
            return tiles.progress(ViewState.of(view))
        except Exception:  # Redis restarting
            return {}

    engine.start()
    chunks = max(kills + 2, 6)
    kill_after = set(rng.sample(range(chunks - 1), kills))
    restart_redis_after = chunks // 2
    evict_after = restart_redis_after + 1
    change_after = 0
    per_chunk = events // chunks
    for chunk in range(chunks):
        # Read before producing: a fast engine may claim the whole chunk before a read
        # after it, and progress would then never move again.
        before = sum(progress_now().values())
        now_ms = time.time_ns() // 1_000_000
        for e in generator.batch(
            [now_ms - 1_000 + i * 1_000 // per_chunk for i in range(per_chunk)]
        ):
            value = codec.encode("clicks", e.record) if e.record is not None else e.value
            if e.record is None:
                stats.injected_bad[e.kind] += 1
            producer.produce(
                "clicks",
                key=e.key,
                value=value,
                on_delivery=lambda err, msg, r=e.record, k=e.kind: delivered(err, msg, r, k),
            )
        # Producer clocks that run 4.5 minutes fast (within the 5 minutes a time stamp may
        # be ahead of its produce time): applied, and the watermark they move is bounded
        # by the produce time, so the partitions' next events are not late.
        for k in range(6):
            skewed = {
                "event_id": str(uuid.uuid4()),
                "user_id": first_user + 1 + k,
                "item_id": 1,
                "page": "home",
                "event_time": now_ms + 270_000,
            }
            producer.produce(
                "clicks",
                key=str(first_user + 1 + k).encode(),
                value=codec.encode("clicks", skewed),
                on_delivery=lambda err, msg, r=skewed: delivered(err, msg, r, "event"),
            )
        # one valid event an hour ahead of its produce time (a bad clock: out_of_range)
        future = {
            "event_id": str(uuid.uuid4()),
            "user_id": first_user,
            "item_id": 1,
            "page": "home",
            "event_time": now_ms + 3_600_000,
        }
        stats.injected_bad["out_of_range"] += 1
        producer.produce(
            "clicks",
            key=str(first_user).encode(),
            value=codec.encode("clicks", future),
            on_delivery=lambda err, msg: delivered(err, msg, None, "out_of_range"),
        )
        # and one huge message per chunk (dead-lettered as too_large)
        stats.injected_bad["too_large"] += 1
        producer.produce(
            "clicks",
            key=str(first_user).encode(),
            value=b"\xc3\x01" + b"\x00" * 100_000,
            on_delivery=lambda err, msg: delivered(err, msg, None, "too_large"),
        )
        producer.flush(30)
        if chunk in kill_after:
            # Once the engine is applying this chunk (not while it starts up): then
            # anywhere, consuming, writing or snapshotting.
            wait_until(lambda b=before: sum(progress_now().values()) > b, 120, "progress")
            time.sleep(rng.uniform(0.0, 1.5))
            engine.kill()
            stats.kills += 1
            killed_at = time.monotonic()
            engine.start()
            # Recovery time: from the kill until an event sent right after it is online.
            probe = generator.batch([time.time_ns() // 1_000_000])[0]
            while probe.record is None or probe.kind != "event":
                if probe.record is None:
                    stats.injected_bad[probe.kind] += 1
                value = (
                    probe.value if probe.record is None else codec.encode("clicks", probe.record)
                )
                producer.produce(
                    "clicks",
                    key=probe.key,
                    value=value,
                    on_delivery=lambda err, msg, r=probe.record, k=probe.kind: delivered(
                        err, msg, r, k
                    ),
                )
                probe = generator.batch([time.time_ns() // 1_000_000])[0]
            where: list[tuple[int, int]] = []

            def probe_delivered(
                err: Any,
                msg: Any,
                r: dict[str, Any] | None = probe.record,
                out: list[tuple[int, int]] = where,
            ) -> None:
                delivered(err, msg, r, "event")
                out.append((msg.partition(), msg.offset()))

            producer.produce(
                "clicks",
                key=probe.key,
                value=codec.encode("clicks", probe.record),
                on_delivery=probe_delivered,
            )
            producer.flush(30)
            part, offset = where[0]
            wait_until(
                lambda p=part, o=offset: progress_now().get(ProgressKey("clicks", p), 0) > o,
                120,
                "probe",
            )
            stats.recovery_s.append(time.monotonic() - killed_at)
        if restart_redis and chunk == restart_redis_after:
            wrapped = container.get_wrapped_container()
            wrapped.stop(timeout=1)
            time.sleep(1.0)
            wrapped.start()
            wait_until(lambda: _pong(port), 60, "redis after restart")
            stats.redis_restarts += 1
        if evict and chunk == evict_after:
            # Once the engine applied this chunk: then Redis drops every tile to free memory.
            wait_until(lambda b=before: sum(progress_now().values()) > b, 120, "progress")
            assert evict_tiles(f"redis://127.0.0.1:{port}") > 0
            stats.evictions += 1
        if change_definition and chunk == change_after:
            # A window changes while the engine runs: applied, it is not served until an
            # engine on it caught up; then that engine (restarted on it) serves it.
            view = _change_window(repo, engine.env)
            assert not tiles.has_marker(ViewState.of(view))
            (rows,) = tiles.read([(view, ["1"])], now_ms, only_ready=True)
            assert rows == [(dict.fromkeys(a.name for a in view.aggregations), None)]
            engine.kill()
            engine.start()
            stats.definition_changes += 1
    assert not failed, failed[:3]

    # Wait until every acknowledged message is online, timing the recovery.
    ends = {ProgressKey("clicks", p): max(m[0] for m in msgs) + 1 for p, msgs in acked.items()}

    def caught_up() -> bool:
        assert engine.alive(), (tmp_path / "engine.log").read_text()[-3000:]
        try:
            progress = tiles.progress(ViewState.of(view))
            # and served: ready, with nothing evicted since (a restore may be due)
            (marker,) = tiles.markers([ViewState.of(view)])
            served = marker is not None and marker.ready
            # (the control without the engine's eviction check never restores: its
            # tiles are read as they are)
            never_restores = variant == "no-eviction-check"
            served = served and (
                never_restores or evicted_since(marker.mark, tiles.stats()) is None
            )
        except Exception:  # Redis restarting
            return False
        return served and all(progress.get(k, 0) >= v for k, v in ends.items())

    wait_until(caught_up, 300, "the engine to catch up")

    # The oracle: per partition in offset order, what the gate must apply.
    applied: list[dict[str, Any]] = []
    for msgs in acked.values():
        valid = [m for m in sorted(msgs, key=lambda m: m[0]) if m[1] is not None]
        ok, _late = classify_partition(
            [m[1] for m in valid], LATENESS_MS, produced_ms=[m[3] for m in valid]
        )
        applied += ok
    stats.applied = len(applied)
    applied_ids = {e["event_id"] for e in applied}
    users = sorted({e["user_id"] for e in applied})

    def logged_ids() -> set[str]:
        logged = read_view_log(log_root(store.config), view, {(u,) for u in users})
        return {i for ev in logged.values() for i in ev.columns["event_id"]}

    # The offline log is flushed a few seconds behind the tiles (with the snapshots):
    # wait for it to hold what was applied (at most a minute; what is still missing then
    # is counted below). The negative controls are judged by the online values alone, and
    # a log that never holds what their broken engine skipped is not waited for.
    deadline = time.monotonic() + (60 if not variant else 5)
    while not applied_ids <= logged_ids() and time.monotonic() < deadline:
        time.sleep(0.2)
    engine.kill()
    by_user: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in applied:
        by_user[e["user_id"]].append(e)
    read_ms = max(e["event_time"] for e in applied) + 1_000
    (rows,) = tiles.read([(view, [str(u) for u in users])], read_ms)
    for user, (values, _) in zip(users, rows, strict=True):
        expected = view_values(by_user[user], view, read_ms)
        if values != expected:
            stats.mismatches.append((user, values, expected))

    logged = logged_ids()
    stats.log_missing = len(applied_ids - logged)
    stats.log_extra = len(logged - applied_ids)

    # Dead letters: at least once; one per source position (replays resend them).
    positions: dict[tuple[bytes, bytes, bytes], str] = {}
    for msg in consume_all(kafka, "featurestream.dlq"):
        headers = dict(msg.headers() or [])
        where = (headers["source.topic"], headers["source.partition"], headers["source.offset"])
        positions[where] = headers["error.kind"].decode()
    mine = {
        (b"clicks", str(p).encode(), str(o).encode())
        for p, msgs in acked.items()
        for o, r, _, _ in msgs
        if r is None
    }
    stats.dead_letters = Counter(k for w, k in positions.items() if w in mine)
    return stats


def test_nothing_lost_or_double_counted_through_kills_and_a_redis_restart(
    kafka: str, redis_container: tuple[DockerContainer, int], tmp_path: Path
) -> None:
    stats = _scenario(kafka, redis_container, tmp_path, events=EVENTS, kills=KILLS)
    report = Path(os.environ.get("FAULTS_REPORT", tmp_path / "faults-report.json"))
    report.parent.mkdir(parents=True, exist_ok=True)
    recovery = sorted(stats.recovery_s)
    report.write_text(
        json.dumps(
            {
                "events_produced": EVENTS,
                "events_applied": stats.applied,
                "kills": stats.kills,
                "redis_restarts": stats.redis_restarts,
                "evictions": stats.evictions,
                "definition_changes": stats.definition_changes,
                "mismatches": len(stats.mismatches),
                "offline_log_missing": stats.log_missing,
                "offline_log_extra": stats.log_extra,
                "dead_letters": dict(stats.dead_letters),
                "injected_bad": dict(stats.injected_bad),
                "recovery_s_p50": round(recovery[len(recovery) // 2], 2),
                "recovery_s_p95": round(
                    recovery[min(len(recovery) - 1, int(len(recovery) * 0.95))], 2
                ),
                "recovery_s": [round(r, 2) for r in stats.recovery_s],
            },
            indent=2,
        )
        + "\n"
    )
    assert stats.kills == KILLS and stats.redis_restarts == 1
    assert (stats.evictions, stats.definition_changes) == (1, 1)
    assert stats.applied > 0.9 * EVENTS
    assert stats.mismatches == []
    assert (stats.log_missing, stats.log_extra) == (0, 0)
    assert stats.dead_letters == stats.injected_bad and sum(stats.injected_bad.values()) > 0


@pytest.mark.parametrize(
    "variant", ["no-dedupe", "forget-state", "no-produce-bound", "no-eviction-check"]
)
def test_negative_controls_are_caught(
    kafka: str,
    redis_container: tuple[DockerContainer, int],
    tmp_path: Path,
    variant: str,
) -> None:
    # Without the Redis restart, the evictions (but for the eviction check's own control)
    # and the definition change: their restores and rebuilds would repair the forgotten
    # state, hiding the protection under test.
    stats = _scenario(
        kafka,
        redis_container,
        tmp_path,
        events=1200,
        kills=2,
        variant=variant,
        seed=7,
        restart_redis=False,
        evict=variant == "no-eviction-check",
        change_definition=False,
    )
    assert stats.mismatches, f"{variant}: the suite did not notice"
