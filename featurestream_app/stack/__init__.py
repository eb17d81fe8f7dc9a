"""The local stack: supervised broker and Redis processes (and app processes)."""

from .local import (
    APP_PROCESSES,
    ServiceStatus,
    cli_env,
    create_topics,
    down,
    redis_server_argv,
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
    "cli_env",
    "create_topics",
    "down",
    "free_port",
    "log_tail",
    "port_open",
    "redis_server_argv",
    "stack_topics",
    "status",
    "up",
]
