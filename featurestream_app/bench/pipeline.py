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

import io
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from featurestream.errors import StackError
from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from featurestream_app.stack import cli_env, free_port, log_tail
from featurestream_app.traffic import KafkaSink, produce_generated
from producers import EventProducer, TrafficConfig, TrafficGenerator

from .machine import describe_machine
from .serving import running_server
from .workspace import bench_stack

__all__ = ["bench_pipeline"]

VIEW = "user_click_stats"
FEATURE = f"{VIEW}:clicks_last_5min"
_PARTITIONS = 4
_PROBE_USERS_FROM = 10**12  # probe users no generated click uses


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _produce(settings: Settings, events: int, users: int, seed: int) -> dict[str, Any]:
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


def _progress_total(store: Any, project: str) -> int:
    """Events the engine has claimed online (the sum of its next offsets)."""
    return sum(store.progress(project).values())


def _db_url(settings: Settings, db: int) -> str:
    return f"redis://127.0.0.1:{settings.redis_port}/{db}"


def _engine_env(settings: Settings, state: Path, redis_url: str) -> dict[str, str]:
    return cli_env(
        settings,
        FEATURESTREAM_STATE_DIR=str(state),
        FEATURESTREAM_METRICS_PORT="0",
        FEATURESTREAM_REDIS_URL=redis_url,
        # Runs share the offline log: no run restores another's events into its db.
        FEATURESTREAM_RESTORE_ONLINE="false",
    )


