"""The rate-limited path of Kafka client log lines and errors (featurestream.logs), driven
by a fake clock and fake librdkafka callbacks (no broker)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pytest

from featurestream.logs import KafkaClientLog, RateLimitedLog, set_kafka_log_interval

BOOTSTRAP = "127.0.0.1:9092"
REFUSED = (
    "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused "
    "(after 0ms in state CONNECT)"
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


@dataclass
class FakeError:
    """What confluent-kafka passes ``error_cb``."""

    code_name: str
    text: str
    is_fatal: bool = False

    def name(self) -> str:
        return self.code_name

    def str(self) -> str:
        return self.text

    def fatal(self) -> bool:
        return self.is_fatal


def transport() -> FakeError:
    return FakeError("_TRANSPORT", REFUSED)


@pytest.fixture()
def lines() -> Lines:
    return Lines()


def make(lines: Lines, interval_s: float = 30.0) -> tuple[RateLimitedLog, KafkaClientLog, Clock]:
    logger = logging.getLogger(f"test.kafka_logs.{id(lines)}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(lines)
    clock = Clock()
    limiter = RateLimitedLog(logger, interval_s, clock)
    return limiter, KafkaClientLog(BOOTSTRAP, limiter), clock


@pytest.mark.parametrize(
    ("interval_s", "times", "written"),
    [
        (30.0, [0, 1, 2, 29.9], [True, False, False, False]),  # first at once, then held
        (30.0, [0, 30, 31, 60], [True, True, False, True]),  # once per interval
        (10.0, [0, 5, 10, 15, 20], [True, False, True, False, True]),
        (0.0, [0, 0, 0], [True, True, True]),  # no limit: every message
    ],
)
def test_one_kind_is_written_at_most_once_per_interval(
    lines: Lines, interval_s: float, times: list[float], written: list[bool]
) -> None:
    limiter, _, clock = make(lines, interval_s)
    out = []
    for t in times:
        clock.now = 1000.0 + t
        out.append(limiter.log("k", logging.WARNING, "broker %s down", "b1"))
    assert out == written
    assert len(lines.at(logging.WARNING)) == sum(written)


def test_a_line_after_held_back_repeats_counts_them(lines: Lines) -> None:
    limiter, _, clock = make(lines, 30.0)
    for i in range(313):
        clock.now = 1000.0 + i * 0.1  # 31.2 s of repeats
        limiter.log("k", logging.WARNING, "broker down")
    first, second = lines.at(logging.WARNING)
    assert first == "broker down, repeats logged once per 30 s"
    assert second == "broker down; 299 similar messages suppressed in 30 s"


def test_kinds_are_limited_apart(lines: Lines) -> None:
    limiter, _, _ = make(lines)
    for _ in range(5):
        limiter.log("a", logging.WARNING, "a")
        limiter.log("b", logging.ERROR, "b")
    assert len(lines.at(logging.WARNING)) == 1
    assert len(lines.at(logging.ERROR)) == 1


def test_broker_unreachable_from_every_client_is_one_warning(lines: Lines) -> None:
    _, client, clock = make(lines)
    for i in range(300):  # 10 s of failed reconnects of many clients
        clock.now = 1000.0 + i / 30
        client.error(transport())
        client.error(FakeError("_ALL_BROKERS_DOWN", "1/1 brokers are down"))
        client.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-3", REFUSED)
    (warning,) = lines.at(logging.WARNING)
    assert warning == (
        "kafka at 127.0.0.1:9092 unreachable (Connect to ipv4#127.0.0.1:9092 failed: "
        "Connection refused); retrying, repeats logged once per 30 s"
    )
    assert lines.at(logging.ERROR) == []  # librdkafka's own FAIL lines: DEBUG only
    assert len(lines.at(logging.DEBUG)) == 300


def test_reachable_again_ends_the_outage_with_one_info_line(lines: Lines) -> None:
    _, client, clock = make(lines)
    client.reachable()  # not down: nothing
    assert lines.records == []
    client.error(transport())
    for _ in range(41):
        client.error(transport())
    clock.now += 95
    client.reachable()
    client.reachable()
    assert lines.at(logging.INFO) == [
        "kafka at 127.0.0.1:9092 reachable again after 95 s down (41 similar messages suppressed)"
    ]
    client.error(transport())  # a new outage is reported at once
    assert len(lines.at(logging.WARNING)) == 2


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("_AUTHENTICATION", "SASL authentication error: Authentication failed"),
        ("UNKNOWN_TOPIC_OR_PART", "Subscribed topic not available: clickz"),
        ("TOPIC_AUTHORIZATION_FAILED", "Not authorized to access topics: [clicks]"),
    ],
)
def test_real_errors_stay_visible_next_to_an_outage(lines: Lines, name: str, text: str) -> None:
    _, client, _ = make(lines)
    for _ in range(50):
        client.error(transport())
        client.error(FakeError(name, text))
    (error,) = lines.at(logging.ERROR)
    assert error.startswith(f"kafka at {BOOTSTRAP}: {text} ({name})")
    assert len(lines.at(logging.WARNING)) == 1


def test_a_fatal_transport_error_is_not_an_outage(lines: Lines) -> None:
    _, client, _ = make(lines)
    client.error(FakeError("_TRANSPORT", "broken", is_fatal=True))
    (error,) = lines.at(logging.ERROR)
    assert "(_TRANSPORT, fatal)" in error
    assert lines.at(logging.WARNING) == []


def test_other_librdkafka_lines_are_limited_per_text_at_their_level(lines: Lines) -> None:
    _, client, _ = make(lines)
    for i in range(20):
        client.log(logging.WARNING, "%s [%s] %s", "CONFWARN", "rdkafka#producer-1", "odd conf")
        client.log(logging.ERROR, "%s [%s] %s", "SSL", f"rdkafka#consumer-{i}", f"bad cert {i}")
    assert lines.at(logging.WARNING) == [
        "kafka at 127.0.0.1:9092: CONFWARN odd conf, repeats logged once per 30 s"
    ]
    assert len(lines.at(logging.ERROR)) == 1  # digits do not make a new kind


def test_stale_reports_of_an_idle_client_are_debug_only(lines: Lines) -> None:
    _, client, _ = make(lines)
    with client.stale():
        client.error(transport())
        client.log(logging.ERROR, "%s [%s] %s", "SSL", "rdkafka#producer-1", "handshake")
    assert lines.at(logging.WARNING) == lines.at(logging.ERROR) == []
    assert len(lines.at(logging.DEBUG)) == 2
    client.reachable()  # the stale reports did not open an outage
    assert lines.at(logging.INFO) == []
    client.error(transport())
    assert len(lines.at(logging.WARNING)) == 1


def test_without_the_limit_every_report_is_a_line(lines: Lines) -> None:
    """Negative control: interval 0 writes every report, as librdkafka makes them."""
    _, client, _ = make(lines, interval_s=0.0)
    for _ in range(300):
        client.error(transport())
    assert len(lines.at(logging.WARNING)) == 300


def test_client_settings_route_to_the_client_log(lines: Lines) -> None:
    _, client, _ = make(lines)
    settings = client.settings()
    assert settings["logger"] is client
    assert settings["error_cb"] == client.error
    assert settings["log.connection.close"] is False


def test_the_process_interval_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="interval must be >= 0 s"):
        set_kafka_log_interval(-1)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (REFUSED, "Connect to ipv4#127.0.0.1:9092 failed: Connection refused"),
        (
            "GroupCoordinator: 127.0.0.1:9092: Connect to ipv4#127.0.0.1:9092 failed: "
            "Connection refused (after 0ms in state CONNECT, 2 identical error(s) suppressed)",
            "Connect to ipv4#127.0.0.1:9092 failed: Connection refused",
        ),
        ("localhost:9092/1: Disconnected (after 5ms in state UP)", "Disconnected"),
        ("1/1 brokers are down", "1/1 brokers are down"),
    ],
)
def test_the_unreachable_line_says_why_without_librdkafka_internals(
    lines: Lines, text: str, reason: str
) -> None:
    _, client, _ = make(lines)
    client.error(FakeError("_TRANSPORT", text))
    (warning,) = lines.at(logging.WARNING)
    assert warning.startswith(f"kafka at {BOOTSTRAP} unreachable ({reason}); retrying")
