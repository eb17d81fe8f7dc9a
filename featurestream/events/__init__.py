"""Event contracts (checked-in Avro schemas) and the one codec for them."""

from .codec import SINGLE_OBJECT_MAGIC, AvroCodec, SchemaLookup, encode_single_object
from .contracts import (
    MAX_EVENT_BYTES,
    MAX_FUTURE_MS,
    Contract,
    contract_for_topic,
    crc64_avro,
    is_uuid,
    load_contracts,
    parse_contract,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_FUTURE_MS",
    "SINGLE_OBJECT_MAGIC",
    "AvroCodec",
    "Contract",
    "SchemaLookup",
    "contract_for_topic",
    "crc64_avro",
    "encode_single_object",
    "is_uuid",
    "load_contracts",
    "parse_contract",
]
