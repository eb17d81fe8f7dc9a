"""``featurestream produce``: synthetic traffic or a replay, to Kafka or to a file; the
exit status says whether every message was delivered."""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from featurestream.errors import BrokerUnavailable, ConfigError, InvalidEvent
from featurestream.settings import Settings

from .common import load_settings, make_codec, one_line_errors

if TYPE_CHECKING:
    from featurestream_app.traffic import EmissionSink
    from producers import Emission, EventProducer, TrafficGenerator

# How often a paced run serves delivery reports to notice a failed delivery.
_WATCH_S = 0.5


@click.command()
@click.option(
    "--topic",
    default="clicks",
    show_default=True,
    type=click.Choice(["clicks", "impressions", "purchases"]),
)
@click.option(
    "--rate",
    default=1000.0,
    show_default=True,
    type=click.FloatRange(min=0.001),
    help="Events per second.",
)
@click.option("--users", default=100_000, show_default=True, type=click.IntRange(min=1))
@click.option("--items", default=10_000, show_default=True, type=click.IntRange(min=1))
@click.option("--first-user", default=1, show_default=True, help="Id of the most active user.")
@click.option(
    "--duration",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds of traffic (count = rate x duration).",
)
@click.option(
    "--count",
    type=click.IntRange(min=0),
    default=None,
    help="Number of events (instead of --duration).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    help="Same seed, same traffic (event ids included). Default: a random seed, printed in "
    "the summary, so that a run can be repeated with --seed N.",
)
@click.option(
    "--jitter-ms",
    default=2000,
    show_default=True,
    type=click.IntRange(min=0),
    help="Event times are out of order within this bound.",
)
@click.option(
    "--late-fraction",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fraction of events delayed beyond --lateness-ms.",
)
@click.option("--lateness-ms", default=30_000, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--duplicate-fraction",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fraction of events sent again (same event_id).",
)
@click.option(
    "--bad-fraction",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Fraction of malformed records (several kinds).",
)
@click.option(
    "--no-pace",
    is_flag=True,
    help="Produce as fast as possible; event times spaced at --rate from --start-ms.",
)
@click.option(
    "--start-ms",
    type=int,
    default=None,
    help="First event time with --no-pace (default: now - count/rate).",
)
@click.option(
    "--from",
    "from_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Replay events from a JSON Lines file (event records, or --dry-run lines), a "
    "Parquet file, or a directory of Parquet files (read in name order). Parquet: one "
    "column per field of the topic's schema and no others, no nulls; event_time as int64 "
    "epoch milliseconds or as a timestamp with a timezone (converted to epoch "
    "milliseconds; a timestamp without a timezone is refused: times are UTC instants). "
    "The whole replay is checked before anything is sent.",
)
@click.option("--shift-to-now", is_flag=True, help="With --from: shift event times to end now.")
@click.option(
    "--delivery-timeout-s",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="How long each message may take to be delivered; one that is not fails the run "
    "(nothing more is produced, exit 3, with the counts).",
)
@click.option(
    "--dry-run",
    type=click.Path(path_type=Path),
    default=None,
    help="Write JSON Lines to this file instead of Kafka.",
)
@one_line_errors
def produce(
    topic: str,
    rate: float,
    users: int,
    items: int,
    first_user: int,
    duration: float | None,
    count: int | None,
    seed: int | None,
    jitter_ms: int,
    late_fraction: float,
    lateness_ms: int,
    duplicate_fraction: float,
    bad_fraction: float,
    no_pace: bool,
    start_ms: int | None,
    from_file: Path | None,
    shift_to_now: bool,
    delivery_timeout_s: float,
    dry_run: Path | None,
) -> None:
    """Produce realistic synthetic events (or replay a file) to Kafka.

    The broker must answer within FEATURESTREAM_CONNECT_TIMEOUT_S. Exit status: 0 when
    every message was delivered; 2 when the input or the options are refused (nothing
    is sent); 3 when the broker did not take every message (the counts say how many).
    """
    from featurestream_app.traffic import FileSink, KafkaSink, produce_generated, tty_progress
    from producers import EventProducer

    settings = load_settings()
    config: dict[str, object] = {"message.timeout.ms": int(delivery_timeout_s * 1000)}
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        config["log_level"] = 0  # the outcome is reported below, in one line
    producer = EventProducer(
        settings.bootstrap_servers, make_codec(settings, for_producing=True), config=config
    )
    now_ms = time.time_ns() // 1_000_000
    run: Callable[[EmissionSink], object]
    if from_file is not None:
        messages = _replay(producer, from_file, topic, now_ms if shift_to_now else None)
        seeded = ""

        def run(sink: EmissionSink) -> None:
            for emission in messages:
                sink.emit(emission)
            sink.close()

    elif (duration is None) == (count is None):
        raise ConfigError("give exactly one of --duration or --count (or --from FILE)")
    else:
        seed = secrets.randbelow(2**32) if seed is None else seed
        seeded = f" with --seed {seed}"
        total = count if count is not None else int(rate * (duration or 0))
        generator = _generator(
            topic=topic,
            users=users,
            items=items,
            seed=seed,
            first_user=first_user,
            jitter_ms=jitter_ms,
            late_fraction=late_fraction,
            lateness_ms=lateness_ms,
            duplicate_fraction=duplicate_fraction,
            bad_fraction=bad_fraction,
        )
        first_ms = start_ms if start_ms is not None else now_ms - int(total * 1000 / rate)

        def run(sink: EmissionSink) -> object:
            return produce_generated(
                generator,
                sink,
                rate=rate,
                total=total,
                pace=not no_pace,
                start_ms=first_ms,
                progress=tty_progress(total),
            )

    if dry_run:
        written = _Counted(FileSink(dry_run), None)
        run(written)
        summary = ", ".join(f"{k}={v}" for k, v in sorted(written.kinds.items()))
        click.echo(f"wrote {written.total} messages ({summary}){seeded} to {dry_run}")
        return
    _wait_for_broker(producer, settings)
    kafka = KafkaSink(producer) if from_file is None else _EncodedSink(producer)
    sent = _Counted(kafka, producer)
    stopped = ""
    try:
        run(sent)
    except BrokerUnavailable as exc:  # the queue stayed full, or a delivery failed
        stopped = f"{exc}; "
    producer.flush(delivery_timeout_s + 5)
    rejected = kafka.rejected if isinstance(kafka, KafkaSink) else Counter[str]()
    _report(producer, sent, rejected, seeded, stopped)


