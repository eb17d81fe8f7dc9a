"""When an event counts, and how often, against the real broker and Redis.

* One producer clock running 4.5 minutes fast must not turn its partition's next
  events late: the watermark moves by an event's time only as far as its produce time.
* A copy of an event (the same ``event_id``) re-stamped within the duplicate horizon
  counts once, online and offline; a copy further away counts again, online and
  offline.

Each protection has its negative control: the same test with it switched off fails.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from producers import Click, EventProducer
from streams.core import gate
from streams.core.reference import view_values
from streams.definitions import compile_registry
from streams.online.feast_store import TiledRedisOnlineStore
from streams.repo import open_store
from tests.support import consume_all, run_engine_to_end

VIEW = "user_click_stats"


def _click(user: int, t: int, event_id: str | None = None) -> Click:
    return Click(
        event_id=event_id or str(uuid.uuid4()), user_id=user, item_id=1, page="home", event_time=t
    )


def _values(
    repo: Path, settings: Settings, users: list[int], read_ms: int, mp: pytest.MonkeyPatch
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]], Any]:
    """Online (Feast SDK) and offline (training data) values of ``users`` at ``read_ms``."""
    store = open_store(repo, settings.online_redis_url)
    view = next(v for v in compile_registry(store) if v.name == VIEW)
    features = [f"{VIEW}:{a.name}" for a in view.aggregations]
    mp.setattr(TiledRedisOnlineStore, "clock", staticmethod(lambda: read_ms))
    online = store.get_online_features(
        features=features, entity_rows=[{"user_id": u} for u in users]
    ).to_dict()
    frame = pd.DataFrame(
        {
            "user_id": users,
            "event_timestamp": pd.to_datetime([read_ms] * len(users), unit="ms", utc=True),
        }
    )
    offline = store.get_historical_features(entity_df=frame, features=features).to_df()
    names = [a.name for a in view.aggregations]
    on = {u: {n: online[n][i] for n in names} for i, u in enumerate(users)}
    off = {
        int(row["user_id"]): {n: (None if pd.isna(row[n]) else row[n]) for n in names}
        for _, row in offline.iterrows()
    }
    return on, off, view


@pytest.mark.parametrize("bounded", [True, False])
def test_a_fast_producer_clock_does_not_turn_the_next_events_late(
    local_stack: Settings, repo: Path, monkeypatch: pytest.MonkeyPatch, bounded: bool
) -> None:
    if not bounded:  # negative control: the watermark moves with the event time alone
        admit = gate.PartitionGate.admit

        def unbounded(self: Any, event_id: str, event_time_ms: int, produced_ms: Any = None) -> str:
            return admit(self, event_id, event_time_ms, None)

        monkeypatch.setattr(gate.PartitionGate, "admit", unbounded)
    user = 5_000_000 + uuid.uuid4().int % 100_000
    now_ms = time.time_ns() // 1_000_000
    # one click stamped 4.5 minutes ahead of its produce time, then the user's ordinary
    # clicks (one partition: keyed by the user), produced as they happen
    clicks = [_click(user, now_ms + 270_000)]
    clicks += [_click(user, now_ms + i) for i in range(2000)]
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for click in clicks:
            producer.send(click)
    run_engine_to_end(local_stack, repo)

    read_ms = now_ms + 271_000
    on, off, view = _values(repo, local_stack, [user], read_ms, monkeypatch)
    expected = view_values([c.to_record() for c in clicks], view, read_ms)
    codec = AvroCodec(load_contracts())
    late = [
        m
        for m in consume_all(local_stack.bootstrap_servers, local_stack.late_topic)
        if dict(m.headers() or [])["source.topic"] == b"clicks"
        and codec.decode("clicks", m.value())["user_id"] == user
    ]
    if bounded:
        assert late == []
        assert on[user] == expected == off[user]
        assert expected["clicks_last_5min"] == 2001
    else:
        assert len(late) == 2000  # what featurestream did before the bound
        assert on[user] != expected


@pytest.mark.parametrize("same_event", [True, False])
def test_a_resent_event_counts_once_within_the_horizon_and_again_beyond(
    local_stack: Settings, repo: Path, monkeypatch: pytest.MonkeyPatch, same_event: bool
) -> None:
    if not same_event:  # negative control: copies are told only within 1-second buckets
        admit = gate.PartitionGate.admit

        def bucketed(self: Any, event_id: str, event_time_ms: int, produced_ms: Any = None) -> str:
            return admit(self, f"{event_id}@{event_time_ms // 1000}", event_time_ms, produced_ms)

        monkeypatch.setattr(gate.PartitionGate, "admit", bucketed)
    user = 6_000_000 + uuid.uuid4().int % 100_000
    now_ms = time.time_ns() // 1_000_000
    # Times within the allowed lateness of now: the shared topic's partitions hold other
    # tests' recent events, so older ones would be late.
    first = _click(user, now_ms - 20_000)
    clicks = [
        first,
        _click(user, now_ms - 10_000, first.event_id),  # a resend, re-stamped 10 s later
        _click(user, now_ms - 5_000),
        _click(user, now_ms + 15_000, first.event_id),  # 35 s after the first: another event
    ]
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for click in clicks:
            producer.send(click)
    run_engine_to_end(local_stack, repo)

    read_ms = now_ms + 16_000
    on, off, view = _values(repo, local_stack, [user], read_ms, monkeypatch)
    applied = [clicks[0], clicks[2], clicks[3]]  # the rule: copies within 30 s are one
    expected = view_values([c.to_record() for c in applied], view, read_ms)
    assert expected["clicks_last_5min"] == 3
    if same_event:
        assert on[user] == expected == off[user]
    else:
        assert on[user]["clicks_last_5min"] == 4  # the resend counted twice online
        assert on[user] != expected
