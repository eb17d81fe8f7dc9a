"""The engine's state across a changed definition, a lost recovery store and a second
process (issue 14), with the embedded broker, Redis and real ``featurestream`` processes.

* A changed view is not served (missing values, NOT_FOUND) until an engine on its new
  definition has caught up, then exactly; the other views keep their state: progress,
  offline log rows and one recovery store.
* ``up`` keeps the recovery state of an engine that runs on it; an engine without state
  whose topic no longer holds what the store's tiles count refuses to run instead of
  setting tiles from less, and rebuilds exactly when the topic holds everything.
* One engine per state directory (the second exits with one line naming the first);
  two ``up`` at once agree on one stack.

Each protection has its negative control: the same steps with it switched off (in this
process, or in a ``featurestream`` process patched by :data:`_VARIANT`) show the harm.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from featurestream_app.stack import free_port, port_open
from producers import Click, ClickTraffic, EventProducer, Impression, Purchase
from streams.core import ViewSpec
from streams.core.reference import view_values
from streams.definitions import compile_registry
from streams.online import OnlineStore, ProgressKey, ViewRows, ViewState, connect_online_store
from streams.online.feast_store import TiledRedisOnlineStore
from streams.online.redis import RedisOnlineStore
from streams.repo import open_store
from tests.support import (
    FEATURESTREAM,
    Background,
    consume_all,
    copy_feature_repo,
    redis_server,
    run_cli,
    stack_env,
    wait_until,
)

CLICKS = "user_click_stats"
IMPRESSIONS = "user_impression_stats"
PURCHASES = "user_purchase_stats"

_VARIANT = """
import contextlib, os, subprocess, sys, time
from pathlib import Path

variant = os.environ["ENGINE_STATE_VARIANT"]
if variant == "no-engine-lock":  # a second engine runs on the same state dir
    from featurestream_app.stack import locks

    locks.hold = lambda path, what: None
elif variant == "no-coverage-check":  # a fresh view rebuilds whatever the store holds
    from featurestream_app import engine

    engine._uncovered = lambda bootstrap, progress: []
elif variant == "recovery-per-run":  # one recovery store per definitions (before issue 14)
    from featurestream_app import engine

    key = os.environ["ENGINE_STATE_RECOVERY"]
    engine.recovery_dir = lambda settings, index, count: settings.state_dir / "recovery" / key
elif variant == "no-recreated-check":  # a partition is never found created again
    from streams.flow import source

    source._Partition._check_recreated = lambda self: None
elif variant == "no-engine-holder":  # up does not see the running engine
    from featurestream_app.stack import local

    local.holder = lambda path: None
elif variant in ("stack-lock", "no-stack-lock"):  # two `up` pass a barrier together
    from featurestream_app.stack import local

    barrier = Path(os.environ["ENGINE_STATE_BARRIER"])
    popen = subprocess.Popen

    class Recorded(popen):  # every process this `up` starts, for the test's clean-up
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            with open(barrier.parent / "started", "a") as out:
                out.write(f"{self.pid}\\n")

    subprocess.Popen = Recorded
    original = local.locked

    @contextlib.contextmanager
    def locked(path, wait_s=120.0):
        (barrier / str(os.getpid())).touch()
        deadline = time.monotonic() + 60
        while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.002)
        if variant == "no-stack-lock":
            yield
        else:
            with original(path, wait_s):
                yield

    local.locked = locked
elif variant:
    raise SystemExit(f"unknown ENGINE_STATE_VARIANT {variant!r}")

from featurestream_app.cli.main import main

