"""`featurestream run --processes 2` gives exactly what one process gives."""

from __future__ import annotations

import dataclasses
import subprocess
import time
import uuid
from pathlib import Path

from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from featurestream_app.stack import cli_env
from producers import ClickTraffic, EventProducer, TrafficConfig, TrafficGenerator
from streams.core.reference import view_values
from streams.definitions import compile_registry
from streams.offline.feast_store import log_root
from streams.offline.log import read_view_log
from streams.online import connect_online_store
from streams.repo import apply_repo, open_store
from tests.support import FEATURESTREAM, copy_feature_repo, run_cli, stack_env


def _run(settings: Settings, repo: Path, state: Path, db: int, *args: str) -> None:
    env = stack_env(
        settings,
        repo,
        FEATURESTREAM_STATE_DIR=str(state),
        FEATURESTREAM_REDIS_URL=f"redis://127.0.0.1:{settings.redis_port}/{db}",
        FEATURESTREAM_METRICS_PORT="0",
    )
    run_cli("run", "--stop-at-end", *args, env=env, timeout=300)


def test_two_processes_equal_one(local_stack: Settings, tmp_path: Path) -> None:
    first_user = 95_000_000 + (uuid.uuid4().int % 1000) * 100
    now_ms = time.time_ns() // 1_000_000
    clicks = ClickTraffic(users=40, seed=8, first_user=first_user).clicks(
        now_ms - 20_000, rate_per_s=50, count=800
    )
    codec = AvroCodec(load_contracts())
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for click in clicks:
            producer.send(click)
        generator = TrafficGenerator(
            TrafficConfig(topic="purchases", users=40, seed=9, first_user=first_user), codec
        )
        for e in generator.batch([now_ms - 20_000 + i * 100 for i in range(150)]):
            assert e.record is not None
            producer.send_record("purchases", e.record)

    results = {}
    for processes, db in ((1, 1), (2, 2)):
        repo = copy_feature_repo(tmp_path / f"p{processes}")
        url = f"redis://127.0.0.1:{local_stack.redis_port}/{db}"
        apply_repo(repo, url)
        _run(local_stack, repo, tmp_path / f"state{processes}", db, "--processes", str(processes))
        results[processes] = (repo, connect_online_store(url))

    specs = {
        s.name: s for s in compile_registry(open_store(results[1][0], local_stack.online_redis_url))
    }
    users = sorted({c.user_id for c in clicks})
    read_ms = max(c.event_time for c in clicks) + 1_000
    for name in ("user_click_stats", "user_purchase_stats"):
        spec = specs[name]
        one, two = (
            read_view_log(log_root(open_store(repo, local_stack.online_redis_url).config), spec)
            for repo, _ in (results[1], results[2])
        )
        assert one and one.keys() == two.keys()
        for key in one:
            assert (one[key].times_ms, one[key].columns) == (two[key].times_ms, two[key].columns)
        for user in users:
            (a,), (b,) = (
                r[1].read([(spec, [str(user)])], read_ms)[0] for r in (results[1], results[2])
            )
            assert a == b
    # and both are right
    spec = specs["user_click_stats"]
    events = [dataclasses.asdict(c) for c in clicks]
    for user in users:
        ((values, _),) = results[2][1].read([(spec, [str(user)])], read_ms)[0]
        mine = [e for e in events if e["user_id"] == user]
        assert values == view_values(mine, spec, read_ms)
    # Each process wrote its own log files.
    files = {p.name for p in (results[2][0] / "data" / "offline_log").rglob("part-*.parquet")}
    assert any(f.endswith("-0of2.parquet") for f in files)
    assert any(f.endswith("-1of2.parquet") for f in files)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_engine_processes_do_not_outlive_a_killed_parent(
    local_stack: Settings, tmp_path: Path
) -> None:
    import signal

    repo = copy_feature_repo(tmp_path)
    url = f"redis://127.0.0.1:{local_stack.redis_port}/3"
    apply_repo(repo, url)
    env = cli_env(
        local_stack,
        FEATURESTREAM_REPO_PATH=str(repo),
        FEATURESTREAM_STATE_DIR=str(tmp_path / "state"),
        FEATURESTREAM_REDIS_URL=url,
        FEATURESTREAM_METRICS_PORT="0",
    )
    parent = subprocess.Popen([*FEATURESTREAM, "run", "--processes", "2"], env=env)
    deadline = time.monotonic() + 60
    children: list[int] = []
    while time.monotonic() < deadline and len(children) < 2:
        children = _children(parent.pid)
        time.sleep(0.2)
    assert len(children) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
        time.sleep(0.1)
    alive = [
        c
        for c in children
        if Path(f"/proc/{c}/stat").exists()
        and Path(f"/proc/{c}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    ]
    assert alive == []
