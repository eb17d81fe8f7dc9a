"""Confluent wire format through the schema-registry adapter.

No registry server can run here, so the adapter talks to confluent-kafka's own
in-process registry (``mock://``), shared by writer and reader.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestream.errors import ConfigError, DecodeError
from featurestream.events import AvroCodec, load_contracts
from streams.kafka.registry import registry_lookup

CLICK = {"event_id": "e1", "user_id": 7, "item_id": 3, "page": "home", "event_time": 17}


def test_wire_format_round_trip_registers_and_resolves_by_id() -> None:
    lookup = registry_lookup("mock://featurestream-test")
    writer = AvroCodec(load_contracts(), lookup, confluent_framing=True)
    data = writer.encode("clicks", CLICK)
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") >= 1
    reader = AvroCodec(load_contracts(), lookup)  # a fresh codec: resolves the id remotely
    assert reader.decode("clicks", data) == CLICK
    assert writer.encode("clicks", CLICK)[:5] == data[:5]  # id cached, registered once


def test_an_id_the_registry_does_not_know_is_unknown_schema() -> None:
    data = AvroCodec(load_contracts(), registry_lookup("mock://a"), confluent_framing=True).encode(
        "clicks", CLICK
    )
    reader = AvroCodec(load_contracts(), registry_lookup("mock://b"))  # another registry
    with pytest.raises(DecodeError) as err:
        reader.decode("clicks", data, partition=2, offset=9)
    assert (err.value.kind, err.value.partition, err.value.offset) == ("unknown_schema", 2, 9)


def test_wire_format_without_registry_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        AvroCodec(load_contracts(), None, confluent_framing=True)


_LOOKUP = registry_lookup("mock://featurestream-property")
_WRITER = AvroCodec(load_contracts(), _LOOKUP, confluent_framing=True)
_READER = AvroCodec(load_contracts(), _LOOKUP)


@settings(max_examples=80, deadline=None)
@given(
    record=st.fixed_dictionaries(
        {
            "event_id": st.text(max_size=36),
            "user_id": st.integers(-(2**63), 2**63 - 1),
            "item_id": st.integers(-(2**63), 2**63 - 1),
            "amount": st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
            "currency": st.text(max_size=3),
            "event_time": st.integers(0, 2**62),
        }
    )
)
def test_wire_format_round_trip_of_any_purchase(record: dict[str, object]) -> None:
    data = _WRITER.encode("purchases", record)
    assert data[0] == 0
    assert _READER.decode("purchases", data) == record
