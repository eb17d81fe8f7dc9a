"""The one Avro codec shared by producers and consumers.

Framing (told apart on read by the first bytes):

* Avro single-object encoding, the default: ``C3 01`` + the 8-byte little-endian
  CRC-64-AVRO fingerprint of the writer schema + the Avro body. Writer schemas are
  resolved by fingerprint against the checked-in contracts (and any older
  versions registered with :meth:`AvroCodec.add_writer_schema`); no registry
  server is needed.
* Confluent wire format: ``00`` + 4-byte big-endian schema id + the Avro body.
  Writer schemas are looked up by id through a :class:`SchemaLookup` when one is
  configured.

Decoding never raises anything but :class:`~featurestream.errors.DecodeError`.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import fastavro
from fastavro import schemaless_reader, schemaless_writer

from featurestream.errors import ConfigError, DecodeError, InvalidEvent

from .contracts import MAX_EVENT_BYTES, Contract, parse_contract, strip_logical_types
from .fastread import compile_reader
from .fastwrite import compile_writer

__all__ = ["SINGLE_OBJECT_MAGIC", "AvroCodec", "SchemaLookup"]

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_CONFLUENT_MAGIC = 0
_SO_HEADER = 10
_CONFLUENT_HEADER = 5

# What fastavro raises on bytes that do not match the schema. Translated here, once.
_AVRO_READ_ERRORS = (
    EOFError,
    ValueError,
    IndexError,
    TypeError,
    KeyError,
    OverflowError,
    UnicodeDecodeError,
    StopIteration,
    MemoryError,
    fastavro.read.SchemaResolutionError,
)


class SchemaLookup(Protocol):
    """Port to a schema registry."""

    def schema_for_id(self, schema_id: int) -> dict[str, Any] | None:
        """Return the schema document for ``schema_id``, or None when unknown."""

    def id_for(self, subject: str, schema: dict[str, Any]) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its id."""


