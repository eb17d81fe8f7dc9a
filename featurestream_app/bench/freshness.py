"""Freshness: produce call -> readable through ``featurestream serve``, at a paced rate,
with the broker's own share timed by a plain consumer and the CPU of each component."""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from featurestream.errors import StackError
from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from featurestream_app.stack import free_port
from producers import EventProducer, TrafficConfig, TrafficGenerator

from .runs import (
    FEATURE,
    PROBE_USERS_FROM,
    background,
    children_of,
    db_url,
    engine_command,
    engine_env,
    percentile,
)
from .serving import running_server

__all__ = ["measure_freshness"]


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
    return [pid, *(c for child in children_of(pid) for c in _tree(child))]


def _summary(lat: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(lat), 1),
        "p90_ms": round(percentile(lat, 0.90), 1),
        "p99_ms": round(percentile(lat, 0.99), 1),
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
    env = engine_env(settings, Path(engine["state_dir"]), db_url(settings, engine["redis_db"]))
    port = free_port()
    serve = [sys.executable, "-m", "featurestream_app.cli", "serve", "--port", str(port)]
    bootstrap = settings.bootstrap_servers
    with (
        background(
            engine_command(engine["processes"], stop_at_end=False), env, work / "fresh-engine.log"
        ) as engine_proc,
        running_server(
            "featurestream serve", [*serve, "--workers", "2"], env, port, work / "fresh-serve.log"
        ) as server_pid,
    ):
        probes = _Probes(port)
        # Probe users no earlier measurement on this stack used (each must start at 0).
        first = PROBE_USERS_FROM + int(time.time()) % 100_000 * 10_000
        # Warm up: the engine is tailing once a first probe is readable.
        with EventProducer(bootstrap, config=FRESHNESS_PRODUCER) as producer:
            warm = first - 1
            producer.send_record("clicks", _probe(warm))
            producer.flush()
            deadline = time.monotonic() + 300
            while not _readable(port, warm):
                if time.monotonic() > deadline:
                    raise StackError(f"the engine did not pick up a probe; log {work}")
                time.sleep(0.1)
        broker = _BrokerProbe(bootstrap)
        stop = threading.Event()
        threads = [
            # After the load, probes still pending are waited for (the poller returns as
            # soon as none is): a slow machine's backlog is measured, not cut off.
            threading.Thread(
                target=probes.poll_until, args=(stop, max(60.0, 4 * seconds)), daemon=True
            ),
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
        cpu_seconds = {
            name: _cpu_seconds(pids) - cpu_before[name] for name, pids in components.items()
        }
        cpu = {name: round(used / produced_for, 3) for name, used in cpu_seconds.items()}
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    lat = probes.latencies_ms
    if not lat or not broker.latencies_ms:
        raise StackError(f"no probe became readable; logs in {work}")
    return {
        "target_rate": rate,
        "achieved_rate": round(len(messages) / max(took[0], 1e-3)) if took else 0,
        "seconds": seconds,
        "probes": n,
        "probes_never_readable": n - len(lat),
        "poll_errors": probes.poll_errors,
        **_summary(lat),
        "broker_only": _summary(broker.latencies_ms),
        "cores_busy": cpu,
        "cpu_seconds": {name: round(used, 3) for name, used in cpu_seconds.items()},
        "producer_config": FRESHNESS_PRODUCER,
        "latencies_ms": [round(x, 2) for x in sorted(lat)],
    }


def _readable(port: int, user: int) -> bool:
    """Whether the server reads ``user``'s probe (False also when it is not answering yet)."""
    try:
        return bool(_counts(port, [user])[0])
    except OSError:  # HTTP errors (a 503 while Redis is busy) and timeouts
        return False


def _probe(user: int) -> dict[str, Any]:
    import uuid

    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "item_id": 1,
        "page": "home",
        "event_time": time.time_ns() // 1_000_000,
    }