sys.argv = ["featurestream", *sys.argv[1:]]
main()
"""
"""``python -c _VARIANT ARGS``: ``featurestream ARGS`` with the protection named by
``ENGINE_STATE_VARIANT`` switched off (empty: none)."""


# ----------------------------------------------------------------------------- helpers
def _variant(name: str) -> tuple[str, ...]:
    """The command of ``featurestream`` with the protection ``name`` switched off."""
    return (sys.executable, "-c", _VARIANT) if name else FEATURESTREAM


def _private_redis(tmp_path: Path) -> tuple[Background, str]:
    port = free_port()
    return redis_server(port, tmp_path / "redis.log"), f"redis://127.0.0.1:{port}/0"


def _applied_private(
    settings: Settings, tmp_path: Path
) -> tuple[Background, str, Path, Path, dict[str, str]]:
    """A Redis of this test (stop it), a copy of the feature repository applied on it, a
    state dir, and the environment of an engine on them and the shared broker."""
    redis, url = _private_redis(tmp_path)
    try:
        repo = copy_feature_repo(tmp_path)
        state_dir = tmp_path / "state"
        env = _engine_env(settings, repo, state_dir, url)
        run_cli("apply", env=env)
    except BaseException:
        redis.stop()
        raise
    return redis, url, repo, state_dir, env


def _engine_env(
    settings: Settings, repo: Path, state_dir: Path, url: str, **extra: str
) -> dict[str, str]:
    env: dict[str, str] = stack_env(
        settings,
        repo,
        FEATURESTREAM_STATE_DIR=str(state_dir),
        FEATURESTREAM_REDIS_URL=url,
        FEATURESTREAM_METRICS_PORT="0",
        FEATURESTREAM_SNAPSHOT_INTERVAL_S="0.5",
        **extra,
    )
    return env


def _engine(
    env: dict[str, str], log: Path, *args: str, variant: str = ""
) -> subprocess.Popen[bytes]:
    """``featurestream run ARGS`` in the background (its own process group)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*_variant(variant), "run", *args],
            env={**env, "ENGINE_STATE_VARIANT": variant},
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _produce(settings: Settings, events: Sequence[Any]) -> dict[ProgressKey, int]:
    """Send ``events``; the offsets a consumer must reach to have seen them."""
    with EventProducer(settings.bootstrap_servers) as producer:
        for event in events:
            producer.send(event)
    return {ProgressKey(t, p): o + 1 for (t, p), o in producer.stats.last_offsets.items()}


def _caught_up(store: OnlineStore, view: ViewSpec, ends: dict[ProgressKey, int]) -> bool:
    progress = store.progress(ViewState.of(view))
    return all(progress.get(k, 0) >= end for k, end in ends.items() if k.topic == view.topic)


def _ready(store: OnlineStore, view: ViewSpec) -> bool:
    (marker,) = store.markers([ViewState.of(view)])
    return marker is not None and marker.ready


def _committed_epoch(recovery: Path) -> int:
    """The newest epoch the recovery store ``recovery`` committed (-1: none)."""
    epochs = [-1]
    for part in recovery.glob("part-*.sqlite3"):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{part}?mode=ro", uri=True)) as db:
                (epoch,) = db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()
        except sqlite3.Error:
            continue
        epochs.append(-1 if epoch is None else int(epoch))
    return max(epochs)


def _snapshot_after_now(
    state_dir: Path, engine: subprocess.Popen[bytes], log: Path, store: str = "engine"
) -> None:
    """Wait until the engine's recovery store committed two epochs past the current one
    (what it holds then includes everything processed before the call, and the offline
    log files are flushed)."""
    recovery = state_dir / "recovery" / store
    start = _committed_epoch(recovery)

    def committed() -> bool:
        assert engine.poll() is None, log.read_text(errors="replace")[-3000:]
        return _committed_epoch(recovery) >= start + 2

    wait_until(committed, 120, "a recovery snapshot")


def _views(repo: Path, url: str) -> dict[str, ViewSpec]:
    return {v.name: v for v in compile_registry(open_store(repo, url))}


def _online(
    repo: Path, url: str, view: ViewSpec, users: Sequence[int], read_ms: int
) -> dict[int, dict[str, Any]]:
    """Every aggregation of ``view`` for ``users`` through the Feast SDK at ``read_ms``
    (the registry as applied now)."""
    names = [a.name for a in view.aggregations]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TiledRedisOnlineStore, "clock", staticmethod(lambda: read_ms))
        got = (
            open_store(repo, url)
            .get_online_features(
                features=[f"{view.name}:{n}" for n in names],
                entity_rows=[{"user_id": u} for u in users],
            )
            .to_dict()
        )
    return {u: {n: got[n][i] for n in names} for i, u in enumerate(users)}


def _oracle(
    events: Sequence[Any], view: ViewSpec, users: Sequence[int], read_ms: int
) -> dict[int, dict[str, Any]]:
    records = [dataclasses.asdict(e) for e in events]
    return {u: view_values([r for r in records if r["user_id"] == u], view, read_ms) for u in users}


