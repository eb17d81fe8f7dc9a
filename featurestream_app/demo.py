"""``featurestream demo``: the walking skeleton, end to end, checked against the events."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from featurestream.errors import StackError
from featurestream.events import AvroCodec, load_contracts
from featurestream.settings import Settings
from featurestream_app.stack import Supervisor, log_tail, up
from producers import Emission, EventProducer, TrafficConfig, TrafficGenerator
from streams.consistency import check_consistency
from streams.core import ViewSpec
from streams.core.reference import view_values
from streams.definitions import compile_registry
from streams.online import OnlineStore, ProgressKey, ViewState, connect_online_store
from streams.repo import apply_repo, open_store

from .seed import VALID_FROM, seed_data
from .traffic import KafkaSink, produce_generated, tty_progress

__all__ = ["run_demo"]

VIEW = "user_click_stats"
USER_BLOCK = 100_000  # each demo run uses its own block of user ids
CATCH_UP_S = 120.0
ITEMS = 10_000


def _step(text: str) -> None:
    click.secho(f"==> {text}", fg="cyan", err=True)


def _next_first_user(settings: Settings) -> int:
    counter = settings.state_dir / "demo_runs"
    runs = int(counter.read_text()) if counter.exists() else 0
    counter.parent.mkdir(parents=True, exist_ok=True)
    counter.write_text(str(runs + 1))
    return runs * USER_BLOCK + 1


def _wait_caught_up(
    store: OnlineStore,
    views: Sequence[ViewSpec],
    ends: dict[ProgressKey, int],
    sup: Supervisor,
) -> bool:
    """Whether, within :data:`CATCH_UP_S`, every view's progress reached the ends of its
    topic's partitions (each view keeps its own progress) and every view is served (its
    marker ready: the engine sets it once it caught up, after its progress)."""
    deadline = time.monotonic() + CATCH_UP_S
    states = [ViewState.of(v) for v in views]
    while time.monotonic() < deadline:
        if sup.find("engine") is None:
            log = sup.log_file("engine")
            raise StackError(f"the engine stopped; see {log}:\n{log_tail(log)}")
        behind = 0
        for view, state in zip(views, states, strict=True):
            progress = store.progress(state)
            behind += sum(
                max(0, end - progress.get(k, 0)) for k, end in ends.items() if k.topic == view.topic
            )
        if sys.stderr.isatty():
            sys.stderr.write(f"\r  engine lag: {behind:>8} events  ")
            sys.stderr.flush()
        if behind == 0 and all(m is not None and m.ready for m in store.markers(states)):
            if sys.stderr.isatty():
                sys.stderr.write("\n")
            return True
        time.sleep(0.2)
    return False


def run_demo(settings: Settings, *, duration_s: float, rate: float, users: int) -> bool:
    """Run the demo; return True when every feature read back equals the events' count."""
    _step("starting the local stack")
    for svc in up(settings):
        click.echo(f"    {svc.name:<8} {svc.endpoint:<32} {svc.state}", err=True)

    first_user = _next_first_user(settings)
    _step(
        f"writing batch data (seed-data) and applying the feature repository {settings.repo_path}"
    )
    seed_data(settings.repo_path / "data", first_user=first_user, users=users, items=ITEMS)
    apply_repo(settings.repo_path, settings.online_redis_url)
    store = open_store(settings.repo_path, settings.online_redis_url)
    compiled = compile_registry(store)
    view = next(v for v in compiled if v.name == VIEW)
    _step("materializing the batch views (user_profile, item_features)")
    # The whole validity range: this run's users are new rows dated VALID_FROM, which an
    # incremental run after an earlier demo would skip.
    store.materialize(
        start_date=VALID_FROM - timedelta(days=1),
        end_date=datetime.now(tz=UTC),
        feature_views=["user_profile", "item_features"],
    )

    _step("starting the engine (featurestream run) in the background")
    sup = Supervisor(settings.state_dir)
    engine = sup.start(
        "engine",
        [sys.executable, "-m", "featurestream_app.cli", "run"],
        endpoint="",
        ready=lambda: True,
        deadline_s=5,
    )
    click.echo(f"    engine pid {engine.pid}, log {engine.log}", err=True)

    total = int(rate * duration_s)
    started_ms = time.time_ns() // 1_000_000
    _step(
        f"producing {total} clicks for {duration_s:.0f} s from users "
        f"{first_user}..{first_user + users - 1}"
    )
    produced: dict[int, list[dict[str, Any]]] = defaultdict(list)

    def remember(emission: Emission) -> None:
        if emission.record is not None:
            produced[emission.record["user_id"]].append(emission.record)

    traffic = TrafficGenerator(
        TrafficConfig(topic="clicks", users=users, seed=first_user, first_user=first_user),
        AvroCodec(load_contracts()),
    )
    producer = EventProducer(settings.bootstrap_servers)
    produce_generated(
        traffic,
        KafkaSink(producer),
        rate=rate,
        total=total,
        pace=True,
        start_ms=0,
        progress=tty_progress(total),
        on_emission=remember,
    )
    impressions = TrafficGenerator(
        TrafficConfig(
            topic="impressions",
            users=users,
            seed=first_user + 1,
            first_user=first_user,
            items=ITEMS,
        ),
        AvroCodec(load_contracts()),
    )
    _step(f"producing {2 * total} impressions over the same {duration_s:.0f} s")
    produce_generated(
        impressions,
        KafkaSink(producer),
        rate=2 * rate,
        total=2 * total,
        pace=False,
        start_ms=started_ms,
    )
    if producer.stats.failed:
        raise StackError(
            f"{producer.stats.failed} events were not delivered: {producer.stats.errors}"
        )

    _step("waiting for the engine to catch up")
    tiles = connect_online_store(settings.online_redis_url)
    # Wait for exactly what was delivered (offsets from the delivery reports), which
    # does not depend on the broker's high-watermark bookkeeping.
    ends = {ProgressKey(t, p): o + 1 for (t, p), o in producer.stats.last_offsets.items()}
    if not _wait_caught_up(tiles, compiled, ends, sup):
        raise StackError(f"the engine did not catch up within {CATCH_UP_S:.0f} s; see {engine.log}")

    _step("reading features through feast.FeatureStore.get_online_features")
    user_ids = sorted(produced)
    features = [f"{VIEW}:{a.name}" for a in view.aggregations]
    read_ms = time.time_ns() // 1_000_000
    online = store.get_online_features(
        features=features, entity_rows=[{"user_id": u} for u in user_ids]
    ).to_dict()
    read_after_ms = time.time_ns() // 1_000_000
    ok = _report(view, user_ids, online, produced, read_ms, read_after_ms)
    _show_recommender(store, sorted(user_ids, key=lambda u: -len(produced[u]))[:6])

    ok = _check_consistency(settings, store) and ok
    ok = _model(settings, store, sup, sorted(user_ids, key=lambda u: -len(produced[u]))[:3]) and ok
    click.echo("", err=True)
    click.echo(
        "The stack is still running: `featurestream status` shows it, "
        "`featurestream down` stops it.",
        err=True,
    )
    return ok


