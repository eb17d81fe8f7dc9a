"""Helpers shared by every tier of tests (no fixtures, no magic)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.core import AggregationSpec, ViewSpec

REPO_ROOT = Path(__file__).resolve().parent.parent
FEATURE_REPO = REPO_ROOT / "feature_repo"
# A purchases view of every kind of aggregation the unit suites judge against the
# reference (project "p").
SPEND_VIEW = ViewSpec(
    project="p",
    name="spend",
    topic="purchases",
    join_keys=("user_id",),
    timestamp_field="event_time",
    allowed_lateness_ms=30_000,
    aggregations=(
        AggregationSpec("n_10m", "count", "event_id", 600_000, 10_000),
        AggregationSpec("sum_1h", "sum", "amount", 3_600_000, 60_000),
        AggregationSpec("items_10m", "count_distinct", "item_id", 600_000, 10_000),
        AggregationSpec("last_1h", "last", "amount", 3_600_000, 60_000),
    ),
    field_types=(
        ("user_id", "long"),
        ("event_id", "string"),
        ("amount", "double"),
        ("item_id", "long"),
    ),
)

FEATURESTREAM = (sys.executable, "-m", "featurestream_app.cli")
"""The ``featurestream`` command, run with this interpreter."""


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 180, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """``featurestream ARGS`` as a user runs it (``env``: the whole environment; default
    this process's). With ``ok`` it must exit 0 (its stderr is the failure message)."""
    result = subprocess.run(
        [*FEATURESTREAM, *args],
        env=dict(env) if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def stack_env(settings: Any, repo: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a ``featurestream`` process on ``settings``' local stack and
    ``repo`` (default: ``settings.repo_path``), with ``extra`` variables on top."""
    from featurestream_app.stack import cli_env

    if repo is not None:
        extra = {"FEATURESTREAM_REPO_PATH": str(repo), **extra}
    return cli_env(settings, **extra)


def read_after(
    view: Any, updates: Sequence[Any], read_time_ms: int, entity: str | None = None
) -> Any:
    """What an online store holds for one entity after ``updates`` (tile updates, in
    order), read at ``read_time_ms``: every aggregation's value. Uses the in-memory
    store of the port (the unit tests' online store)."""
    from featurestream.clock import fixed_clock
    from streams.online.memory import MemoryOnlineStore

    store = MemoryOnlineStore(clock=fixed_clock(read_time_ms))
    for update in updates:
        store.write([update], project=view.project)
    entity = entity if entity is not None else (updates[0].entity if updates else "")
    ((values, _),) = store.read([(view, [entity])], read_time_ms)[0]
    return values


class Background:
    """A process of a test (a server, a broker, Redis), stopped by its own process group.

    Args:
        argv: The command.
        log: Its stdout and stderr.
        env: Variables on top of this process's environment.
    """

    def __init__(
        self, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                list(argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )

    def tail(self) -> str:
        """The end of its log."""
        return self.log.read_text(errors="replace")[-3000:]

    def wait_http(self, url: str, timeout_s: float = 120) -> None:
        """Wait until ``url`` answers 200 (failing at once when the process exits); an
        ``https`` URL's certificate is not checked (tests use self-signed ones)."""
        import ssl
        import urllib.request

        context = None
        if url.startswith("https://"):
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE

        def up() -> bool:
            assert self.proc.poll() is None, f"process exited:\n{self.tail()}"
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    return int(response.status) == 200
            except OSError:
                return False

        wait_until(up, timeout_s, f"{url} (log: {self.log})")

    def stop(self) -> None:
        """SIGTERM to its group, SIGKILL after 30 s."""
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def redis_server(port: int, log: Path, *args: str) -> Background:
    """A private ``redis-server`` on ``port`` (nothing on disk), once it accepts connections."""
    from featurestream_app.stack import port_open, redis_server_argv

    server = Background([*redis_server_argv(port), *args], log)
    wait_until(lambda: port_open("127.0.0.1", port), 20, f"redis-server on {port}")
    return server


def evict_tiles(url: str) -> int:
    """Make Redis at ``url`` evict for real: a volatile policy (tile keys expire, the
    engine's records do not) at a limit below what it uses, then one write; then
    ``noeviction`` without a limit again. Returns the keys evicted."""
    import redis

    admin = redis.Redis.from_url(url)
    try:
        before = int(admin.info("stats")["evicted_keys"])
        admin.config_set("maxmemory-policy", "volatile-random")
        admin.config_set("maxmemory", 1)
        with contextlib.suppress(redis.OutOfMemoryError):
            admin.set("filler", "x")
        admin.config_set("maxmemory", 0)
        admin.config_set("maxmemory-policy", "noeviction")
        return int(admin.info("stats")["evicted_keys"]) - before
    finally:
        admin.close()


def running_stack(tmp_path_factory: Any) -> Iterator[Any]:
    """A local stack (embedded broker and Redis) on free ports in a temporary state
    directory, stopped by pid when the generator is closed."""
    from featurestream.settings import Settings
    from featurestream_app.stack import down, free_port, up

    settings = Settings(
        state_dir=tmp_path_factory.mktemp("state"),
        broker_port=free_port(),
        redis_port=free_port(),
    )
    up(settings)
    try:
        yield settings
    finally:
        down(settings)


def copy_feature_repo(dest: Path) -> Path:
    """A private copy of feature_repo/ (its registry is written by apply)."""
    target = dest / "feature_repo"
    shutil.copytree(FEATURE_REPO, target, ignore=shutil.ignore_patterns("data", "__pycache__"))
    return target


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def consume_all(
    bootstrap: str, topic: str, idle_s: float = 2.0, timeout_s: float = 60.0
) -> list[Any]:
    """Every message of ``topic`` from the beginning: read until every partition has
    reported its end and nothing more arrived for ``idle_s`` after that.

    Waits for the ends rather than trusting the high watermark alone: the embedded
    broker (Tansu 0.6.0) under-reports the watermark of partitions whose last batch
    holds several records, so an end may be reported early; the idle time after it
    lets the rest arrive. The idle clock starts only once the broker answered, so a
    slow first fetch does not end the read.
    """
    from confluent_kafka import KafkaError

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 0,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        partitions = set(meta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out: list[Any] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        last_seen: float | None = None
        while time.monotonic() < deadline:
            ended = at_end >= partitions and last_seen is not None
            if ended and time.monotonic() - (last_seen or 0.0) >= idle_s:
                break
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(int(msg.partition()))
                    last_seen = last_seen or time.monotonic()
                continue
            at_end.discard(int(msg.partition()))
            out.append(msg)
            last_seen = time.monotonic()
        return out
    finally:
        consumer.close()


def run_engine_to_end(settings: Any, repo: Path) -> None:
    """Run every stream view of ``repo`` over what the topics hold, then stop: the
    engine's own supervision (markers, readiness), in this process, without recovery
    snapshots (each run rebuilds from the topics)."""
    from featurestream.events import AvroCodec, load_contracts
    from featurestream_app.engine import EngineRun, run_engine
    from streams.definitions import compile_registry
    from streams.flow import FlowMetrics
    from streams.offline.feast_store import log_root
    from streams.repo import open_store

    store = open_store(repo, settings.online_redis_url)
    run = EngineRun(
        settings.model_copy(update={"repo_path": repo}),
        compile_registry(store),
        log_root(store.config),
        stop_at_end=True,
        codec=AvroCodec(load_contracts()),
        metrics=FlowMetrics(),
        recovery=False,
    )
    assert run_engine(run, processes=1, names=()) == 0


def seeded_repo(
    settings: Any, dest: Path, *, first_user: int, seed: int
) -> tuple[Path, int, dict[str, list[dict[str, Any]]]]:
    """A served repository: a copy of feature_repo/ with the batch data of 10 users and 50
    items materialized, and clicks, impressions and purchases of two users (from
    ``first_user``) streamed through the engine.

    Event times are recent enough to be on time and old enough to sit well inside every
    window for the minutes a test takes (values do not move between reads).

    Returns:
        ``(repo, now_ms, records per topic)``.
    """
    from featurestream.clock import wall_clock_ms
    from featurestream.events import AvroCodec, load_contracts
    from producers import EventProducer, TrafficConfig, TrafficGenerator
    from streams.repo import apply_repo

    repo = copy_feature_repo(dest)
    env = stack_env(settings, repo)
    run_cli("seed-data", "--users", "10", "--first-user", str(first_user), "--items", "50", env=env)
    apply_repo(repo, settings.online_redis_url)
    run_cli("materialize", env=env)
    now_ms = wall_clock_ms()
    codec = AvroCodec(load_contracts())
    records: dict[str, list[dict[str, Any]]] = {}
    with EventProducer(settings.bootstrap_servers) as producer:
        for topic, count in (("clicks", 60), ("impressions", 150), ("purchases", 12)):
            generator = TrafficGenerator(
                TrafficConfig(
                    topic=topic, users=2, items=50, seed=seed, first_user=first_user, jitter_ms=0
                ),
                codec,
            )
            emitted = generator.batch([now_ms - 20_000 + i * 100 for i in range(count)])
            records[topic] = [e.record for e in emitted if e.record is not None]
            for record in records[topic]:
                producer.send_record(topic, record)
    run_engine_to_end(settings, repo)
    return repo, now_ms, records
