"""Typed settings: one frozen object per process, loaded at the edge only.

Every field is read from an environment variable with the ``FEATURESTREAM_``
prefix (``FEATURESTREAM_KAFKA_BOOTSTRAP``, ``FEATURESTREAM_REDIS_URL``, ...).
Library code takes a :class:`Settings` (or the values it needs) as arguments and
never reads the environment itself.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_BROKER_PORT", "DEFAULT_REDIS_PORT", "Settings"]

DEFAULT_BROKER_PORT = 19092
DEFAULT_REDIS_PORT = 16379


class Settings(BaseSettings):
    """Configuration of a featurestream process.

    When ``kafka_bootstrap`` or ``redis_url`` is set, featurestream uses that
    existing service and the local stack starts nothing for it.
    """

    model_config = SettingsConfigDict(env_prefix="FEATURESTREAM_", frozen=True, extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None, description="Existing Kafka bootstrap servers; unset = embedded broker."
    )
    redis_url: str | None = Field(
        default=None, description="Existing Redis, e.g. redis://host:6379/0; unset = embedded."
    )
    schema_registry_url: str | None = Field(
        default=None,
        description="Confluent Schema Registry; when set, producers write the Confluent wire "
        "format and consumers resolve writer schemas by id.",
    )
    state_dir: Path = Field(
        default=Path(".featurestream"), description="Pid files, logs and engine state."
    )
    repo_path: Path = Field(default=Path("feature_repo"), description="The Feast repository.")
    broker_port: int = Field(default=DEFAULT_BROKER_PORT, ge=1, le=65535)
    redis_port: int = Field(default=DEFAULT_REDIS_PORT, ge=1, le=65535)
    topic_partitions: int = Field(default=3, ge=1)
    dlq_topic: str = "featurestream.dlq"
    late_topic: str = "featurestream.late"
    dedupe_horizon_ms: int | None = Field(
        default=None, ge=0, description="Duplicate-detection horizon; unset = allowed lateness."
    )
    metrics_port: int = Field(default=9464, ge=0, le=65535, description="0 disables /metrics.")
    snapshot_interval_s: float = Field(
        default=5.0, gt=0, description="How often the engine snapshots its state (recovery)."
    )
    restore_online: bool = Field(
        default=True,
        description="Rewrite the online tiles from the offline log when Redis lost them.",
    )
    online_check_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="How often a running engine checks that the online store still holds "
        "its views' markers (a store restarted empty is noticed within this, writes or not).",
    )
    partition_end_check_s: float = Field(
        default=5.0,
        gt=0,
        description="How often an idle partition compares its end with the offset the "
        "engine read to (one that ends before it was created again: its broker lost its "
        "data, and it is read again from its start).",
    )
    allow_evicting_store: bool = Field(
        default=False,
        description="Run the engine and the feature server on a Redis whose "
        "maxmemory-policy evicts keys when full (refused otherwise): evictions are then "
        "detected, the views answered as unavailable and their tiles restored.",
    )
    rust_backtrace: bool = Field(
        default=False,
        description="Keep Bytewax's Rust backtrace (some 140 lines) when a flow stops by an "
        "exception; off, the engine's own line and the Python traceback say why.",
    )
    connect_timeout_s: float = Field(default=5.0, gt=0)
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(default=6566, ge=1, le=65535)
    serve_api_keys_file: Path | None = Field(
        default=None,
        description='API keys of the feature server: JSON {"key": ["service", ...] | "*"}.',
    )
    serve_online_timeout_ms: int = Field(
        default=50,
        gt=0,
        description="Deadline of the feature server's online-store round trip (longer: 503).",
    )
    serve_tls_keyfile: Path | None = None
    serve_tls_certfile: Path | None = None

    @property
    def external_kafka(self) -> bool:
        """True when the user points featurestream at an existing broker."""
        return self.kafka_bootstrap is not None

    @property
    def external_redis(self) -> bool:
        """True when the user points featurestream at an existing Redis."""
        return self.redis_url is not None

    @property
    def bootstrap_servers(self) -> str:
        """The broker to use: the configured one, or the embedded one."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.broker_port}"

    @property
    def online_redis_url(self) -> str:
        """The Redis to use: the configured one, or the embedded one."""
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"