class AvroCodec:
    """Encodes and decodes the events of a set of contracts.

    Args:
        contracts: The reader contracts, one per topic.
        lookup: Optional schema registry client for the Confluent wire format.
        confluent_framing: Encode in the Confluent wire format (needs ``lookup``;
            the schema is registered under subject ``{topic}-value``). Decoding
            always accepts both framings.

    Example:
        >>> from featurestream.events import AvroCodec, load_contracts
        >>> codec = AvroCodec(load_contracts())
        >>> data = codec.encode("clicks", {"event_id": "e1", "user_id": 7, "item_id": 3,
        ...                                "page": "home", "event_time": 1_700_000_000_000})
        >>> codec.decode("clicks", data)["user_id"]
        7
    """

    def __init__(
        self,
        contracts: tuple[Contract, ...],
        lookup: SchemaLookup | None = None,
        *,
        confluent_framing: bool = False,
    ) -> None:
        if confluent_framing and lookup is None:
            raise ConfigError("the Confluent wire format needs a schema registry (lookup)")
        self._readers: dict[str, Contract] = {c.topic: c for c in contracts}
        self._writers: dict[bytes, Any] = {c.fingerprint: c.parsed for c in contracts}
        self._lookup = lookup
        self._confluent = confluent_framing
        self._by_id: dict[int, Any] = {}
        self._headers: dict[str, bytes] = {}

    @property
    def topics(self) -> tuple[str, ...]:
        """Topics this codec has a reader contract for."""
        return tuple(self._readers)

    def reader(self, topic: str) -> Contract:
        """The reader contract of ``topic``."""
        try:
            return self._readers[topic]
        except KeyError:
            raise DecodeError(
                "unknown_topic",
                f"no event schema for topic {topic!r}; known: {sorted(self._readers)}",
            ) from None

    def add_writer_schema(self, schema_json: dict[str, Any]) -> bytes:
        """Accept events written with another (older or newer) version of a schema.

        Returns:
            The fingerprint under which the writer schema is now known.
        """
        contract = parse_contract(schema_json)
        self._writers[contract.fingerprint] = contract.parsed
        return contract.fingerprint

    # ------------------------------------------------------------------ encode
    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes:
        """Encode ``record`` with the contract of ``topic`` in single-object framing.

        Raises:
            InvalidEvent: when the record does not fit the schema (missing field,
                wrong type, value out of range).
        """
        contract = self._readers.get(topic)
        if contract is None:
            raise InvalidEvent(
                "unknown_topic", f"no event schema for topic {topic!r}; known: {self.topics}"
            )
        problem = contract.out_of_range(record)
        if problem is not None:
            raise InvalidEvent("out_of_range", problem)
        if not self._confluent:
            return encode_single_object(contract, record)
        header = self._headers.get(topic)
        if header is None:
            assert self._lookup is not None  # checked in __init__
            schema_id = self._lookup.id_for(f"{topic}-value", contract.schema_json)
            header = bytes([_CONFLUENT_MAGIC]) + struct.pack(">I", schema_id)
            self._headers[topic] = header
            self._by_id[schema_id] = contract.parsed
        return header + encode_single_object(contract, record)[_SO_HEADER:]

    # ------------------------------------------------------------------ decode
    def decode(
        self, topic: str, data: bytes | None, *, partition: int = -1, offset: int = -1
    ) -> dict[str, Any]:
        """Decode one message value of ``topic`` into a record with the reader schema.

        Raises:
            DecodeError: with ``kind`` one of ``unknown_topic``, ``empty``, ``too_large``,
                ``not_avro``, ``truncated``, ``unknown_schema``, ``schema_mismatch``, and the
                position.
        """
        try:
            return self._decode(topic, data)
        except DecodeError as exc:
            raise exc.at(topic, partition, offset) from None

    def _decode(self, topic: str, data: bytes | None) -> dict[str, Any]:
        reader = self.reader(topic)
        if not data:
            raise DecodeError("empty", "message has no value")
        if len(data) > MAX_EVENT_BYTES:
            raise DecodeError(
                "too_large",
                f"message of {len(data)} bytes exceeds the {MAX_EVENT_BYTES}-byte event limit",
            )
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < _SO_HEADER:
                raise DecodeError(
                    "truncated", f"single-object header needs 10 bytes, got {len(data)}"
                )
            writer = self._writers.get(data[2:_SO_HEADER])
            if writer is None:
                raise DecodeError(
                    "unknown_schema",
                    f"writer fingerprint {data[2:_SO_HEADER].hex()} is not a known schema of "
                    f"{reader.name}; register it or upgrade the reader",
                )
            body_start = _SO_HEADER
        elif data[0] == _CONFLUENT_MAGIC:
            if len(data) < _CONFLUENT_HEADER:
                raise DecodeError("truncated", f"wire-format header needs 5 bytes, got {len(data)}")
            writer = self._writer_for_id(struct.unpack(">I", data[1:_CONFLUENT_HEADER])[0])
            body_start = _CONFLUENT_HEADER
        else:
            raise DecodeError(
                "not_avro",
                f"first bytes {data[:2].hex()} are neither single-object (c301) "
                "nor Confluent wire format (00)",
            )
        record = _read_body(data, body_start, writer, reader.parsed)
        problem = reader.out_of_range(record)
        if problem is not None:
            raise DecodeError("out_of_range", problem)
        return record

    def _writer_for_id(self, schema_id: int) -> Any:
        writer = self._by_id.get(schema_id)
        if writer is not None:
            return writer
        doc = self._lookup.schema_for_id(schema_id) if self._lookup is not None else None
        if doc is None:
            raise DecodeError(
                "unknown_schema",
                f"schema id {schema_id} is not known"
                + ("" if self._lookup else "; no schema registry is configured"),
            )
        try:
            writer = fastavro.parse_schema(strip_logical_types(doc), _write_hint=False)
        except (fastavro.schema.SchemaParseException, ValueError, TypeError, KeyError) as exc:
            raise DecodeError(
                "unknown_schema", f"schema id {schema_id} is not an Avro record schema: {exc}"
            ) from exc
        self._by_id[schema_id] = writer
        return writer


