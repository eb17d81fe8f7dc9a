"""Memory: engine RSS growth per active entity and Redis bytes per entity."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

from featurestream.errors import StackError
from featurestream_app.stack import log_tail
from producers import EventProducer

from .runs import PARTITIONS, VIEW, engine_command, engine_env, rss_bytes, warm_views
from .workspace import bench_stack

__all__ = ["measure_memory"]


def measure_memory(users: int, timeout_s: float) -> dict[str, Any]:
    """Engine RSS growth per active entity and Redis bytes per entity, ``users`` users
    with 2 clicks each (minutes apart) in the view's windows."""
    import random

    from streams.definitions import compile_registry
    from streams.online import connect_online_store
    from streams.repo import apply_repo, open_store

    with bench_stack(partitions=PARTITIONS) as (work, settings):
        rng = random.Random(3)  # noqa: S311 - synthetic data
        with EventProducer(settings.bootstrap_servers) as producer:
            for user, k, t in _two_clicks_each(users, time.time_ns() // 1_000_000):
                record = {
                    "event_id": str(uuid.UUID(int=user << 32 | k)),
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
        warm_views(settings, state, url)
        env = engine_env(settings, state, url)
        samples: list[tuple[int, int]] = []  # (active entities, engine RSS)
        log = work / "engine.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                engine_command(1, stop_at_end=True), env=env, stdout=out, stderr=subprocess.STDOUT
            )
            deadline = time.monotonic() + timeout_s
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise StackError(f"memory run took over {timeout_s} s; log {log}")
                # Every active entity has one key (plus a few engine keys).
                keys = online.stats().keys
                rss = rss_bytes(proc.pid)
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