class _EncodedSink:
    """Replay messages, validated and encoded beforehand, to Kafka as they are."""

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def emit(self, emission: Emission) -> None:
        self.producer.produce_raw(emission.topic, emission.key, emission.value)

    def close(self) -> None:
        self.producer.flush()


class _Counted:
    """Counts what goes to ``sink``; with ``producer``, stops the run at the first failed
    delivery (``BrokerUnavailable``; delivery reports are served every ``_WATCH_S``)."""

    def __init__(self, sink: EmissionSink, producer: EventProducer | None) -> None:
        self.sink = sink
        self.producer = producer
        self.kinds: Counter[str] = Counter()
        self._next_poll = time.monotonic() + _WATCH_S

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def emit(self, emission: Emission) -> None:
        self.sink.emit(emission)
        self.kinds[emission.kind] += 1
        if self.producer is None:
            return
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + _WATCH_S
            self.producer.poll(0)
            if self.producer.stats.failed:
                raise BrokerUnavailable("a delivery failed, stopped producing")

    def close(self) -> None:
        self.sink.close()


def _wait_for_broker(producer: EventProducer, settings: Settings) -> None:
    try:
        producer.wait_for_broker(settings.connect_timeout_s)
    except BrokerUnavailable as exc:
        fix = (
            "check FEATURESTREAM_KAFKA_BOOTSTRAP"
            if settings.external_kafka
            else "start it with featurestream up"
        )
        raise BrokerUnavailable(f"{exc}; nothing was delivered; {fix}") from exc


def _report(
    producer: EventProducer,
    sent: _Counted,
    rejected: Counter[str],
    seeded: str,
    stopped: str,
) -> None:
    """The summary line; then an error (exit 2 or 3) unless every message was delivered."""
    stats = producer.stats
    summary = ", ".join(f"{k}={v}" for k, v in sorted(sent.kinds.items()))
    refused = ", ".join(f"{k}={v}" for k, v in sorted(rejected.items())) or "none"
    click.echo(
        f"produced {sent.total} messages ({summary}){seeded}; delivered "
        f"{stats.delivered}, failed {stats.failed}, rejected {refused}"
    )
    if stopped or stats.failed or stats.unconfirmed:
        errors = ", ".join(f"{k}={v}" for k, v in sorted(stats.errors.items()))
        raise BrokerUnavailable(
            f"{stopped}{stats.sent - stats.delivered} of {stats.sent} messages not delivered "
            f"to the broker at {producer.bootstrap_servers} (failed {stats.failed}"
            f"{': ' + errors if errors else ''}, not confirmed {stats.unconfirmed})"
        )
    if rejected:
        raise ConfigError(
            f"{sum(rejected.values())} of {sent.total} messages refused as invalid "
            f"({refused}) and not sent"
        )


def _replay(
    producer: EventProducer,
    path: Path,
    topic: str,
    shift_to_ms: int | None,
) -> list[Emission]:
    """A replay's messages, every record validated and encoded before any is sent (the
    first invalid one is a ConfigError naming its line or row)."""
    from producers import Emission
    from producers.replay import read_replay

    try:
        rows = read_replay(path, topic, shift_to_ms)
    except ConfigError as exc:
        raise ConfigError(f"--from {exc}") from exc
    out = []
    for row in rows:
        emission = row.emission
        if emission.record is None:  # malformed on purpose (a --dry-run line): sent as is
            out.append(emission)
            continue
        try:
            key, value = producer.encode(emission.topic, emission.record)
        except InvalidEvent as exc:
            raise ConfigError(f"--from {path}: {row.where}: {exc}; nothing was sent") from exc
        out.append(Emission(emission.topic, key, emission.kind, emission.record, value))
    return out


def _generator(**options: Any) -> TrafficGenerator:
    """The synthetic traffic of the options (a ConfigError when they do not fit)."""
    from featurestream.events import AvroCodec, load_contracts
    from producers import TrafficConfig, TrafficGenerator

    try:
        config = TrafficConfig(**options)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    return TrafficGenerator(config, AvroCodec(load_contracts()))  # encodes malformed bytes
