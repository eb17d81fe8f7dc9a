"""Event contracts: the checked-in Avro schemas are the only definition of events.

Each ``schemas/*.avsc`` file is one event type. Two custom attributes bind it to
Kafka: ``featurestream.topic`` (the topic it is published on) and
``featurestream.key`` (the field whose decimal value is the Kafka key).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import to_parsing_canonical_form

from featurestream.errors import ConfigError

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_FUTURE_MS",
    "Contract",
    "contract_for_topic",
    "crc64_avro",
    "is_uuid",
    "load_contracts",
    "parse_contract",
    "strip_logical_types",
]

# An event's time may be at most this far ahead of the moment it was produced
# (producer clock skew); further ahead it is out of range.
MAX_FUTURE_MS = 5 * 60 * 1000
# No event of ours comes near this; a larger message is dead-lettered as too_large
# before it is parsed (a runaway producer must not make the engine parse megabytes).
MAX_EVENT_BYTES = 64 * 1024

# The textual form of a UUID (RFC 4122, either case): what a ``uuid`` logical type holds.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")

_EMPTY64 = 0xC15D213AA4D7A795
_MASK64 = 0xFFFFFFFFFFFFFFFF


def _fp_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY64 & (-(fp & 1) & _MASK64))
        table.append(fp)
    return tuple(table)


_FP_TABLE = _fp_table()


def crc64_avro(data: bytes) -> int:
    """The CRC-64-AVRO (Rabin) fingerprint of ``data``, as the Avro spec defines it."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


def is_uuid(value: object) -> bool:
    """True when ``value`` is a UUID in its textual form (``8-4-4-4-12`` hex digits)."""
    return type(value) is str and _UUID.fullmatch(value) is not None


def strip_logical_types(schema: Any) -> Any:
    """Return ``schema`` without ``logicalType`` annotations.

    The binary encoding is unchanged (a timestamp-millis is a long on the wire), so
    the hot path reads ``event_time`` as an int in milliseconds instead of building
    a datetime per event. The parsing canonical form, and so the fingerprint, is the
    same with or without logical types.
    """
    if isinstance(schema, dict):
        return {k: strip_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [strip_logical_types(v) for v in schema]
    return schema


@dataclass(frozen=True)
class Contract:
    """One event type: its schema and where it travels.

    Attributes:
        name: Full Avro name, e.g. ``featurestream.events.Click``.
        topic: Kafka topic the events are published on.
        key_field: Field whose decimal string is the Kafka message key.
        schema_json: The schema as checked in (with docs and logical types).
        parsed: fastavro-parsed schema without logical types (the wire view).
        fingerprint: CRC-64-AVRO of the parsing canonical form, 8 bytes little-endian.
        field_names: The record's field names, in schema order.
        minimums: ``(field, minimum)`` pairs from the ``featurestream.min`` field
            attribute: a value below it (or not a finite number) is out of range.
        uuid_fields: Fields of logical type ``uuid``: strings that must be UUIDs (the
            wire view has no logical types, so encoding does not check them).
    """

    name: str
    topic: str
    key_field: str
    schema_json: dict[str, Any] = field(repr=False)
    parsed: Any = field(repr=False)
    fingerprint: bytes
    field_names: tuple[str, ...]
    minimums: tuple[tuple[str, float], ...] = ()
    uuid_fields: tuple[str, ...] = ()

    @property
    def field_types(self) -> dict[str, str]:
        """Avro type name of every field (logical types stripped)."""
        out = {}
        for f in self.parsed["fields"]:
            t = f["type"]
            out[f["name"]] = t if isinstance(t, str) else str(t.get("type"))
        return out

    def out_of_range(self, record: Mapping[str, Any]) -> str | None:
        """Why ``record`` is out of range, or None when every bounded field is fine."""
        for name, minimum in self.minimums:
            value = record.get(name)
            if type(value) is int and value >= minimum:
                continue  # the common case, decided without the checks below
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue  # absent or of the wrong type: encoding reports it
            try:
                finite = math.isfinite(value)
            except OverflowError:
                finite = False
            if not (finite and value >= minimum):
                return f"{name}={value!r} is out of range: must be a finite number >= {minimum}"
        return None

    def invalid_uuid(self, record: Mapping[str, Any]) -> str | None:
        """Why a ``uuid`` field of ``record`` is not a UUID, or None when all are.

        An absent field is left to encoding to report (``missing_field``).
        """
        for name in self.uuid_fields:
            value = record.get(name)
            if not is_uuid(value) and name in record:
                return (
                    f"{name}={value!r} is not a UUID: the {self.topic} schema declares {name} "
                    "a uuid; give every event its own (e.g. str(uuid.uuid4()))"
                )
        return None


def parse_contract(schema_json: dict[str, Any]) -> Contract:
    """Build a :class:`Contract` from a schema document.

    Raises:
        ConfigError: when the schema is not a valid Avro record with the
            ``featurestream.topic`` and ``featurestream.key`` attributes.
    """
    name = f"{schema_json.get('namespace', '')}.{schema_json.get('name', '')}".strip(".")
    try:
        topic = schema_json["featurestream.topic"]
        key_field = schema_json["featurestream.key"]
        parsed = fastavro.parse_schema(strip_logical_types(schema_json), _write_hint=False)
    except KeyError as exc:
        raise ConfigError(
            f"schema {name!r} lacks attribute {exc.args[0]!r}; every event schema names its "
            "topic ('featurestream.topic') and key field ('featurestream.key')"
        ) from exc
    except (fastavro.schema.SchemaParseException, ValueError, TypeError) as exc:
        raise ConfigError(f"schema {name!r} is not valid Avro: {exc}") from exc
    fields = schema_json.get("fields")
    if schema_json.get("type") != "record" or not isinstance(fields, list):
        raise ConfigError(f"schema {name!r} is not valid Avro: an event is a record with fields")
    field_names = tuple(f["name"] for f in fields)
    if key_field not in field_names:
        raise ConfigError(
            f"schema {name!r}: key field {key_field!r} is not a field; fields: {field_names}"
        )
    minimums = tuple(
        (f["name"], f["featurestream.min"])
        for f in schema_json["fields"]
        if "featurestream.min" in f
    )
    uuid_fields = tuple(
        f["name"]
        for f in schema_json["fields"]
        if isinstance(f["type"], dict) and f["type"].get("logicalType") == "uuid"
    )
    canonical = to_parsing_canonical_form(parsed).encode()
    return Contract(
        name=name,
        topic=topic,
        key_field=key_field,
        schema_json=schema_json,
        parsed=parsed,
        fingerprint=crc64_avro(canonical).to_bytes(8, "little"),
        field_names=field_names,
        minimums=minimums,
        uuid_fields=uuid_fields,
    )


@functools.cache
def load_contracts() -> tuple[Contract, ...]:
    """The checked-in contracts, read once from the package's ``schemas/`` folder."""
    folder = resources.files("featurestream.events") / "schemas"
    docs = [
        json.loads(entry.read_text(encoding="utf-8"))
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".avsc")
    ]
    return tuple(parse_contract(doc) for doc in docs)


def contract_for_topic(topic: str, contracts: tuple[Contract, ...] | None = None) -> Contract:
    """The contract of the events published on ``topic``.

    Raises:
        ConfigError: when no contract names that topic.
    """
    known = contracts if contracts is not None else load_contracts()
    for contract in known:
        if contract.topic == topic:
            return contract
    raise ConfigError(
        f"unknown topic {topic!r}; topics with an event schema: {sorted(c.topic for c in known)}"
    )
