"""What the pipeline benchmark's sections share: the stream it runs on, and engine
processes launched, configured and watched the way a user runs them."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from featurestream.errors import StackError
from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from featurestream_app.stack import cli_env, log_tail
from featurestream_app.traffic import KafkaSink, produce_generated
from producers import EventProducer, TrafficConfig, TrafficGenerator

__all__ = [
    "FEATURE",
    "PARTITIONS",
    "PROBE_USERS_FROM",
    "VIEW",
    "background",
    "children_of",
    "consume_decode",
    "db_url",
    "engine_command",
    "engine_env",
    "engine_rate",
    "percentile",
    "produce_stream",
    "progress_total",
    "project_of",
    "rss_bytes",
    "run_engine_timed",
    "view_state",
    "warm_views",
]

VIEW = "user_click_stats"
FEATURE = f"{VIEW}:clicks_last_5min"
PARTITIONS = 4
PROBE_USERS_FROM = 10**12  # probe users no generated click uses


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def produce_stream(settings: Settings, events: int, users: int, seed: int) -> dict[str, Any]:
    """``events`` clicks of ``users`` Zipf users with event times over the last 50 min."""
    generator = TrafficGenerator(
        TrafficConfig(topic="clicks", users=users, seed=seed), AvroCodec(load_contracts())
    )
    now_ms = time.time_ns() // 1_000_000
    rate = events / 3000
    started = time.perf_counter()
    produce_generated(
        generator,
        KafkaSink(EventProducer(settings.bootstrap_servers)),
        rate=rate,
        total=events,
        pace=False,
        start_ms=now_ms - 3_000_000,
    )
    seconds = time.perf_counter() - started
    return {"events": events, "seconds": round(seconds, 2), "events_per_s": round(events / seconds)}


def consume_decode(bootstrap: str, topic: str, events: int, timeout_s: float) -> dict[str, Any]:
    """(a) The ceiling: read ``events`` messages of every partition and decode them with
    fastavro, nothing else. Timed from the first message to the last."""
    from confluent_kafka import Consumer, TopicPartition
    from fastavro import schemaless_reader

    contract = next(c for c in load_contracts() if c.topic == topic)
    schema = contract.parsed
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "featurestream-bench-ceiling",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
        n = 0
        first = 0.0
        deadline = time.monotonic() + timeout_s
        while n < events:
            if time.monotonic() > deadline:
                raise StackError(f"ceiling: {n} of {events} messages within {timeout_s} s")
            for message in consumer.consume(10_000, 1.0):
                value = message.value()
                if message.error() is not None or value is None:
                    continue
                if not n:
                    first = time.perf_counter()
                body = io.BytesIO(value)
                body.seek(10)  # single-object header
                schemaless_reader(body, schema, None)
                n += 1
        seconds = time.perf_counter() - first
    finally:
        consumer.close()
    return {"events": n, "seconds": round(seconds, 2), "events_per_s": round(n / seconds)}


def progress_total(store: Any, state: Any) -> int:
    """Events the engine has claimed online for a view (the sum of its next offsets)."""
    return sum(store.progress(state).values())


def view_state(settings: Settings, url: str, name: str = VIEW) -> Any:
    """The online records' identity of the repository's view ``name``."""
    from streams.definitions import compile_registry
    from streams.online import ViewState
    from streams.repo import open_store

    spec = next(v for v in compile_registry(open_store(settings.repo_path, url)) if v.name == name)
    return ViewState.of(spec)


def db_url(settings: Settings, db: int) -> str:
    return f"redis://127.0.0.1:{settings.redis_port}/{db}"


def engine_env(settings: Settings, state: Path, redis_url: str) -> dict[str, str]:
    return cli_env(
        settings,
        FEATURESTREAM_STATE_DIR=str(state),
        FEATURESTREAM_METRICS_PORT="0",
        FEATURESTREAM_REDIS_URL=redis_url,
        # Runs share the offline log: no run restores another's events into its db.
        FEATURESTREAM_RESTORE_ONLINE="false",
    )


def warm_views(settings: Settings, state: Path, redis_url: str) -> None:
    """Compile the views into ``state``'s cache, as any earlier run would have (in the
    engine's environment: the cache is keyed by the config as it expands there)."""
    from streams.definitions import cached_views, compile_registry
    from streams.offline.feast_store import log_root
    from streams.repo import open_store

    def compile_all() -> tuple[tuple[Any, ...], Path]:
        store = open_store(settings.repo_path, redis_url)
        return compile_registry(store), log_root(store.config)

    saved = dict(os.environ)
    os.environ.update(engine_env(settings, state, redis_url))
    try:
        cached_views(settings.repo_path, state / "views", compile_all)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def engine_command(processes: int, stop_at_end: bool) -> list[str]:
    command = [sys.executable, "-m", "featurestream_app.cli", "run", VIEW]
    command += ["--processes", str(processes)]
    return [*command, "--stop-at-end"] if stop_at_end else command