def _check_consistency(settings: Settings, store: Any) -> bool:
    _step("online vs offline for sampled users and read times (featurestream check-consistency)")
    report = check_consistency(
        store,
        compile_registry(store),
        connect_online_store(settings.online_redis_url),
        entities=100,
        rounds=2,
    )
    for name, result in report.features.items():
        click.echo(
            f"    {name:<48} {result.compared:>5} compared {result.mismatches:>3} mismatches"
        )
    click.echo(
        f"{report.compared} values compared online and offline, {report.mismatches} mismatches"
    )
    return report.mismatches == 0


def _model(settings: Settings, store: Any, sup: Supervisor, users: list[int]) -> bool:
    """Train the recommender on the offline log, serve it, and show that the features it
    is served with equal the training data's at the same time."""
    import http.client
    import json

    import pandas as pd

    from featurestream_app.stack import free_port, port_open

    from .model import default_model_path, train

    _step("training the recommender on point-in-time training data (featurestream train-model)")
    path = default_model_path(settings)
    model = train(store, path, max_clicks=5_000)
    click.echo(
        f"    {model.metrics['rows']} rows (clicks and sampled non-clicks), "
        f"holdout AUC {model.metrics['holdout_auc']:.3f}",
        err=True,
    )
    _step("serving it (featurestream serve-model) and asking POST /predict")
    port = free_port()
    sup.stop("model")
    sup.start(
        "model",
        [sys.executable, "-m", "featurestream_app.cli", "serve-model", "--port", str(port)],
        endpoint=f"http://127.0.0.1:{port}",
        ready=lambda: port_open("127.0.0.1", port),
        deadline_s=60,
    )
    same = True
    click.echo(f"{'user_id':>10} {'item_id':>8} {'score':>7}  served features == training data")
    for user in users:
        request_ms = time.time_ns() // 1_000_000
        body = {"user_id": user, "item_id": 7, "item_price": 30.0, "request_time_ms": request_ms}
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request(
                "POST", "/predict", json.dumps(body), {"Content-Type": "application/json"}
            )
            answer = json.loads(connection.getresponse().read())
        finally:
            connection.close()
        # The same features as training data at the request time.
        offline = (
            store.get_historical_features(
                entity_df=pd.DataFrame(
                    {
                        "user_id": [user],
                        "item_id": [7],
                        "request_time_ms": [request_ms],
                        "item_price": [30.0],
                        "event_timestamp": pd.to_datetime([request_ms], unit="ms", utc=True),
                    }
                ),
                features=store.get_feature_service("recommender_v1"),
            )
            .to_df()
            .iloc[0]
        )
        served = answer["features"]
        equal = all(_same(v, offline[k]) for k, v in served.items())
        same = same and equal
        if not equal:
            diff = {k: (v, offline[k]) for k, v in served.items() if not _same(v, offline[k])}
            click.echo(f"    served vs training data: {diff}", err=True)
        click.echo(f"{user:>10} {7:>8} {answer['score']:>7.3f}  {'yes' if equal else 'NO'}")
    return same


