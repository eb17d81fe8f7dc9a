"""The engine through the real local broker and Redis, read back through Feast's SDK."""

from __future__ import annotations

import math
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from featurestream.errors import DecodeError
from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from producers import ClickTraffic, EventProducer, TrafficConfig, TrafficGenerator
from streams.core.reference import classify_partition, view_values
from streams.definitions import compile_registry
from streams.online.feast_store import TiledRedisOnlineStore
from streams.repo import open_store
from tests.support import consume_all, run_engine_to_end

VIEW = "user_click_stats"
MIN = 60_000


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

    run_engine_to_end(local_stack, repo)

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
    run_engine_to_end(local_stack, repo)

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


def _missing_as_none(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _oracle_applied(
    messages: list[Any], lateness_ms: int, late: list[Any] | None = None
) -> list[dict[str, Any]]:
    """Brute force over the consumed messages: per partition in offset order, drop the
    undecodable, the late (their messages collected in ``late``) and repeated ids."""
    codec = AvroCodec(load_contracts())
    by_partition: dict[int, list[Any]] = defaultdict(list)
    for m in messages:
        by_partition[m.partition()].append(m)
    applied: list[dict[str, Any]] = []
    for msgs in by_partition.values():
        decoded = []
        for m in sorted(msgs, key=lambda m: m.offset()):
            try:
                decoded.append({**codec.decode("clicks", m.value()), "_message": m})
            except DecodeError:
                continue
        produced = [e["_message"].timestamp()[1] for e in decoded]
        ok, too_late = classify_partition(decoded, lateness_ms, produced_ms=produced)
        applied += [{k: v for k, v in e.items() if k != "_message"} for e in ok]
        if late is not None:
            late += [e["_message"] for e in too_late]
    return applied


def test_late_duplicate_and_bad_traffic_online_and_training_data_equal_oracle(
    local_stack: Settings, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_user = 3_000_000 + int(uuid.uuid4().int % 1000) * 1000
    now_ms = time.time_ns() // 1_000_000
    generator = TrafficGenerator(
        TrafficConfig(
            topic="clicks",
            users=60,
            seed=13,
            first_user=first_user,
            jitter_ms=20_000,
            late_fraction=0.05,
            duplicate_fraction=0.05,
            bad_fraction=0.02,
        ),
        AvroCodec(load_contracts()),
    )
    # The last 10 minutes: newer than what earlier tests left in the shared partitions.
    emissions = generator.batch([now_ms - 10 * MIN + i * 150 for i in range(4000)])
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for e in emissions:
            if e.record is not None:
                producer.send_record("clicks", e.record)
            else:
                producer.produce_raw("clicks", e.key, e.value)
    run_engine_to_end(local_stack, repo)

    keys = {str(u).encode() for u in range(first_user, first_user + 60)}
    # The topic is shared with earlier tests: their events count for each partition's
    # watermark, so the oracle classifies everything in the partitions.
    consumed = consume_all(local_stack.bootstrap_servers, "clicks")
    assert sum(1 for m in consumed if m.key() in keys) == len(emissions)
    users_of_test = range(first_user, first_user + 60)
    late: list[Any] = []
    applied = [e for e in _oracle_applied(consumed, 30_000, late) if e["user_id"] in users_of_test]
    assert 0 < len(applied) < len(emissions) - 300  # late, duplicate and bad ones dropped
    # every late event of this test is in the late-events topic, with its position
    expected_late = sorted((m.partition(), m.offset()) for m in late if m.key() in keys)
    assert expected_late
    got_late = sorted(
        (int(h["source.partition"]), int(h["source.offset"]))
        for h in (
            dict(m.headers())
            for m in consume_all(local_stack.bootstrap_servers, local_stack.late_topic)
        )
        if h["source.topic"] == b"clicks"
        and (int(h["source.partition"]), int(h["source.offset"])) in set(expected_late)
    )
    assert got_late == expected_late
    by_user: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in applied:
        by_user[e["user_id"]].append(e)
    store = open_store(repo, local_stack.online_redis_url)
    view = next(v for v in compile_registry(store) if v.name == VIEW)
    users = sorted(by_user)
    features = [f"{VIEW}:{a.name}" for a in view.aggregations]
    last_event = max(e["event_time"] for e in applied)

    read_ms = last_event + 90_000
    monkeypatch.setattr(TiledRedisOnlineStore, "clock", staticmethod(lambda: read_ms))
    online = store.get_online_features(
        features=features, entity_rows=[{"user_id": u} for u in users]
    ).to_dict()
    for i, user in enumerate(users):
        got = {a.name: online[a.name][i] for a in view.aggregations}
        assert got == view_values(by_user[user], view, read_ms), user

    # Training data: rows at times across the whole stream, before and after events.
    times = [now_ms - 11 * MIN + k * 47_000 + 1234 for k in range(16)] + [read_ms]
    entity_df = pd.DataFrame(
        {
            "user_id": [u for u in users for _ in times],
            "event_timestamp": pd.to_datetime(
                [t for _ in users for t in times], unit="ms", utc=True
            ),
        }
    )
    training = store.get_historical_features(entity_df=entity_df, features=features).to_df()
    assert len(training) == len(entity_df)
    for row in training.itertuples(index=False):
        t = int(row.event_timestamp.value // 1_000_000)
        expected = view_values(by_user[row.user_id], view, t)
        # pandas shows a missing float as NaN
        got = {a.name: _missing_as_none(getattr(row, a.name)) for a in view.aggregations}
        assert got == expected, (row.user_id, t)
    # the same read time gives the same value online and offline
    last = training[training["event_timestamp"] == pd.Timestamp(read_ms, unit="ms", tz="UTC")]
    assert sorted(last["clicks_last_1h"].tolist()) == sorted(online["clicks_last_1h"])