# A steady rate needs progress seen at least this many times over at least this long;
# a shorter run is reported from its first online write to its end (and says so).
_STEADY_SAMPLES = 3
_STEADY_SPAN_S = 0.5
_POLL_S = 0.02


def engine_rate(samples: list[tuple[float, int]], zero_at: float, events: int) -> tuple[float, str]:
    """``(events/s, how it was measured)`` from progress samples ``(time, events claimed)``.

    ``steady``: from the first to the last sample, when there are enough of them over
    long enough. Otherwise ``from_first_write``: every event over the time from the
    last poll that saw no progress (``zero_at``) to the last sample, a bound that
    includes up to one poll interval of start-up; always finite.
    """
    (t_first, n_first), (t_last, n_last) = samples[0], samples[-1]
    if len(samples) >= _STEADY_SAMPLES and t_last - t_first >= _STEADY_SPAN_S:
        return (n_last - n_first) / (t_last - t_first), "steady"
    return events / max(t_last - zero_at, _POLL_S), "from_first_write"


def run_engine_timed(
    settings: Settings,
    processes: int,
    db: int,
    work: Path,
    events: int,
    project: str,
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """(b) One catch-up run of the engine, its progress watched in the online store."""
    from streams.online import connect_online_store
    from streams.repo import apply_repo

    url = db_url(settings, db)
    apply_repo(settings.repo_path, url)
    tiles = connect_online_store(url)
    records = view_state(settings, url)
    state = work / f"engine-{processes}p"
    warm_views(settings, state, url)
    log = work / f"engine-{processes}p.log"
    samples: list[tuple[float, int]] = []
    with log.open("wb") as out:
        launched = time.perf_counter()
        zero_at = launched
        proc = subprocess.Popen(
            engine_command(processes, stop_at_end=True),
            env=engine_env(settings, state, url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        while proc.poll() is None:
            now = time.perf_counter()
            if now - launched > timeout_s:
                proc.kill()
                proc.wait()
                raise StackError(f"engine run did not end within {timeout_s:.0f} s; log {log}")
            total = progress_total(tiles, records)
            if not total:
                zero_at = now
            elif not samples or total != samples[-1][1]:
                samples.append((now, total))
            time.sleep(_POLL_S)
        exited = time.perf_counter()
    if proc.returncode != 0:
        raise StackError(f"engine run failed ({proc.returncode}); log {log}:\n{log_tail(log)}")
    final = progress_total(tiles, records)
    if final != events:
        raise StackError(f"engine run claimed {final} of {events} events; log {log}")
    if not samples or samples[-1][1] != final:
        samples.append((exited, final))  # claimed between the last poll and the exit
    rate, basis = engine_rate(samples, zero_at, events)
    return {
        "processes": processes,
        "events": events,
        "events_per_s": round(rate),
        "rate_basis": basis,
        "progress_samples": len(samples),
        "start_seconds": round(samples[0][0] - launched, 2),
        "seconds_with_start": round(exited - launched, 2),
        "events_per_s_with_start": round(events / (exited - launched)),
        "redis_db": db,
        "state_dir": str(state),
    }


@contextmanager
def background(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def rss_bytes(pid: int) -> int:
    total = 0
    for p in [pid, *children_of(pid)]:
        try:
            with open(f"/proc/{p}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def project_of(settings: Settings) -> str:
    import yaml

    doc = yaml.safe_load((settings.repo_path / "feature_store.yaml").read_text())
    return str(doc["project"])