def _warm_views(settings: Settings, state: Path, redis_url: str) -> None:
    """Compile the views into ``state``'s cache, as any earlier run would have (in the
    engine's environment: the cache is keyed by the config as it expands there)."""
    from streams.definitions import cached_views, compile_registry
    from streams.offline.feast_store import log_root
    from streams.repo import open_store

    def compile_all() -> tuple[tuple[Any, ...], Path]:
        store = open_store(settings.repo_path, redis_url)
        return compile_registry(store), log_root(store.config)

    saved = dict(os.environ)
    os.environ.update(_engine_env(settings, state, redis_url))
    try:
        cached_views(settings.repo_path, state / "views", compile_all)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _engine_command(processes: int, stop_at_end: bool) -> list[str]:
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

    url = _db_url(settings, db)
    apply_repo(settings.repo_path, url)
    tiles = connect_online_store(url)
    state = work / f"engine-{processes}p"
    _warm_views(settings, state, url)
    log = work / f"engine-{processes}p.log"
    samples: list[tuple[float, int]] = []
    with log.open("wb") as out:
        launched = time.perf_counter()
        zero_at = launched
        proc = subprocess.Popen(
            _engine_command(processes, stop_at_end=True),
            env=_engine_env(settings, state, url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        while proc.poll() is None:
            now = time.perf_counter()
            if now - launched > timeout_s:
                proc.kill()
                proc.wait()
                raise StackError(f"engine run did not end within {timeout_s:.0f} s; log {log}")
            total = _progress_total(tiles, project)
            if not total:
                zero_at = now
            elif not samples or total != samples[-1][1]:
                samples.append((now, total))
            time.sleep(_POLL_S)
        exited = time.perf_counter()
    if proc.returncode != 0:
        raise StackError(f"engine run failed ({proc.returncode}); log {log}:\n{log_tail(log)}")
    final = _progress_total(tiles, project)
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
def _process(
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


def _post(port: int, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/get-online-features",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local server
        out: dict[str, Any] = json.loads(response.read())
        return out


def _counts(port: int, users: list[int]) -> list[Any]:
    """``clicks_last_5min`` of ``users`` through the feature server."""
    reply = _post(port, {"features": [FEATURE], "entities": {"user_id": users}})
    names = reply["metadata"]["feature_names"]
    values: list[Any] = reply["results"][names.index(FEATURE.split(":")[1])]["values"]
    return values


class _Probes:
    """Probe clicks of fresh users, timed from produce until the server counts them."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._sent: dict[int, float] = {}
        self._lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.poll_errors = 0
        self._stop = threading.Event()

    def sent(self, user: int, at: float) -> None:
        with self._lock:
            self._sent[user] = at

    def poll_until(self, stop: threading.Event, grace_s: float) -> None:
        """Poll the server for pending probes until ``stop`` and then ``grace_s`` more."""
        stopped_at: float | None = None
        while True:
            if stop.is_set() and stopped_at is None:
                stopped_at = time.perf_counter()
            with self._lock:
                pending = dict(self._sent)
            if not pending and stopped_at is not None:
                return
            if stopped_at is not None and time.perf_counter() - stopped_at > grace_s:
                return
            if pending:
                users = sorted(pending)
                try:
                    values = _counts(self._port, users)
                except OSError:  # 503 when overloaded, a refused connection: ask again
                    self.poll_errors += 1
                    time.sleep(0.01)
                    continue
                now = time.perf_counter()
                with self._lock:
                    for user, value in zip(users, values, strict=True):
                        if value:
                            self.latencies_ms.append((now - self._sent.pop(user)) * 1000)
            time.sleep(0.002)


# The producers of the freshness run: acks=all without idempotence. With the
# idempotent producer (the library default), the local broker (Tansu 0.6) holds about
# 2% of produce requests for ~500 ms: measured with a plain consumer and no engine,
# producer -> consumer p99 is 488 ms with idempotence and 28 ms without.
FRESHNESS_PRODUCER = {"enable.idempotence": False, "acks": "all", "linger.ms": 5}


class _BrokerProbe:
    """A plain consumer timing the probes from produce to consume: the broker's part."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": "featurestream-bench-probe",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        parts = self._consumer.list_topics("clicks", timeout=10).topics["clicks"].partitions
        self._consumer.assign([TopicPartition("clicks", p, OFFSET_END) for p in parts])
        self.sent: dict[bytes, float] = {}
        self.latencies_ms: list[float] = []

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                for message in self._consumer.consume(10_000, 0.01):
                    key = message.key()
                    at = self.sent.pop(key, None) if key is not None else None
                    if at is not None:
                        self.latencies_ms.append((time.perf_counter() - at) * 1000)
        finally:
            self._consumer.close()


def _encoded_load(rate: int, seconds: float, start_ms: int) -> list[tuple[bytes, bytes]]:
    """``rate * seconds`` demo clicks, encoded ahead (so producing them costs the load
    generator little CPU), with event times ``start_ms + i / rate``."""
    codec = AvroCodec(load_contracts())
    generator = TrafficGenerator(TrafficConfig(topic="clicks", users=100_000, seed=17), codec)
    total = int(rate * seconds)
    out: list[tuple[bytes, bytes]] = []
    for first in range(0, total, 50_000):
        times = [start_ms + (first + i) * 1000 // rate for i in range(min(50_000, total - first))]
        out += [
            (e.key, codec.encode("clicks", e.record))
            for e in generator.batch(times)
            if e.record is not None
        ]
    return out


def _produce_paced(
    bootstrap: str, messages: list[tuple[bytes, bytes]], rate: int, start: float
) -> float:
    """Produce ``messages`` at ``rate`` per second from ``start`` (perf counter); the
    seconds it took."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, **FRESHNESS_PRODUCER})
    time.sleep(max(0.0, start - time.perf_counter()))
    sent = 0
    while sent < len(messages):
        due = min(len(messages), int((time.perf_counter() - start) * rate) + 1)
        while sent < due:
            key, value = messages[sent]
            try:
                producer.produce("clicks", value=value, key=key)
            except BufferError:
                producer.poll(0.01)
                continue
            sent += 1
        producer.poll(0)
        time.sleep(0.002)
    producer.flush(60)
    return time.perf_counter() - start


def _components(settings: Settings, engine_pid: int, server_pid: int) -> dict[str, list[int]]:
    """The processes of every component, for CPU accounting."""
    return {
        "engine": _tree(engine_pid),
        "feature server": _tree(server_pid),
        "broker": _pids_listening(settings.broker_port),
        "redis": _pids_listening(settings.redis_port),
        "load generator, probes, poller": [os.getpid()],
    }


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        except (OSError, IndexError, ValueError):
            continue
    return total


def _pids_listening(port: int) -> list[int]:
    """Processes whose command line names ``127.0.0.1:{port}`` (the broker, Redis)."""
    needle = f"127.0.0.1:{port}".encode()
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    out.append(int(entry.name))
            except OSError:
                continue
    return out


def _tree(pid: int) -> list[int]:
    return [pid, *(c for child in _children(pid) for c in _tree(child))]


def _summary(lat: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(lat), 1),
        "p90_ms": round(_percentile(lat, 0.90), 1),
        "p99_ms": round(_percentile(lat, 0.99), 1),
        "max_ms": round(max(lat), 1),
    }


def measure_freshness(
    settings: Settings,
    work: Path,
    engine: dict[str, Any],
    rate: int,
    seconds: float,
    probe_every_s: float = 0.05,
) -> dict[str, Any]:
    """Freshness at ``rate`` clicks/s: produce call -> value readable via the server.

    Also measured over the same probes: the broker's part (produce -> a plain
    consumer), and the CPU each component used (cores busy on average).
    """
    env = _engine_env(settings, Path(engine["state_dir"]), _db_url(settings, engine["redis_db"]))
    port = free_port()
    serve = [sys.executable, "-m", "featurestream_app.cli", "serve", "--port", str(port)]
    bootstrap = settings.bootstrap_servers
    with (
        _process(
            _engine_command(engine["processes"], stop_at_end=False), env, work / "fresh-engine.log"
        ) as engine_proc,
        running_server(
            "featurestream serve", [*serve, "--workers", "2"], env, port, work / "fresh-serve.log"
        ) as server_pid,
    ):
        probes = _Probes(port)
        # Probe users no earlier measurement on this stack used (each must start at 0).
        first = _PROBE_USERS_FROM + int(time.time()) % 100_000 * 10_000
        # Warm up: the engine is tailing once a first probe is readable.
        with EventProducer(bootstrap, config=FRESHNESS_PRODUCER) as producer:
            warm = first - 1
            producer.send_record("clicks", _probe(warm))
            producer.flush()
            deadline = time.monotonic() + 300
            while not _counts(port, [warm])[0]:
                if time.monotonic() > deadline:
                    raise StackError(f"the engine did not pick up a probe; log {work}")
                time.sleep(0.1)
        broker = _BrokerProbe(bootstrap)
        stop = threading.Event()
        threads = [
            threading.Thread(target=probes.poll_until, args=(stop, 10.0), daemon=True),
            threading.Thread(target=broker.run, args=(stop,), daemon=True),
        ]
        for thread in threads:
            thread.start()
        # The load, encoded ahead to start a few seconds from now.
        start_ms = time.time_ns() // 1_000_000 + 3_000 + int(rate * seconds) // 100
        messages = _encoded_load(rate, seconds, start_ms)
        started = time.perf_counter() + (start_ms - time.time_ns() // 1_000_000) / 1000
        took: list[float] = []
        load = threading.Thread(
            target=lambda: took.append(_produce_paced(bootstrap, messages, rate, started)),
            daemon=True,
        )
        components = _components(settings, engine_proc.pid, server_pid)
        load.start()
        time.sleep(max(0.0, started - time.perf_counter()))
        cpu_before = {name: _cpu_seconds(pids) for name, pids in components.items()}
        with EventProducer(bootstrap, config=FRESHNESS_PRODUCER) as producer:
            n = 0
            while time.perf_counter() - started < seconds:
                user = first + n
                now = time.perf_counter()
                probes.sent(user, now)
                broker.sent[str(user).encode()] = now
                producer.send_record("clicks", _probe(user))
                n += 1
                time.sleep(max(0.0, started + n * probe_every_s - time.perf_counter()))
            producer.flush()
        load.join(timeout=seconds + 120)
        produced_for = time.perf_counter() - started
        cpu = {
            name: round((_cpu_seconds(pids) - cpu_before[name]) / produced_for, 2)
            for name, pids in components.items()
        }
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    lat = probes.latencies_ms
    if not lat or not broker.latencies_ms:
        raise StackError(f"no probe became readable; logs in {work}")
    return {
        "target_rate": rate,
        "achieved_rate": round(len(messages) / took[0]) if took else 0,
        "seconds": seconds,
        "probes": n,
        "probes_never_readable": n - len(lat),
        "poll_errors": probes.poll_errors,
        **_summary(lat),
        "broker_only": _summary(broker.latencies_ms),
        "cores_busy": cpu,
        "producer_config": FRESHNESS_PRODUCER,
        "latencies_ms": [round(x, 2) for x in sorted(lat)],
    }


def _probe(user: int) -> dict[str, Any]:
    import uuid

    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "item_id": 1,
        "page": "home",
        "event_time": time.time_ns() // 1_000_000,
    }


def _rss_bytes(pid: int) -> int:
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            with open(f"/proc/{p}/status", encoding="ascii") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def measure_memory(users: int, timeout_s: float) -> dict[str, Any]:
    """Engine RSS growth per active entity and Redis bytes per entity, ``users`` users
    with 2 clicks each (minutes apart) in the view's windows."""
    import random

    from streams.definitions import compile_registry
    from streams.online import connect_online_store
    from streams.repo import apply_repo, open_store

    with bench_stack(partitions=_PARTITIONS) as (work, settings):
        rng = random.Random(3)  # noqa: S311 - synthetic data
        with EventProducer(settings.bootstrap_servers) as producer:
            for user, k, t in _two_clicks_each(users, time.time_ns() // 1_000_000):
                record = {
                    "event_id": f"m-{user}-{k}",
                    "user_id": user,
                    "item_id": rng.randrange(1, 5_000),
                    "page": "home",
                    "event_time": t,
                }
                producer.send_record("clicks", record)
            producer.flush()
        url = settings.online_redis_url
        apply_repo(settings.repo_path, url)
        online = connect_online_store(url)
        redis_before = online.stats().used_bytes or 0
        state = work / "engine"
        _warm_views(settings, state, url)
        env = _engine_env(settings, state, url)
        samples: list[tuple[int, int]] = []  # (active entities, engine RSS)
        log = work / "engine.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                _engine_command(1, stop_at_end=True), env=env, stdout=out, stderr=subprocess.STDOUT
            )
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise StackError(f"memory run took over {timeout_s} s; log {log}")
                # Every active entity has one key (plus a few engine keys).
                keys = online.stats().keys
                rss = _rss_bytes(proc.pid)
                if rss:  # 0: the process ended between the poll and the read
                    samples.append((keys, rss))
                time.sleep(0.25)
        if proc.returncode != 0:
            raise StackError(f"engine run failed; log {log}:\n{log_tail(log)}")
        if not samples:
            raise StackError(f"the memory run ended before its memory could be sampled; log {log}")
        views = compile_registry(open_store(settings.repo_path, url))
        spec = next(v for v in views if v.name == VIEW)
        entities = len(online.entities(spec, 2 * users + 10))
        redis_after = online.stats().used_bytes or 0
    # The marginal cost: RSS growth from a fifth of the entities to all of them (the
    # fixed buffers, e.g. the Kafka client's prefetch, are there at both points).
    top = max(keys for keys, _ in samples)
    start = next(s for s in samples if s[0] >= top // 5)
    end = (top, max(rss for _, rss in samples[samples.index(start) :]))
    return {
        "active_entities": entities,
        "events": 2 * users,
        "engine_rss_bytes": end[1],
        "engine_rss_bytes_per_entity_total": round(end[1] / entities),
        "marginal_from_entities": start[0],
        "marginal_from_rss_bytes": start[1],
        "engine_rss_bytes_per_entity": round((end[1] - start[1]) / max(1, end[0] - start[0])),
        "redis_keys": entities,
        "redis_bytes_per_entity": round((redis_after - redis_before) / entities),
    }


def _two_clicks_each(users: int, now_ms: int) -> Iterator[tuple[int, int, int]]:
    """``(user, k, event time)``: two clicks per user two minutes apart, users spread
    over the last 50 minutes, in event-time order (so none is late)."""
    start, step, gap = now_ms - 3_000_000, 2_700_000 / users, 120_000
    second = 1
    for user in range(1, users + 1):
        first_ms = start + int(user * step)
        while second < user and start + int(second * step) + gap <= first_ms:
            yield second, 1, start + int(second * step) + gap
            second += 1
        yield user, 0, first_ms
    for user in range(second, users + 1):
        yield user, 1, start + int(user * step) + gap


def _project(settings: Settings) -> str:
    import yaml

    doc = yaml.safe_load((settings.repo_path / "feature_store.yaml").read_text())
    return str(doc["project"])


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
    with bench_stack(partitions=_PARTITIONS) as (work, settings):
        project = _project(settings)
        progress(f"producing {events:,} clicks of {users:,} users")
        results["produce"] = _produce(settings, events, users, seed=7) | {"users": users}
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
        repo = write_baseline_repo(work / "baseline", _db_url(settings, 3))
        results["baseline"] = run_baseline(
            settings.bootstrap_servers, "clicks", repo, n, timeout_s, wake_on_window_close=False
        )
        # As the docs' examples leave EventClock (slower on a backlog): a sixth of the run.
        repo = write_baseline_repo(work / "baseline-docs-clock", _db_url(settings, 4))
        results["baseline_docs_clock"] = run_baseline(
            settings.bootstrap_servers, "clicks", repo, max(100, n // 6), timeout_s
        )
        best = max(engines, key=lambda e: e["events_per_s"])
        rate = max(1, best["events_per_s"] // 2)
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
