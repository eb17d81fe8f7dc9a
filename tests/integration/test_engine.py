"""The engine through the real local broker and Redis, read back through Feast's SDK."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from featurestream.settings import Settings
from producers import ClickTraffic, EventProducer
from streams.definitions import compile_registry
from streams.flow.runner import RunConfig, kafka_flow, run_flow
from streams.online.feast_store import TiledRedisOnlineStore
from streams.repo import open_store
from tests.oracle import view_values
from tests.support import consume_all

VIEW = "user_click_stats"
MIN = 60_000


def _run_to_end(settings: Settings, repo: Path) -> None:
    store = open_store(repo, settings.online_redis_url)
    config = RunConfig(
        bootstrap_servers=settings.bootstrap_servers,
        redis_url=settings.online_redis_url,
        dlq_topic=settings.dlq_topic,
        stop_at_end=True,
    )
    run_flow(kafka_flow(compile_registry(store), config))


def test_online_features_equal_oracle_and_decay_with_the_flow_stopped(
    local_stack: Settings, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_user = 1_000_000 + int(uuid.uuid4().int % 1000) * 1000
    now_ms = time.time_ns() // 1_000_000
    start_ms = now_ms - 70 * MIN
    clicks = list(
        ClickTraffic(users=40, items=30, seed=7, first_user=first_user).clicks(
            start_ms, rate_per_s=0.8, count=3000
        )
    )  # spread over ~62 min
    marker = f"garbage-{uuid.uuid4()}".encode()
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for i, click in enumerate(clicks):
            producer.send(click)
            if i % 1000 == 0:
                producer.produce_raw("clicks", b"1", marker)
    assert producer.stats.delivered == len(clicks) + 3

    _run_to_end(local_stack, repo)

    store = open_store(repo, local_stack.online_redis_url)
    view = next(v for v in compile_registry(store) if v.name == VIEW)
    users = sorted({c.user_id for c in clicks})
    last_event = max(c.event_time for c in clicks)
    by_user = {u: [c.to_record() for c in clicks if c.user_id == u] for u in users}
    features = [f"{VIEW}:{a.name}" for a in view.aggregations]
    for read_ms in (last_event, last_event + 2 * MIN, last_event + 7 * MIN, last_event + 61 * MIN):
        monkeypatch.setattr(TiledRedisOnlineStore, "clock", staticmethod(lambda t=read_ms: t))
        online = store.get_online_features(
            features=features, entity_rows=[{"user_id": u} for u in users]
        ).to_dict()
        for i, user in enumerate(users):
            got = {a.name: online[a.name][i] for a in view.aggregations}
            assert got == view_values(by_user[user], view, read_ms), (user, read_ms)
    # with the flow stopped, everything decayed to zero once the last tile left the window
    assert set(online["clicks_last_1h"]) == {0}
    assert sum(view_values(by_user[users[0]], view, last_event).values()) > 0

    dead = [
        m
        for m in consume_all(local_stack.bootstrap_servers, local_stack.dlq_topic)
        if m.value() == marker
    ]
    assert len(dead) == 3
    headers = dict(dead[0].headers())
    assert headers["error.kind"] == b"not_avro"
    assert headers["source.topic"] == b"clicks"


def test_purchase_sums_means_and_maxima_are_exact_through_feast(
    local_stack: Settings, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featurestream.events import AvroCodec, load_contracts
    from producers import TrafficConfig, TrafficGenerator

    first_user = 2_000_000 + int(uuid.uuid4().int % 1000) * 1000
    now_ms = time.time_ns() // 1_000_000
    generator = TrafficGenerator(
        TrafficConfig(topic="purchases", users=30, seed=9, first_user=first_user, jitter_ms=0),
        AvroCodec(load_contracts()),
    )
    start = now_ms - 27 * 60 * MIN
    emissions = generator.batch([start + i * 40_000 for i in range(2400)])  # ~26.7 h
    records = [e.record for e in emissions if e.record is not None]
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for record in records:
            producer.send_record("purchases", record)
    _run_to_end(local_stack, repo)

    store = open_store(repo, local_stack.online_redis_url)
    view = next(v for v in compile_registry(store) if v.name == "user_purchase_stats")
    users = sorted({r["user_id"] for r in records})
    last_event = max(r["event_time"] for r in records)
    features = [f"user_purchase_stats:{a.name}" for a in view.aggregations]
    for read_ms in (last_event, last_event + 90 * MIN, last_event + 23 * 60 * MIN):
        monkeypatch.setattr(TiledRedisOnlineStore, "clock", staticmethod(lambda t=read_ms: t))
        online = store.get_online_features(
            features=features, entity_rows=[{"user_id": u} for u in users]
        ).to_dict()
        for i, user in enumerate(users):
            got = {a.name: online[a.name][i] for a in view.aggregations}
            expected = view_values([r for r in records if r["user_id"] == user], view, read_ms)
            assert got == expected, (user, read_ms)  # equal to the last bit, not approximately