def _same(served: Any, offline: Any) -> bool:
    import pandas as pd

    if served is None or offline is None or pd.isna(offline):
        return served is None and (offline is None or bool(pd.isna(offline)))
    return bool(served == offline)  # exactly: the same events, the same code


def _expected(view: Any, events: list[dict[str, Any]], read_ms: int) -> dict[str, Any]:
    """The window formula computed directly from the produced events (the brute-force
    reference the tests judge the engine by)."""
    return view_values(events, view, read_ms)


def _show_recommender(store: Any, users: list[int]) -> None:
    """A row per user with the batch, stream and on-demand features of recommender_v1."""
    now_ms = time.time_ns() // 1_000_000
    rows = [
        {"user_id": u, "item_id": 7, "request_time_ms": now_ms, "item_price": 30.0} for u in users
    ]
    got = store.get_online_features(
        features=store.get_feature_service("recommender_v1"), entity_rows=rows
    ).to_dict()
    columns = [
        "country",
        "segment",
        "clicks_last_5min",
        "distinct_items_1h",
        "ctr_1h",
        "seconds_since_last_click",
        "category",
        "price",
    ]
    click.echo(
        "\nrecommender_v1 (batch: country, segment, category, price; stream: clicks, "
        "items; on demand: ctr_1h, seconds_since_last_click), candidate item 7:"
    )
    widths = [max(len(c), 8) for c in columns]
    click.echo(
        f"{'user_id':>10} " + " ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
    )
    for i, user in enumerate(users):
        cells = []
        for c, w in zip(columns, widths, strict=True):
            value = got[c][i]
            cells.append(f"{value:>{w}.3f}" if isinstance(value, float) else f"{value!s:>{w}}")
        click.echo(f"{user:>10} " + " ".join(cells))


def _report(
    view: Any,
    user_ids: list[int],
    online: dict[str, list[Any]],
    produced: dict[int, list[dict[str, Any]]],
    read_ms: int,
    read_after_ms: int,
) -> bool:
    names = [a.name for a in view.aggregations]
    mismatches = 0
    rows = []
    for i, user in enumerate(user_ids):
        got = {n: online[n][i] for n in names}
        # The read happened between read_ms and read_after_ms; both bounds must agree
        # for a window edge not to fall inside the read (it cannot within the demo).
        expected = _expected(view, produced[user], read_ms)
        if expected != _expected(view, produced[user], read_after_ms):
            expected = _expected(view, produced[user], read_after_ms)
        match = got == expected
        mismatches += not match
        rows.append((user, got, expected, match))
    by_activity = sorted(rows, key=lambda r: -len(produced[r[0]]))
    shown = by_activity[:8] + by_activity[-3:]
    # every feature is compared; the counts are printed
    printed = [a.name for a in view.aggregations if a.aggregator.value_type == "int64"]
    header = f"{'user_id':>10} " + " ".join(f"{n + ' (feast/events)':>34}" for n in printed)
    click.echo(header)
    for user, got, expected, match in shown:
        cells = " ".join(f"{f'{got[n]} / {expected[n]}':>34}" for n in printed)
        click.echo(f"{user:>10} {cells}  {'ok' if match else 'MISMATCH'}")
    click.echo(
        f"\n{len(rows)} users checked, {sum(len(v) for v in produced.values())} events, "
        f"{mismatches} mismatches"
    )
    return mismatches == 0
