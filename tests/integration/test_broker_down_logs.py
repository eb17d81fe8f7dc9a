"""With the broker down the engine says so, a few times, instead of drowning its log.

Real engine (``featurestream run``), real embedded broker, killed under it: every line
the engine writes in a fixed window after that is counted. The bound does not depend on
the machine's speed: librdkafka retries on timers, and the rate limit is per kind of
message and time. The negative control runs the same engine with the limit switched
off (:func:`featurestream.logs.set_kafka_log_interval` ``(0)`` before the command).
"""

from __future__ import annotations

import re
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from featurestream.clock import wall_clock_ms
from featurestream.events import AvroCodec, load_contracts
from featurestream.logs import KAFKA_LOG_INTERVAL_S
from featurestream.settings import Settings
from featurestream_app.stack import Supervisor, free_port
from producers import EventProducer, TrafficConfig, TrafficGenerator
from streams.repo import apply_repo
from tests.support import (
    FEATURESTREAM,
    Background,
    copy_feature_repo,
    running_stack,
    stack_env,
    wait_until,
)

pytestmark = pytest.mark.integration

WINDOW_S = 15.0
# Lines of one kind a rate-limited engine may write in the window: one per interval,
# and a few for kinds that start in it (the first of each is written at once).
PER_KIND = int(WINDOW_S / KAFKA_LOG_INTERVAL_S) + 3
UNLIMITED = (
    "from featurestream.logs import set_kafka_log_interval; set_kafka_log_interval(0); "
    "from featurestream_app.cli.main import main; main()"
)


@pytest.fixture()
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A local stack of its own: the test kills its broker."""
    yield from running_stack(tmp_path_factory)


def _produce(settings: Settings) -> int:
    codec = AvroCodec(load_contracts())
    now_ms = wall_clock_ms()
    sent = 0
    with EventProducer(settings.bootstrap_servers) as producer:
        for topic in ("clicks", "impressions", "purchases"):
            config = TrafficConfig(topic=topic, users=3, items=5, seed=1, jitter_ms=0)
            for emitted in TrafficGenerator(config, codec).batch([now_ms - 5_000] * 6):
                if emitted.record is not None:
                    producer.send_record(topic, emitted.record)
                    sent += 1
    return sent


def _counted_events(port: int, engine: Background) -> int:
    assert engine.proc.poll() is None, f"engine exited:\n{engine.tail()}"
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("featurestream_events_total{")
    )


def _lines_with_the_broker_down(
    settings: Settings, tmp_path: Path, argv: Sequence[str]
) -> tuple[list[str], Background]:
    """Every line the engine (``argv``) writes in the ``WINDOW_S`` after its broker is
    killed, once it consumed what was produced before."""
    repo = copy_feature_repo(tmp_path)
    apply_repo(repo, settings.online_redis_url)
    produced = _produce(settings)
    port = free_port()
    env = stack_env(
        settings,
        repo,
        FEATURESTREAM_STATE_DIR=str(settings.state_dir),
        FEATURESTREAM_METRICS_PORT=str(port),
    )
    engine = Background(argv, tmp_path / "engine.log", env=env)
    try:
        wait_until(lambda: _counted_events(port, engine) >= produced, 120, "the engine consuming")
        start = engine.log.stat().st_size
        assert Supervisor(settings.state_dir).stop("broker")
        time.sleep(WINDOW_S)  # the measured window, not a wait for a condition
        assert engine.proc.poll() is None, f"engine exited:\n{engine.tail()}"
        window = engine.log.read_bytes()[start:].decode(errors="replace")
    finally:
        engine.stop()
    return window.splitlines(), engine


def _kinds(lines: list[str]) -> Counter[str]:
    """Lines by kind: their text with the timestamp dropped and every number masked."""
    return Counter(re.sub(r"\d+", "N", line.split(" ", 2)[-1]) for line in lines)


def test_the_engine_reports_a_dead_broker_in_a_few_lines(stack: Settings, tmp_path: Path) -> None:
    lines, engine = _lines_with_the_broker_down(stack, tmp_path, [*FEATURESTREAM, "run"])
    kinds = _kinds(lines)
    assert kinds, f"nothing logged with the broker down:\n{engine.tail()}"
    assert max(kinds.values()) <= PER_KIND, kinds.most_common(3)
    assert len(lines) <= 4 * PER_KIND, kinds.most_common(5)
    unreachable = [line for line in lines if "WARNING" in line and "unreachable" in line]
    assert unreachable, lines[:20]
    assert f"kafka at {stack.bootstrap_servers} unreachable" in unreachable[0]


def test_negative_control_without_the_limit_the_engine_floods(
    stack: Settings, tmp_path: Path
) -> None:
    lines, _ = _lines_with_the_broker_down(
        stack, tmp_path, [sys.executable, "-c", UNLIMITED, "run"]
    )
    kinds = _kinds(lines)
    assert max(kinds.values(), default=0) > PER_KIND, kinds.most_common(3)
    assert len(lines) > 4 * PER_KIND
