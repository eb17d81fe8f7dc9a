"""The local stack: supervised broker and Redis processes (and app processes)."""

from .local import (
    APP_PROCESSES,
    ServiceStatus,
    check_broker,
    check_redis,
    create_topics,
    down,
    stack_topics,
    status,
    up,
)
from .supervisor import Running, Supervisor, free_port, log_tail, port_open

__all__ = [
    "APP_PROCESSES",
    "Running",
    "ServiceStatus",
    "Supervisor",
    "check_broker",
    "check_redis",
    "create_topics",
    "down",
    "free_port",
    "log_tail",
    "port_open",
    "stack_topics",
    "status",
    "up",
]
