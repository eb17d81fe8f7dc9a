"""Input that should be refused, against the real broker and Redis (the local stack).

* An event whose ``event_id`` is blank or not a UUID (the schemas declare a ``uuid``)
  is refused by the producer, and dead-lettered by the engine (``invalid_id``) when a
  producer that is not ours writes it: never counted as one event, never dropped.
* ``featurestream produce --from`` a file that is not the topic's events ends in one
  line naming the file, the line or column and what was expected, exit 2, nothing
  sent; a timestamp with a timezone is epoch milliseconds; a directory is its Parquet
  files.
* ``featurestream produce`` with the broker down says nothing was delivered (exit 3,
  within the connect timeout); when the broker goes away mid-run it stops at the first
  failed delivery and says how many of how many were delivered (exit 3).
* Without ``--seed`` each run draws its own seed (printed): separate runs send distinct
  event ids; the printed seed repeats a run.

Each protection has its negative control: the same test with it switched off shows the
old outcome.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

import featurestream_app.cli.produce as produce_cli
import producers.producer
import producers.replay
import streams.core.classify
from featurestream.errors import ConfigError, DecodeError, InvalidEvent
from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from producers import Emission, EventProducer
from streams.offline.log import write_backfill
from streams.online.feast_store import TiledRedisOnlineStore
from streams.repo import open_store
from tests.support import (
    FEATURESTREAM,
    SPEND_VIEW,
    Background,
    consume_all,
    run_cli,
    run_engine_to_end,
    stack_env,
)

CODEC = AvroCodec(load_contracts())


def _user(base: int) -> int:
    return base + uuid.uuid4().int % 1_000_000


def _click(user: int, t: int, event_id: str | None = None, item: int = 1) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()) if event_id is None else event_id,
        "user_id": user,
        "item_id": item,
        "page": "home",
        "event_time": t,
    }


def _records(settings: Settings, topic: str, users: set[int]) -> list[dict[str, Any]]:
    """Decoded events of ``users`` on ``topic`` (the broker's copy), in offset order."""
    out = []
    for msg in consume_all(settings.bootstrap_servers, topic):
        try:
            record = CODEC.decode(topic, msg.value())
        except DecodeError:  # malformed on purpose (other tests)
            continue
        if record["user_id"] in users:
            out.append(record)
    return out


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _free_port() -> int:
    from featurestream_app.stack import free_port

    return int(free_port())


def _invoke(settings: Settings, *args: str, **env: str) -> Result:
    """``featurestream produce ARGS`` in this process (so a test can switch a protection
    off with monkeypatch), on the local stack."""
    return CliRunner().invoke(
        produce_cli.produce, list(args), env=stack_env(settings, None, **env), catch_exceptions=True
    )


# ------------------------------------------------------------------ event ids, engine


@pytest.mark.parametrize("checked", [True, False])
def test_events_without_a_usable_id_are_dead_lettered_not_counted(
    local_stack: Settings, repo: Path, monkeypatch: pytest.MonkeyPatch, checked: bool
) -> None:
    if not checked:  # negative control: the engine does not look at ids (as before)
        monkeypatch.setattr(streams.core.classify, "is_uuid", lambda value: True)
    blank_user, good_user = _user(40_000_000), _user(41_000_000)
    now_ms = time.time_ns() // 1_000_000
    bad = [_click(blank_user, now_ms - 60_000 + i, "", item=i) for i in range(3)]
    bad.append(_click(blank_user, now_ms - 50_000, f"click-{blank_user}"))  # not a UUID
    good = [_click(good_user, now_ms - 40_000 + i, item=i) for i in range(2)]
    # A producer that is not ours: the bytes fit the schema, the ids do not.
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for record in [*bad, *good]:
            producer.produce_raw(
                "clicks", str(record["user_id"]).encode(), CODEC.encode("clicks", record)
            )
    run_engine_to_end(local_stack, repo)

    store = open_store(repo, local_stack.online_redis_url)
    monkeypatch.setattr(TiledRedisOnlineStore, "clock", staticmethod(lambda: now_ms))
    online = store.get_online_features(
        features=["user_click_stats:clicks_last_1h"],
        entity_rows=[{"user_id": blank_user}, {"user_id": good_user}],
    ).to_dict()["clicks_last_1h"]
    dead = {}
    for msg in consume_all(local_stack.bootstrap_servers, local_stack.dlq_topic):
        headers = {k: v for k, v in (msg.headers() or [])}
        if headers.get("source.topic") != b"clicks" or headers.get("error.kind") != b"invalid_id":
            continue
        if CODEC.decode("clicks", msg.value())["user_id"] == blank_user:
            position = (headers["source.partition"], headers["source.offset"])
            dead[position] = headers["error.reason"].decode()
    assert online[1] == 2
    if checked:
        assert online[0] in (None, 0)  # none of the four counts
        assert len(dead) == 4  # each is a dead letter of its own, with why
        assert sorted(dead.values())[0].startswith("event_id='' is not a UUID")
    else:  # what featurestream did before: the blank ids are one event, nothing dead-lettered
        assert dead == {}
        assert online[0] in (1, 2)


# ------------------------------------------------------------------ event ids, producer


@pytest.mark.parametrize("checked", [True, False])
def test_the_producer_refuses_an_event_id_that_is_not_a_uuid(
    local_stack: Settings, monkeypatch: pytest.MonkeyPatch, checked: bool
) -> None:
    if not checked:  # negative control: no id check in the producer (as before)
        monkeypatch.setattr(producers.producer, "check_record", lambda contract, record: None)
    user = _user(42_000_000)
    now_ms = time.time_ns() // 1_000_000
    with EventProducer(local_stack.bootstrap_servers) as producer:
        for event_id in ("", "not-a-uuid"):
            try:
                producer.send_record("clicks", _click(user, now_ms, event_id))
            except InvalidEvent as exc:
                assert exc.kind == "invalid_id" and "\n" not in str(exc)
        with pytest.raises(InvalidEvent) as float_time:  # the codec refuses floats too
            producer.send_record("clicks", _click(user, now_ms) | {"event_time": now_ms / 1e3})
        assert float_time.value.kind == "schema_mismatch"
        producer.send_record("clicks", _click(user, now_ms, str(uuid.uuid4())))
    ids = [r["event_id"] for r in _records(local_stack, "clicks", {user})]
    if checked:
        assert len(ids) == 1 and producer.stats.sent == 1
    else:
        assert {"", "not-a-uuid"} < set(ids) and len(ids) == 3  # both sent as they were


# ------------------------------------------------------------------ produce --from


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _parquet(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows)


def _bad_input(case: str, tmp_path: Path, user: int, now_ms: int) -> tuple[Path, str, str]:
    """``(path, topic, what the error line says)`` of one kind of bad input."""
    rows = [_click(user, now_ms - 30_000 + i, item=i) for i in range(3)]
    if case == "blank-ids-jsonl":
        path = _jsonl(tmp_path / "ids.jsonl", [r | {"event_id": ""} for r in rows])
        return path, "clicks", "line 1: invalid_id: event_id='' is not a UUID"
    if case == "float-times-jsonl":
        path = _jsonl(
            tmp_path / "t.jsonl", [r | {"event_time": r["event_time"] / 1e3} for r in rows]
        )
        return (
            path,
            "clicks",
            "line 1: schema_mismatch: event_time must be an int of epoch milliseconds",
        )
    if case == "wrong-types":
        table = _table(rows).set_column(1, "user_id", pa.array([str(user)] * 3))
        path = _parquet(tmp_path / "types.parquet", table)
        return path, "clicks", "column user_id is string; clicks events need int64"
    if case == "float-times-parquet":
        table = _table(rows).set_column(
            4, "event_time", pa.array([float(r["event_time"]) for r in rows])
        )
        path = _parquet(tmp_path / "ft.parquet", table)
        return path, "clicks", "column event_time is double; clicks events need int64 epoch"
    if case == "naive-timestamps":
        naive = pa.array([r["event_time"] for r in rows], pa.int64()).cast(pa.timestamp("ms"))
        path = _parquet(tmp_path / "naive.parquet", _table(rows).set_column(4, "event_time", naive))
        return path, "clicks", "column event_time is timestamp[ms] without a timezone"
    if case == "unrelated-columns":
        path = _parquet(tmp_path / "u.parquet", pa.table({"user_id": [user], "score": [0.5]}))
        return path, "clicks", "no column event_id, item_id, page, event_time and columns score"
    if case == "offline-log-file":
        purchases = [{**r, "amount": 2.5} for r in rows]
        (path,) = write_backfill(tmp_path / "offline_log", SPEND_VIEW, purchases, "t")
        return path, "purchases", "a featurestream offline-log file (view spend, date="
    if case == "offline-log-folder":
        purchases = [{**r, "amount": 2.5} for r in rows]
        write_backfill(tmp_path / "offline_log", SPEND_VIEW, purchases, "t")
        return tmp_path / "offline_log", "purchases", "a featurestream offline log folder"
    if case == "not-parquet":
        path = tmp_path / "x.parquet"
        path.write_bytes(b"PAR1 but not really")
        return path, "clicks", "not a readable Parquet file"
    if case == "empty-directory":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", "clicks", "a directory without .parquet files"
    raise AssertionError(case)


BAD_INPUTS = [
    "blank-ids-jsonl",
    "float-times-jsonl",
    "wrong-types",
    "float-times-parquet",
    "naive-timestamps",
    "unrelated-columns",
    "offline-log-file",
    "offline-log-folder",
    "not-parquet",
    "empty-directory",
]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_produce_from_a_file_that_is_not_events_is_one_line_and_sends_nothing(
    local_stack: Settings, tmp_path: Path, case: str
) -> None:
    user = _user(43_000_000)
    path, topic, says = _bad_input(case, tmp_path, user, time.time_ns() // 1_000_000)
    result = run_cli(
        "produce", "--topic", topic, "--from", str(path), env=stack_env(local_stack), ok=False
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: --from {path}: ") and says in line, line
    assert _records(local_stack, topic, {user}) == []


def _old_read_replay(path: Path, topic: str, shift_to_ms: int | None) -> list[Any]:
    """The reader ``--from`` had before the checks, its rows as the new one's: no
    directories, no column or type checks, no offline-log files named."""
    if not path.is_file():
        raise ConfigError(f"--from {path}: no such file")
    if path.suffix == ".parquet":
        rows: list[dict[str, Any]] = [
            {"topic": topic, "record": r} for r in pq.read_table(path).to_pylist()
        ]
    elif path.suffix in (".jsonl", ".json", ".ndjson"):
        rows = []
        with path.open(encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"--from {path}:{number}: not JSON: {exc}") from exc
                rows.append(
                    obj
                    if "record" in obj or "value_b64" in obj
                    else {"topic": topic, "record": obj}
                )
    else:
        raise ConfigError(f"--from {path}: unknown format; use .jsonl or .parquet")
    shift = 0
    if shift_to_ms is not None:
        times = [r["record"]["event_time"] for r in rows if isinstance(r.get("record"), dict)]
        shift = shift_to_ms - max(times) if times else 0
    out = []
    for row in rows:
        row_topic = row.get("topic", topic)
        record = row.get("record")
        if record is not None:
            record = {**record, "event_time": int(record["event_time"]) + shift}
            key = str(record.get("user_id", "")).encode()
            emission = Emission(row_topic, key, row.get("kind", "event"), record=record)
        else:
            value = base64.b64decode(row["value_b64"])
            key = str(row.get("key", "")).encode()
            emission = Emission(row_topic, key, row.get("kind", "bad"), value=value)
        out.append(producers.replay.ReplayRow("", emission))
    return out


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_without_the_checks_bad_files_crash_or_are_delivered(
    local_stack: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    # Negative control of the test above: the old reader and no id check in the producer.
    monkeypatch.setattr(producers.replay, "read_replay", _old_read_replay)
    monkeypatch.setattr(producers.producer, "check_record", lambda contract, record: None)
    user = _user(44_000_000)
    path, topic, says = _bad_input(case, tmp_path, user, time.time_ns() // 1_000_000)
    result = _invoke(local_stack, "--topic", topic, "--from", str(path))
    lines = result.stderr.strip().splitlines()
    clean_exit = result.exit_code == 2 and isinstance(result.exception, SystemExit)
    one_line = len(lines) == 1 and says in lines[0]
    assert not (clean_exit and one_line and _records(local_stack, topic, {user}) == [])


def test_produce_from_parquet_with_timestamps_sends_epoch_milliseconds(
    local_stack: Settings, tmp_path: Path
) -> None:
    user = _user(45_000_000)
    now_ms = time.time_ns() // 1_000_000
    rows = [_click(user, now_ms - 30_000 + i * 1_000, item=i) for i in range(4)]
    micros = pa.array([r["event_time"] * 1_000 for r in rows], pa.int64())
    times = micros.cast(pa.timestamp("us", tz="UTC"))
    assert times[0].as_py() == datetime.fromtimestamp(rows[0]["event_time"] / 1e3, tz=UTC)
    folder = tmp_path / "events"
    _parquet(folder / "b.parquet", _table(rows[2:]).set_column(4, "event_time", times[2:]))
    _parquet(folder / "a.parquet", _table(rows[:2]).set_column(4, "event_time", times[:2]))
    result = run_cli("produce", "--from", str(folder), env=stack_env(local_stack))
    assert "produced 4 messages (event=4); delivered 4, failed 0" in result.stdout
    assert _records(local_stack, "clicks", {user}) == rows  # same values, in name order


# ------------------------------------------------------------------ broker down


@pytest.mark.parametrize("source", ["generated", "replay"])
def test_produce_with_the_broker_down_says_nothing_was_delivered(
    local_stack: Settings, tmp_path: Path, source: str
) -> None:
    closed = _free_port()
    replay = _jsonl(tmp_path / "r.jsonl", [_click(1, 1_790_000_000_000)])
    args = ["--count", "10", "--no-pace"] if source == "generated" else ["--from", str(replay)]
    env = stack_env(local_stack, FEATURESTREAM_BROKER_PORT=str(closed))
    result = run_cli("produce", *args, env=env, ok=False, timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = _error_lines(result.stderr)
    assert line.startswith(f"error: broker at 127.0.0.1:{closed} did not answer within 5 s")
    assert line.endswith("; nothing was delivered; start it with featurestream up")
    assert "delivered" not in result.stdout


@pytest.mark.parametrize("protection", ["fast", "counted", "off"])
def test_the_exit_status_says_whether_everything_was_delivered(
    local_stack: Settings, monkeypatch: pytest.MonkeyPatch, protection: str
) -> None:
    if protection != "fast":  # without the broker check, the counts decide
        monkeypatch.setattr(EventProducer, "wait_for_broker", lambda self, timeout_s: None)
    if protection == "off":  # negative control: the summary alone decides nothing (as before)

        def summary_only(
            producer: Any, sent: Any, rejected: Any, seeded: str, stopped: str
        ) -> None:
            stats = producer.stats
            click.echo(f"produced {sent.total}; delivered {stats.delivered}, failed {stats.failed}")

        monkeypatch.setattr(produce_cli, "_report", summary_only)
    closed = _free_port()
    result = _invoke(
        local_stack,
        *("--count", "10", "--no-pace", "--delivery-timeout-s", "2"),
        FEATURESTREAM_BROKER_PORT=str(closed),
    )
    errors = _error_lines(result.stderr)
    if protection == "fast":
        assert result.exit_code == 3 and "nothing was delivered" in errors[0]
    elif protection == "counted":
        assert result.exit_code == 3, result.output
        assert "delivered 0, failed 10" in result.stdout
        assert errors == [
            f"error: 10 of 10 messages not delivered to the broker at 127.0.0.1:{closed} "
            "(failed 10: _MSG_TIMED_OUT=10, not confirmed 0)"
        ]
    else:
        assert result.exit_code == 0 and errors == []  # the old outcome: success, nothing sent


def _wait_for_messages(bootstrap: str, topic: str, n: int, timeout_s: float) -> None:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4()}", "log_level": 0}
    )
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        seen, deadline = 0, time.monotonic() + timeout_s
        while seen < n:
            assert time.monotonic() < deadline, f"only {seen} messages on {topic}"
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                seen += 1
    finally:
        consumer.close()


def _private_stack(tmp_path: Path) -> Settings:
    from featurestream_app.stack import up

    settings = Settings(
        state_dir=tmp_path / "state", broker_port=_free_port(), redis_port=_free_port()
    )
    up(settings)
    return settings


_ARGS = ("produce", "--rate", "20", "--duration", "3600", "--delivery-timeout-s", "3")


def test_a_broker_lost_mid_run_stops_the_run_with_the_counts(tmp_path: Path) -> None:
    from featurestream_app.stack import down

    private = _private_stack(tmp_path)
    log = tmp_path / "produce.log"
    run = Background([*FEATURESTREAM, *_ARGS], log, env=stack_env(private))
    try:
        _wait_for_messages(private.bootstrap_servers, "clicks", 20, timeout_s=120)
    finally:
        down(private)
    assert run.proc.wait(timeout=300) == 3, run.tail()
    text = log.read_text()
    assert "Traceback" not in text
    summary = re.search(
        r"produced (\d+) messages .* with --seed \d+; delivered (\d+), failed (\d+)", text
    )
    (error,) = _error_lines(text)
    assert summary is not None, text
    produced, delivered, failed = (int(g) for g in summary.groups())
    assert 0 < delivered < produced < 3600 * 20
    assert error == (
        f"error: a delivery failed, stopped producing; {produced - delivered} of {produced} "
        f"messages not delivered to the broker at {private.bootstrap_servers} (failed {failed}: "
        f"_MSG_TIMED_OUT={failed}, not confirmed 0)"
    )


def test_without_the_failure_watch_a_lost_broker_goes_unnoticed_until_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Negative control of the test above: delivery reports never looked at during the run.
    from featurestream_app.stack import down

    monkeypatch.setattr(produce_cli, "_WATCH_S", 1e9)
    private = _private_stack(tmp_path)
    results: list[Result] = []
    args = ["--rate", "20", "--duration", "20", "--delivery-timeout-s", "3"]
    worker = threading.Thread(target=lambda: results.append(_invoke(private, *args)))
    worker.start()
    try:
        _wait_for_messages(private.bootstrap_servers, "clicks", 20, timeout_s=120)
    finally:
        down(private)
    worker.join(timeout=300)
    (result,) = results
    assert result.exit_code == 3
    assert "produced 400 messages" in result.stdout  # every message, into a broker long gone


# ------------------------------------------------------------------ seeds


def _seeded_run(
    run: Callable[..., tuple[int, str]], settings: Settings, user: int, *extra: str
) -> tuple[set[str], int]:
    args = ["--count", "40", "--no-pace", "--users", "4", "--first-user", str(user), *extra]
    code, out = run(settings, *args)
    assert code == 0, out
    found = re.search(r"with --seed (\d+);", out)
    assert found is not None, out
    return {r["event_id"] for r in _records(settings, "clicks", set(range(user, user + 4)))}, int(
        found.group(1)
    )


def _subprocess(settings: Settings, *args: str) -> tuple[int, str]:
    result = run_cli("produce", *args, env=stack_env(settings), ok=False)
    return result.returncode, result.stdout + result.stderr


def _in_process(settings: Settings, *args: str) -> tuple[int, str]:
    result = _invoke(settings, *args)
    return result.exit_code, result.output


@pytest.mark.parametrize("random_seed", [True, False])
def test_separate_runs_send_distinct_event_ids_and_the_printed_seed_repeats_one(
    local_stack: Settings, monkeypatch: pytest.MonkeyPatch, random_seed: bool
) -> None:
    run = _subprocess
    if not random_seed:  # negative control: the old default, seed 0
        monkeypatch.setattr(secrets, "randbelow", lambda n: 0)
        run = _in_process
    user = _user(46_000_000)
    first, seed_1 = _seeded_run(run, local_stack, user)
    both, seed_2 = _seeded_run(run, local_stack, user)
    assert len(first) == 40
    if random_seed:
        assert seed_1 != seed_2
        assert len(both) == 80  # no id of the first run again
        again, seed_3 = _seeded_run(run, local_stack, user, "--seed", str(seed_1))
        assert seed_3 == seed_1 and again == both  # the same 40 ids as the first run
    else:
        assert seed_1 == seed_2 == 0
        assert both == first  # the second run's events are copies the engine drops