def _served(port: int, feature: str, users: Sequence[int]) -> list[tuple[Any, str]]:
    """``(value, status)`` of ``feature`` per user from ``featurestream serve``."""
    body = json.dumps({"features": [feature], "entities": {"user_id": list(users)}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/get-online-features",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer = json.loads(response.read())
    index = answer["metadata"]["feature_names"].index(feature.split(":")[1])
    result = answer["results"][index]
    return list(zip(result["values"], result["statuses"], strict=True))


def _logged_event_ids(repo: Path, view: str, users: Sequence[int]) -> Counter[str]:
    """How often each event of ``users`` is in ``view``'s offline log files (raw rows)."""
    root = repo / "data" / "offline_log" / view
    if not any(root.rglob("*.parquet")):
        return Counter()
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table(
        columns=["user_id", "event_id"]
    )
    wanted = set(users)
    return Counter(
        e
        for u, e in zip(
            table.column("user_id").to_pylist(), table.column("event_id").to_pylist(), strict=True
        )
        if u in wanted
    )


def _first_user(base: int) -> int:
    return base + (uuid.uuid4().int % 1000) * 10


def _clicks(first_user: int, seed: int, start_ms: int, count: int) -> list[Click]:
    """Clicks of 5 users at 20 per second, each with a new event_id (the generator's ids
    repeat with its seed, and a repeated id on a partition of the shared topic is one
    event)."""
    traffic = ClickTraffic(users=5, seed=seed, first_user=first_user)
    return [
        dataclasses.replace(c, event_id=str(uuid.uuid4()))
        for c in traffic.clicks(start_ms, rate_per_s=20, count=count)
    ]


# ------------------------------------------------------------------ case 4: a changed view
def _ignoring_readiness(self: RedisOnlineStore, requests: Any) -> list[ViewRows]:
    """A reader that serves every view whatever its marker (before issue 14)."""
    return [ViewRows(True, rows) for rows in self.read_tiles(requests)]


@pytest.mark.parametrize("variant", ["", "recovery-per-run"])
def test_a_changed_view_is_served_only_once_an_engine_on_it_caught_up(
    local_stack: Settings, tmp_path: Path, variant: str
) -> None:
    redis, url, repo, state_dir, env = _applied_private(local_stack, tmp_path)
    old = _views(repo, url)
    first_user = _first_user(40_000_000)
    users = list(range(first_user, first_user + 5))
    t0 = time.time_ns() // 1_000_000
    clicks = _clicks(first_user, 7, t0 - 20_000, 100)
    later = _clicks(first_user, 8, t0 - 14_000, 100)
    impressions = [
        Impression(str(uuid.uuid4()), first_user + i % 5, i + 1, "home", t0 - 20_000 + i * 50)
        for i in range(100)
    ]
    purchases = [
        Purchase(
            str(uuid.uuid4()), first_user + i % 5, i + 1, 2.5 * i, "EUR", t0 - 20_000 + i * 500
        )
        for i in range(10)
    ]
    ends = _produce(local_stack, clicks + impressions + purchases)
    store = connect_online_store(url, timeout_s=2.0)
    serve_port = free_port()
    server = Background(
        [*FEATURESTREAM, "serve", "--port", str(serve_port), "--workers", "1"],
        tmp_path / "server.log",
        {**env, "FEATURESTREAM_SERVE_ONLINE_TIMEOUT_MS": "5000"},
    )
    log_a = tmp_path / "engine-a.log"
    engine = _engine(env, log_a)
    try:
        server.wait_http(f"http://127.0.0.1:{serve_port}/health")
        wait_until(
            lambda: all(_caught_up(store, view, ends) for view in old.values()),
            120,
            "the engine on the first definitions",
        )
        _snapshot_after_now(state_dir, engine, log_a)
        now_ms = max(c.event_time for c in clicks) + 1_000
        assert _online(repo, url, old[CLICKS], users, now_ms) == _oracle(
            clicks, old[CLICKS], users, now_ms
        )
        counts = [sum(c.user_id == u for c in clicks) for u in users]
        assert _served(serve_port, f"{CLICKS}:clicks_last_5min", users) == [
            (n, "PRESENT") for n in counts
        ]
        untouched = {v: store.progress(ViewState.of(old[v])) for v in (IMPRESSIONS, PURCHASES)}
        logged = {v: _logged_event_ids(repo, v, users) for v in (IMPRESSIONS, PURCHASES)}
        assert sorted(logged[IMPRESSIONS]) == sorted(i.event_id for i in impressions)
        assert sorted(logged[PURCHASES]) == sorted(p.event_id for p in purchases)

        # clicks_last_5min becomes a 10-minute window, applied while the engine runs
        source = repo / "user_click_stats.py"
        text = source.read_text()
        assert text.count("timedelta(minutes=5)") == 1
        source.write_text(text.replace("timedelta(minutes=5)", "timedelta(minutes=10)"))
        run_cli("apply", env=env)
        new = _views(repo, url)
        assert new[CLICKS].state_id != old[CLICKS].state_id
        assert all(new[v].state_id == old[v].state_id for v in (IMPRESSIONS, PURCHASES))
        # The engine keeps writing the old definition's tiles.
        ends = {**ends, **_produce(local_stack, later)}
        wait_until(lambda: _caught_up(store, old[CLICKS], ends), 120, "the engine on the old one")
        assert engine.poll() is None, log_a.read_text()[-3000:]

        everything = clicks + later
        # Read 7 minutes on: the 5-minute window is empty, the 10-minute one is not.
        read_ms = t0 + 420_000
        expected = _oracle(everything, new[CLICKS], users, read_ms)
        assert all(expected[u]["clicks_last_5min"] > 0 for u in users)
        assert _oracle(everything, old[CLICKS], users, read_ms) != expected
        missing = dict.fromkeys((a.name for a in new[CLICKS].aggregations), None)
        assert _online(repo, url, new[CLICKS], users, read_ms) == dict.fromkeys(users, missing)
        with pytest.MonkeyPatch.context() as mp:  # negative control: readiness ignored
            mp.setattr(RedisOnlineStore, "read_views", _ignoring_readiness)
            wrong = _online(repo, url, new[CLICKS], users, read_ms)
        assert [wrong[u]["clicks_last_5min"] for u in users] == [0] * len(users)  # the issue

        totals = [sum(c.user_id == u for c in everything) for u in users]
        seen: list[list[tuple[Any, str]]] = []

        def served_statuses() -> set[str]:
            seen.append(_served(serve_port, f"{CLICKS}:clicks_last_5min", users))
            return {s for _, s in seen[-1]}

        # The server reads the new definition within seconds, and answers NOT_FOUND.
        wait_until(lambda: served_statuses() == {"NOT_FOUND"}, 120, "the server on the new one")

        # An engine on the new definition: the clicks view rebuilds from its topic, the
        # others resume from the snapshots (negative control: every view starts from
        # fresh state, in a recovery store of its own).
        _stop(engine)
        log_b = tmp_path / "engine-b.log"
        engine = _engine({**env, "ENGINE_STATE_RECOVERY": "rebuilt"}, log_b, variant=variant)
        reads: list[dict[int, dict[str, Any]]] = []
        others: list[tuple[dict[ProgressKey, int], dict[ProgressKey, int], bool]] = []

        def built() -> bool:
            assert engine.poll() is None, log_b.read_text()[-3000:]
            ready = _ready(store, new[CLICKS])
            reads.append(_online(repo, url, new[CLICKS], users, read_ms))
            served_statuses()
            others.append(
                (
                    store.progress(ViewState.of(new[IMPRESSIONS])),
                    store.progress(ViewState.of(new[PURCHASES])),
                    all(_ready(store, new[v]) for v in (IMPRESSIONS, PURCHASES)),
                )
            )
            return ready and _caught_up(store, new[CLICKS], ends)

        wait_until(built, 120, "the engine on the new definition")
        assert _online(repo, url, new[CLICKS], users, read_ms) == expected
        # Before it was ready: nothing, never a partial value or a 0.
        assert all(r in (dict.fromkeys(users, missing), expected) for r in reads), reads
        assert _served(serve_port, f"{CLICKS}:clicks_last_5min", users) == [
            (n, "PRESENT") for n in totals
        ]
        answers = {a for answer in seen for a in answer}
        assert answers <= {(None, "NOT_FOUND"), *((n, "PRESENT") for n in counts + totals)}

        _snapshot_after_now(state_dir, engine, log_b, "rebuilt" if variant else "engine")
        relogged = {v: _logged_event_ids(repo, v, users) for v in (IMPRESSIONS, PURCHASES)}
        stores = sorted(p.name for p in (state_dir / "recovery").iterdir())
        if not variant:
            # The other views kept their state: progress never went back, always served,
            # their offline log rows once each, one recovery store.
            for impressions_at, purchases_at, served in others:
                for before, now in (
                    (untouched[IMPRESSIONS], impressions_at),
                    (untouched[PURCHASES], purchases_at),
                ):
                    assert all(now.get(k, 0) >= n for k, n in before.items()), (before, now)
                assert served, "an unchanged view was not served while the changed one rebuilt"
            assert relogged == logged
            assert stores == ["engine"]
        else:  # they restarted from the beginning of their topics (before issue 14)
            assert set(relogged[IMPRESSIONS].values()) == {2}
            assert stores == ["engine", "rebuilt"]
        now_ms = t0 + 1_000
        for name, events in ((IMPRESSIONS, impressions), (PURCHASES, purchases)):
            view = new[name]
            assert _online(repo, url, view, users, now_ms) == _oracle(events, view, users, now_ms)
    finally:
        _stop(engine)
        server.stop()
        redis.stop()


# ------------------------------------------------- case 5: recovery state and a rebuild
def _cli(variant: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``featurestream ARGS`` (``variant``: with that protection switched off)."""
    return subprocess.run(
        [*_variant(variant), *args],
        env={**env, "ENGINE_STATE_VARIANT": variant},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@contextlib.contextmanager
def _own_stack(tmp_path: Path) -> Iterator[Settings]:
    """A local stack of this test (its broker may be killed), started and stopped with
    ``featurestream up`` / ``down`` on its own state dir."""
    settings = Settings(
        state_dir=tmp_path / "stack", broker_port=free_port(), redis_port=free_port()
    )
    env = stack_env(settings, FEATURESTREAM_STATE_DIR=str(settings.state_dir))
    run_cli("up", env=env)
    try:
        yield settings
    finally:
        run_cli("down", env=env, ok=False)


def _kill_broker(settings: Settings) -> None:
    """SIGKILL the stack's broker (started by ``up``: its pid file names it)."""
    info = json.loads((settings.state_dir / "run" / "broker.json").read_text())
    os.killpg(int(info["pid"]), signal.SIGKILL)
    wait_until(lambda: not port_open("127.0.0.1", settings.broker_port), 60, "the broker gone")


def _applied_on(stack: Settings, tmp_path: Path, **extra: str) -> tuple[Path, dict[str, str]]:
    """A copy of the feature repository applied on ``stack`` (a stack of this test), and
    the environment of an engine on both (its state dir: the stack's)."""
    repo = copy_feature_repo(tmp_path)
    env: dict[str, str] = stack_env(
        stack,
        repo,
        FEATURESTREAM_STATE_DIR=str(stack.state_dir),
        FEATURESTREAM_METRICS_PORT="0",
        FEATURESTREAM_SNAPSHOT_INTERVAL_S="0.5",
        **extra,
    )
    run_cli("apply", env=env)
    return repo, env


@pytest.mark.parametrize("variant", ["", "no-engine-holder"])
def test_up_keeps_the_recovery_state_of_a_running_engine(tmp_path: Path, variant: str) -> None:
    with _own_stack(tmp_path) as stack:
        repo, env = _applied_on(stack, tmp_path)
        view = _views(repo, stack.online_redis_url)[CLICKS]
        t0 = time.time_ns() // 1_000_000
        first_user = _first_user(50_000_000)
        ends = _produce(
            stack,
            _clicks(first_user, 1, t0 - 20_000, 60),
        )
        store = connect_online_store(stack.online_redis_url, timeout_s=2.0)
        log = tmp_path / "engine.log"
        engine = _engine(env, log, CLICKS)
        try:
            wait_until(lambda: _caught_up(store, view, ends), 120, "the engine")
            _snapshot_after_now(stack.state_dir, engine, log)
            recovery = stack.state_dir / "recovery" / "engine"
            assert any(recovery.glob("part-*.sqlite3"))

            _kill_broker(stack)
            up = _cli(variant, "up", env=env)  # a new, empty broker
            assert up.returncode == 0, up.stderr[-3000:]
            if not variant:
                assert any(recovery.glob("part-*.sqlite3"))  # the engine's state is kept
                assert f"pid {engine.pid}" in up.stderr  # and up says why
                assert engine.poll() is None, log.read_text()[-3000:]
            else:  # negative control: up does not see the engine and deletes its state
                assert not (stack.state_dir / "recovery").exists()
        finally:
            _stop(engine)


@pytest.mark.parametrize(
    ("scenario", "variant"),
    [("recovery-lost", ""), ("broker-restarted", ""), ("broker-restarted", "no-coverage-check")],
)
def test_an_engine_without_state_never_sets_tiles_from_less_than_the_store_holds(
    tmp_path: Path, scenario: str, variant: str
) -> None:
    with _own_stack(tmp_path) as stack:
        repo, env = _applied_on(stack, tmp_path)
        url = stack.online_redis_url
        view = _views(repo, url)[CLICKS]
        user = _first_user(60_000_000)
        t0 = time.time_ns() // 1_000_000
        # All three in one tile of the window (a minute): a rebuild from the last one alone
        # sets that tile to 1, where tiles of its own would leave the others' counts.
        minute = (t0 // 60_000 - 1) * 60_000
        clicks = [Click(str(uuid.uuid4()), user, 1, "home", minute + i * 1_000) for i in range(3)]
        _produce(stack, clicks[:2])
        run_cli("run", CLICKS, "--stop-at-end", env=env, timeout=300)
        read_ms = t0
        assert _online(repo, url, view, [user], read_ms)[user]["clicks_last_1h"] == 2
        recovery = stack.state_dir / "recovery"
        assert any(recovery.rglob("part-*.sqlite3"))

        if scenario == "recovery-lost":  # while the engine is stopped; the topic holds all
            shutil.rmtree(recovery)
        else:  # the broker restarts empty; `up` drops the snapshots of its old offsets
            _kill_broker(stack)
            run_cli("up", env=env)
            assert not recovery.exists()
        _produce(stack, clicks[2:])
        result = _cli(variant, "run", CLICKS, "--stop-at-end", env=env)

        expected = _oracle(clicks, view, [user], read_ms)
        assert expected[user]["clicks_last_1h"] == 3
        online = _online(repo, url, view, [user], read_ms)
        if scenario == "recovery-lost":  # it rebuilds from the topic, exactly
            assert result.returncode == 0, result.stderr[-3000:]
            assert online == expected
        elif not variant:  # it refuses, in one line, and the tiles keep what they held
            assert result.returncode == 2, result.stderr[-3000:]
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
            assert f"view {CLICKS!r}" in errors[0] and "no longer holds" in errors[0]
            assert online[user]["clicks_last_1h"] == 2
        else:  # negative control: the tiles are set from the one event the topic holds
            assert result.returncode == 0, result.stderr[-3000:]
            assert online[user]["clicks_last_1h"] == 1


# ------------------------------------------- a broker created again under an engine
_END_CHECK_S = 1.0
"""How often the engines of these tests compare their partitions' ends with their
offsets (``FEATURESTREAM_PARTITION_END_CHECK_S``)."""
_QUIET_S = 12 * _END_CHECK_S
"""How long the negative controls (and the idle engine) are watched to show that nothing
happens: a dozen end checks."""
_NEW_CLICKS_S = 120.0
"""Most time an engine gets to apply the clicks sent to a broker created again."""

_CREATED_AGAIN = re.compile(
    r"topic=clicks partition=(\d+) ends at offset \d+, before offset (\d+) this engine "
    r"read to: the topic was created again .*; reading it from its start$",
    re.MULTILINE,
)


def _turns(users: Sequence[int], start_ms: int, count: int, gap_ms: int = 50) -> list[Click]:
    """``count`` clicks of ``users`` in turn, ``gap_ms`` apart: every user (so every
    partition) gets the same share of them."""
    return [
        Click(str(uuid.uuid4()), users[i % len(users)], i + 1, "home", start_ms + i * gap_ms)
        for i in range(count)
    ]


@dataclasses.dataclass(frozen=True)
class _Recreated:
    """A stack of its own with the repo applied, and 60 clicks of 5 users (not sent yet)."""

    stack: Settings
    repo: Path
    env: dict[str, str]
    view: ViewSpec
    users: list[int]
    clicks: list[Click]

    @property
    def read_ms(self) -> int:
        return max(c.event_time for c in self.clicks) + 30_000

    def read(self) -> dict[int, dict[str, Any]]:
        """What the Feast SDK serves for the users."""
        return _online(self.repo, self.stack.online_redis_url, self.view, self.users, self.read_ms)

    def expected(self, clicks: Sequence[Click]) -> dict[int, dict[str, Any]]:
        return _oracle(clicks, self.view, self.users, self.read_ms)

    def send_old(self, engine: subprocess.Popen[bytes], log: Path) -> dict[ProgressKey, int]:
        """Send the 60 clicks and wait until ``engine`` applied them: the ends of their
        partitions."""
        ends = _produce(self.stack, self.clicks)
        store = connect_online_store(self.stack.online_redis_url, timeout_s=2.0)

        def served() -> bool:
            assert engine.poll() is None, log.read_text(errors="replace")[-3000:]
            return _caught_up(store, self.view, ends) and self.read() == self.expected(self.clicks)

        wait_until(served, 120, "the old clicks")
        return ends

    def send_new(self, old: dict[ProgressKey, int]) -> list[Click]:
        """30 clicks of the users, to the broker created again: the topic's partitions
        end before the offsets the old clicks ended at."""
        new = _turns(self.users, time.time_ns() // 1_000_000 - 10_000, 30)
        ends = _produce(self.stack, new)
        assert ends.keys() == old.keys() and all(ends[k] < old[k] for k in ends), (ends, old)
        expected = self.expected(self.clicks + new)
        assert {v["clicks_last_1h"] for v in expected.values()} == {12 + 6}
        return new


@contextlib.contextmanager
def _recreated(tmp_path: Path, gap_ms: int = 50) -> Iterator[_Recreated]:
    """The case; its clicks ``gap_ms`` apart, the last 20 s ago."""
    with _own_stack(tmp_path) as stack:
        repo, env = _applied_on(
            stack, tmp_path, FEATURESTREAM_PARTITION_END_CHECK_S=str(_END_CHECK_S)
        )
        first_user = _first_user(80_000_000)
        users = list(range(first_user, first_user + 5))
        yield _Recreated(
            stack,
            repo,
            env,
            _views(repo, stack.online_redis_url)[CLICKS],
            users,
            _turns(users, time.time_ns() // 1_000_000 - 20_000 - 60 * gap_ms, 60, gap_ms),
        )


def _applied_within(
    case: _Recreated, engine: subprocess.Popen[bytes], log: Path, clicks: Sequence[Click]
) -> None:
    """``engine`` serves ``clicks`` within :data:`_NEW_CLICKS_S`."""
    expected = case.expected(clicks)

    def applied() -> bool:
        assert engine.poll() is None, log.read_text(errors="replace")[-3000:]
        return case.read() == expected

    wait_until(applied, _NEW_CLICKS_S, "the clicks sent to the broker created again")


def _never_applied(
    case: _Recreated, engine: subprocess.Popen[bytes], log: Path, clicks: Sequence[Click]
) -> None:
    """``engine`` keeps serving ``clicks`` (the old ones) for :data:`_QUIET_S`,
    without a word."""
    expected = case.expected(clicks)
    deadline = time.monotonic() + _QUIET_S
    while time.monotonic() < deadline:
        assert engine.poll() is None, log.read_text(errors="replace")[-3000:]
        assert case.read() == expected
        time.sleep(1.0)
    assert "created again" not in log.read_text(errors="replace")


def _said_created_again(log: Path, old: dict[ProgressKey, int]) -> None:
    """A warning for each partition of the old clicks, first naming the offset read to."""
    text = log.read_text(errors="replace")
    first: dict[int, int] = {}
    for partition, at in _CREATED_AGAIN.findall(text):
        first.setdefault(int(partition), int(at))
    assert first == {k.partition: n for k, n in old.items()}, text[-3000:]


@pytest.mark.parametrize("variant", ["", "no-recreated-check"])
def test_a_running_engine_reads_its_topic_created_again(tmp_path: Path, variant: str) -> None:
    with _recreated(tmp_path) as case:
        log = tmp_path / "engine.log"
        engine = _engine(case.env, log, CLICKS, variant=variant)
        try:
            ends = case.send_old(engine, log)
            _kill_broker(case.stack)
            run_cli("up", env=case.env)  # a new, empty broker; the engine's state is kept
            new = case.send_new(ends)
            if not variant:  # old tiles and new clicks, and a warning
                _applied_within(case, engine, log, case.clicks + new)
                _said_created_again(log, ends)
            else:  # negative control: the engine waits for the old offsets, silently
                _never_applied(case, engine, log, case.clicks)
        finally:
            _stop(engine)


@pytest.mark.parametrize("variant", ["", "no-recreated-check"])
def test_an_engine_restarted_after_its_broker_was_created_again_reads_the_new_topic(
    tmp_path: Path, variant: str
) -> None:
    with _recreated(tmp_path) as case:
        # The engine running while `up` creates the broker again does not check its
        # partitions: its snapshots keep the old offsets, past the new topic's ends.
        log_a, log_b = tmp_path / "engine-a.log", tmp_path / "engine-b.log"
        engine = _engine(case.env, log_a, CLICKS, variant="no-recreated-check")
        try:
            ends = case.send_old(engine, log_a)
            _kill_broker(case.stack)
            run_cli("up", env=case.env)  # the engine's state is kept
            _snapshot_after_now(case.stack.state_dir, engine, log_a)
            _stop(engine)
            new = case.send_new(ends)
            engine = _engine(case.env, log_b, CLICKS, variant=variant)
            if not variant:
                _applied_within(case, engine, log_b, case.clicks + new)
                _said_created_again(log_b, ends)
            else:  # negative control: it resumes past the ends and waits there, silently
                _never_applied(case, engine, log_b, case.clicks)
        finally:
            _stop(engine)


def _late_clicks(settings: Settings, event_ids: set[str]) -> Counter[str]:
    """How many times the late-events topic holds each of the clicks ``event_ids``."""
    codec = AvroCodec(load_contracts())
    found = (
        codec.decode("clicks", m.value())["event_id"]
        for m in consume_all(settings.bootstrap_servers, settings.late_topic)
        if dict(m.headers() or [])["source.topic"] == b"clicks"
    )
    return Counter(e for e in found if e in event_ids)


def test_an_idle_engine_on_a_broker_that_kept_its_data_reads_nothing_again(
    tmp_path: Path,
) -> None:
    """The check for a topic created again does not fire on a broker that kept its
    topic (the embedded broker reports a partition's end lagging behind its last
    batch): an idle engine re-reading its partitions would send their events older than
    the allowed lateness to the late-events topic, again and again."""
    with _recreated(tmp_path, gap_ms=3_000) as case:  # 3 minutes of clicks: lateness 30 s
        log = tmp_path / "engine.log"
        engine = _engine(case.env, log, CLICKS)
        try:
            case.send_old(engine, log)
            time.sleep(_QUIET_S)  # idle: a dozen end checks
            assert engine.poll() is None, log.read_text(errors="replace")[-3000:]
            assert "created again" not in log.read_text(errors="replace"), log.read_text()
            assert _late_clicks(case.stack, {c.event_id for c in case.clicks}) == Counter()
            assert case.read() == case.expected(case.clicks)
        finally:
            _stop(engine)


# ------------------------------------------------------ case 9: one engine per state dir
def _late_copies(settings: Settings, event_id: str) -> int:
    """How many times the late-events topic holds the click ``event_id``."""
    return _late_clicks(settings, {event_id})[event_id]


@pytest.mark.parametrize("variant", ["", "no-engine-lock"])
def test_a_second_engine_on_the_same_state_dir_is_refused(
    local_stack: Settings, tmp_path: Path, variant: str
) -> None:
    redis, url, repo, state_dir, env = _applied_private(local_stack, tmp_path)
    view = _views(repo, url)[CLICKS]
    user = _first_user(70_000_000)
    t0 = time.time_ns() // 1_000_000
    ends = _produce(local_stack, [Click(str(uuid.uuid4()), user, 1, "home", t0 - 20_000)])
    store = connect_online_store(url, timeout_s=2.0)
    first_log, second_log = tmp_path / "engine-1.log", tmp_path / "engine-2.log"
    first = _engine(env, first_log, CLICKS)
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: _caught_up(store, view, ends), 120, "the first engine")
        _snapshot_after_now(state_dir, first, first_log)
        # The first engine stops reading (it still holds its state dir): what a second
        # engine on the same dir resumes from is the snapshot above, whenever it starts.
        os.killpg(first.pid, signal.SIGSTOP)
        # An on-time click, then one 10 minutes older: late, sent to the late topic.
        late = Click(str(uuid.uuid4()), user, 1, "home", t0 - 600_000)
        now = time.time_ns() // 1_000_000
        ends = _produce(local_stack, [Click(str(uuid.uuid4()), user, 1, "home", now), late])
        if not variant:
            result = _cli(variant, "run", CLICKS, env=env)
            assert result.returncode == 2, result.stderr[-3000:]
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
            assert f"pid {first.pid}" in errors[0] and str(state_dir) in errors[0]
            assert _late_copies(local_stack, late.event_id) == 0
        else:  # negative control: without the lock, the second engine runs beside it
            second = _engine(env, second_log, CLICKS, variant=variant)
            wait_until(lambda: _late_copies(local_stack, late.event_id) == 1, 120, "a copy")
            assert second.poll() is None, second_log.read_text()[-3000:]
        os.killpg(first.pid, signal.SIGCONT)

        wait_until(lambda: _caught_up(store, view, ends), 120, "the engine")
        copies = 2 if variant else 1  # the control: each engine sends the late click
        wait_until(
            lambda: _late_copies(local_stack, late.event_id) >= copies, 120, "the late click"
        )
        assert first.poll() is None, first_log.read_text()[-3000:]
        assert _late_copies(local_stack, late.event_id) == copies
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGCONT)
        _stop(first)
        if second is not None:
            _stop(second)
        redis.stop()


_RUNNING = re.compile(r"^(broker|redis)\s+\S+\s+running \(pid (\d+)\)$", re.MULTILINE)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("variant", ["stack-lock", "no-stack-lock"])
def test_two_ups_at_once_agree_on_one_stack(tmp_path: Path, variant: str) -> None:
    settings = Settings(
        state_dir=tmp_path / "stack", broker_port=free_port(), redis_port=free_port()
    )
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = stack_env(
        settings,
        FEATURESTREAM_STATE_DIR=str(settings.state_dir),
        ENGINE_STATE_VARIANT=variant,
        ENGINE_STATE_BARRIER=str(barrier),
    )
    outputs = [tmp_path / f"up-{i}.out" for i in range(2)]
    procs = []
    for out in outputs:
        with out.open("w") as handle:
            procs.append(
                subprocess.Popen(
                    [*_variant(variant), "up"], env=env, stdout=handle, stderr=subprocess.STDOUT
                )
            )
    try:
        codes = [p.wait(timeout=300) for p in procs]
        texts = [o.read_text() for o in outputs]
        problems = [f"up exited {c}: {t[-500:]}" for c, t in zip(codes, texts, strict=True) if c]
        reported = [dict(_RUNNING.findall(t)) for t in texts]
        status = dict(_RUNNING.findall(run_cli("status", env=env).stdout))
        for pids in reported:
            if pids and pids != status:
                problems.append(f"up reported {pids}, status says {status}")
            problems += [
                f"up reported a dead {n} (pid {p})" for n, p in pids.items() if not _alive(int(p))
            ]
        if variant == "stack-lock":  # one waited for the other, and found its stack
            assert problems == []
            assert set(status) == {"broker", "redis"} and reported == [status, status]
        else:  # negative control: without the lock, the two race for one stack
            assert problems, texts
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        run_cli("down", env=env, ok=False)
        started = tmp_path / "started"
        for pid in (int(p) for p in started.read_text().split()) if started.exists() else ():
            if _alive(pid):  # a loser of the race the pid files no longer name
                os.kill(pid, signal.SIGKILL)