def encode_single_object(contract: Contract, record: Mapping[str, Any]) -> bytes:
    """Encode one record in Avro single-object framing with ``contract``'s schema.

    Raises:
        InvalidEvent: when the record does not fit the schema.
    """
    fast = _fast_writer(contract)
    if fast is not None:
        try:
            return SINGLE_OBJECT_MAGIC + contract.fingerprint + fast(record)
        except KeyError as exc:
            raise InvalidEvent(
                "missing_field", f"{contract.name}: field {exc.args[0]!r} is required"
            ) from exc
        except (TypeError, ValueError) as exc:
            raise InvalidEvent("schema_mismatch", f"{contract.name}: {exc}") from exc
    for field in contract.parsed["fields"]:
        if field["name"] not in record and "default" not in field:
            raise InvalidEvent(
                "missing_field", f"{contract.name}: field {field['name']!r} is required"
            )
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC)
    buf.write(contract.fingerprint)
    try:
        schemaless_writer(buf, contract.parsed, record, strict_allow_default=True)
    except KeyError as exc:
        raise InvalidEvent(
            "missing_field", f"{contract.name}: field {exc.args[0]!r} is required"
        ) from exc
    except (ValueError, TypeError, AttributeError, OverflowError, struct.error) as exc:
        raise InvalidEvent("schema_mismatch", f"{contract.name}: {exc}") from exc
    return buf.getvalue()


_FAST_WRITERS: dict[bytes, Callable[[Mapping[str, Any]], bytes] | None] = {}


def _fast_writer(contract: Contract) -> Callable[[Mapping[str, Any]], bytes] | None:
    try:
        return _FAST_WRITERS[contract.fingerprint]
    except KeyError:
        writer = _FAST_WRITERS[contract.fingerprint] = compile_writer(contract.parsed)
        return writer


_FastReader = Callable[[bytes, int], tuple[dict[str, Any], int]]
# Keyed by id(parsed); the entry holds the parsed schema so the id stays its own.
_FAST_READERS: dict[int, tuple[Any, _FastReader | None]] = {}


def _fast_reader(parsed: Any) -> _FastReader | None:
    entry = _FAST_READERS.get(id(parsed))
    if entry is None or entry[0] is not parsed:
        entry = _FAST_READERS[id(parsed)] = (parsed, compile_reader(parsed))
    return entry[1]


def _read_body(data: bytes, start: int, writer: Any, reader: Any) -> dict[str, Any]:
    # Same writer and reader schema (no evolution): the compiled reader, when the
    # schema has one. It raises the exception types fastavro raises, mapped below.
    fast = _fast_reader(writer) if writer is reader else None
    record: object
    try:
        if fast is not None:
            record, end = fast(data, start)
        else:
            stream = io.BytesIO(data)
            stream.seek(start)
            record = schemaless_reader(stream, writer, None if writer is reader else reader)
            end = stream.tell()
    except (EOFError, IndexError) as exc:
        # fastavro reports running out of bytes as EOFError or as an IndexError on the
        # byte buffer; an IndexError into a list is a bad union branch, not a short body.
        if isinstance(exc, IndexError) and "list" in str(exc):
            raise DecodeError(
                "schema_mismatch", f"body does not match the schema: {exc!r}"
            ) from exc
        raise DecodeError("truncated", f"body ends early: {exc!r}") from exc
    except _AVRO_READ_ERRORS as exc:
        raise DecodeError("schema_mismatch", f"body does not match the schema: {exc!r}") from exc
    if end != len(data):
        raise DecodeError(
            "schema_mismatch",
            f"{len(data) - end} bytes left after the record: written with another schema",
        )
    if not isinstance(record, dict):
        raise DecodeError("schema_mismatch", "body is not a record")
    return record
