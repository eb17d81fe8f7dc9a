"""The e2e tier starts Kafka and Redis with testcontainers.

Images come from ``KAFKA_IMAGE`` (default: the official ``apache/kafka``) and
``REDIS_IMAGE`` (default ``redis:7``). Without a Docker engine,
``scripts/container-runtime.sh`` provides podman and locally built images (the
Tansu broker for Kafka) and exports these variables; ``make test`` uses it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from testcontainers.community.redis import PingWaitStrategy, RedisContainer
from testcontainers.core.container import DockerContainer
from testcontainers.core.waiting_utils import WaitStrategy, WaitStrategyTarget

from featurestream_app.stack import free_port

KAFKA_IMAGE = os.environ.get("KAFKA_IMAGE", "apache/kafka:3.9.1")
REDIS_IMAGE = os.environ.get("REDIS_IMAGE", "redis:7")


class _KafkaMetadata(WaitStrategy):  # type: ignore[misc]
    """Ready when a Kafka client gets cluster metadata through the mapped port."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__()
        self._bootstrap = bootstrap
        self.with_transient_exceptions(KafkaException)

    def wait_until_ready(self, container: WaitStrategyTarget) -> None:
        admin = AdminClient({"bootstrap.servers": self._bootstrap, "log_level": 0})
        if not self._poll(lambda: len(admin.list_topics(timeout=2).brokers) > 0):
            raise TimeoutError(f"Kafka at {self._bootstrap} not ready")


@dataclass(frozen=True)
class Endpoints:
    """Where the containers answer, as host addresses."""

    kafka_bootstrap: str
    redis_url: str


def kafka_container(host_port: int) -> DockerContainer:
    """A Kafka-protocol broker container on ``host_port`` (not started)."""
    bootstrap = f"127.0.0.1:{host_port}"
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(9092, host_port)
    if "tansu" in KAFKA_IMAGE:
        # Kafka-protocol broker built locally by scripts/container-runtime.sh.
        container = container.with_env("LISTENER_URL", "tcp://0.0.0.0:9092").with_env(
            "ADVERTISED_LISTENER_URL", f"tcp://{bootstrap}"
        )
    else:
        # Official apache/kafka image, single-node KRaft.
        for key, value in {
            "KAFKA_NODE_ID": "1",
            "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:9092,CONTROLLER://0.0.0.0:9093",
            "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{bootstrap}",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        }.items():
            container = container.with_env(key, value)
    return container.waiting_for(
        _KafkaMetadata(bootstrap).with_poll_interval(0.1).with_startup_timeout(180)
    )


@pytest.fixture(scope="session")
def containers() -> Iterator[Endpoints]:
    """A Kafka container and a Redis container, stopped at the end of the session."""
    host_port = free_port()
    kafka = kafka_container(host_port)
    redis = RedisContainer(image=REDIS_IMAGE).waiting_for(
        PingWaitStrategy().with_poll_interval(0.1).with_startup_timeout(180)
    )
    kafka.start()
    try:
        redis.start()
        try:
            host = redis.get_container_host_ip()
            port = redis.get_exposed_port(6379)
            yield Endpoints(f"127.0.0.1:{host_port}", f"redis://{host}:{port}/0")
        finally:
            redis.stop()
    finally:
        kafka.stop()
