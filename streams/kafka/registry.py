"""Adapter: a Confluent Schema Registry as the codec's :class:`SchemaLookup`."""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from featurestream.errors import ConfigError, TransientError

__all__ = ["RegistryLookup", "registry_lookup"]

_NOT_FOUND = 404


class RegistryLookup:
    """Resolves writer schemas by id and registers ours, through a registry client.

    Args:
        client: A ``confluent_kafka.schema_registry`` client (``mock://`` URLs give
            the library's in-process registry).
    """

    def __init__(self, client: SchemaRegistryClient) -> None:
        self._client = client

    def schema_for_id(self, schema_id: int) -> dict[str, Any] | None:
        """The schema registered under ``schema_id``, or None when the registry has none."""
        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == _NOT_FOUND:
                return None
            raise TransientError(f"schema registry: get schema {schema_id}: {exc}") from exc
        if schema.schema_str is None or (schema.schema_type or "AVRO") != "AVRO":
            return None  # not an Avro schema: unknown to this reader
        try:
            doc: dict[str, Any] = json.loads(schema.schema_str)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def id_for(self, subject: str, schema: dict[str, Any]) -> int:
        """Register ``schema`` under ``subject`` (a no-op when already there); its id."""
        try:
            schema_id: int = self._client.register_schema(
                subject, Schema(json.dumps(schema), "AVRO")
            )
        except SchemaRegistryError as exc:
            raise TransientError(f"schema registry: register {subject}: {exc}") from exc
        return schema_id


def registry_lookup(url: str) -> RegistryLookup:
    """A :class:`RegistryLookup` for the registry at ``url``.

    Raises:
        ConfigError: when the URL is not usable.
    """
    try:
        return RegistryLookup(SchemaRegistryClient.new_client({"url": url}))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid FEATURESTREAM_SCHEMA_REGISTRY_URL {url!r}: {exc}") from exc
