"""Producers through the real local broker: what is produced is exactly what is consumed."""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from pathlib import Path

import pytest

from featurestream.errors import DecodeError, InvalidEvent
from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from producers import Click, EventProducer
from tests.support import consume_all, run_cli

CODEC = AvroCodec(load_contracts())


def _produce(settings: Settings, *args: str) -> str:
    env = {**os.environ, "FEATURESTREAM_BROKER_PORT": str(settings.broker_port)}
    return run_cli("produce", *args, env=env, timeout=120).stdout


def _consumed(settings: Settings, topic: str, keys: set[bytes]) -> Counter[tuple[str, str]]:
    """Messages of ``topic`` with one of ``keys``: decoded records, or the error kind."""
    out: Counter[tuple[str, str]] = Counter()
    for msg in consume_all(settings.bootstrap_servers, topic):
        if msg.key() not in keys:
            continue
        try:
            record = CODEC.decode(topic, msg.value())
            out[("record", json.dumps(record, sort_keys=True))] += 1
        except DecodeError as exc:
            out[("bad", exc.kind)] += 1
    return out


def _expected(dry_run: Path) -> tuple[Counter[tuple[str, str]], set[bytes], Counter[str]]:
    expected: Counter[tuple[str, str]] = Counter()
    keys: set[bytes] = set()
    kinds: Counter[str] = Counter()
    for line in dry_run.read_text().splitlines():
        row = json.loads(line)
        keys.add(row["key"].encode())
        kinds[row["kind"]] += 1
        if "record" in row:
            expected[("record", json.dumps(row["record"], sort_keys=True))] += 1
        else:
            expected[("bad", row["kind"])] += 1
    return expected, keys, kinds


@pytest.mark.parametrize("topic", ["clicks", "purchases"])
def test_cli_produces_exactly_the_generated_events(
    topic: str, local_stack: Settings, tmp_path: Path
) -> None:
    first_user = 10_000_000 + (uuid.uuid4().int % 1000) * 10_000
    args = [
        "--topic",
        topic,
        "--count",
        "3000",
        "--no-pace",
        "--start-ms",
        "1790000000000",
        "--seed",
        "5",
        "--users",
        "500",
        "--first-user",
        str(first_user),
        "--duplicate-fraction",
        "0.03",
        "--late-fraction",
        "0.02",
        "--bad-fraction",
        "0.03",
    ]
    dry_run = tmp_path / "dry.jsonl"
    _produce(local_stack, *args, "--dry-run", str(dry_run))
    expected, keys, kinds = _expected(dry_run)
    assert sum(kinds.values()) == 3000
    assert kinds["duplicate"] > 0 and kinds["late"] > 0 and kinds["event"] > 2500

    out = _produce(local_stack, *args)
    assert "delivered 3000, failed 0" in out

    got = _consumed(local_stack, topic, keys)
    assert got == expected  # same events, same values, same malformed kinds, same counts
    ids = Counter(
        json.loads(r)["event_id"]
        for (tag, r), n in got.items()
        for _ in range(n)
        if tag == "record"
    )
    assert sum(n - 1 for n in ids.values()) == kinds["duplicate"]  # duplicates only as asked


def test_replay_from_file_sends_the_same_events(local_stack: Settings, tmp_path: Path) -> None:
    first_user = 20_000_000 + (uuid.uuid4().int % 1000) * 10_000
    dry_run = tmp_path / "dry.jsonl"
    _produce(
        local_stack,
        "--count",
        "500",
        "--no-pace",
        "--start-ms",
        "1790000000000",
        "--users",
        "50",
        "--first-user",
        str(first_user),
        "--dry-run",
        str(dry_run),
    )
    expected, keys, _ = _expected(dry_run)
    _produce(local_stack, "--from", str(dry_run))
    assert _consumed(local_stack, "clicks", keys) == expected


def test_a_bad_event_is_refused_alone(local_stack: Settings) -> None:
    user = 30_000_000 + uuid.uuid4().int % 1_000_000
    good = [Click(str(uuid.uuid4()), user, i, "home", 1_790_000_000_000 + i) for i in range(3)]
    with EventProducer(local_stack.bootstrap_servers) as producer:
        producer.send(good[0])
        with pytest.raises(InvalidEvent) as refused:
            producer.send(Click(str(uuid.uuid4()), user, 9, "home", -1))
        assert refused.value.kind == "out_of_range" and "event_time" in str(refused.value)
        with pytest.raises(InvalidEvent) as wrong_type:
            producer.send_record("clicks", {**good[0].to_record(), "item_id": "nine"})
        assert wrong_type.value.kind == "schema_mismatch"
        producer.send(good[1])
        producer.send(good[2])
    assert producer.stats.delivered == 3
    got = _consumed(local_stack, "clicks", {str(user).encode()})
    assert sorted(json.loads(r)["item_id"] for (_, r) in got) == [0, 1, 2]
