"""Typed events, one dataclass per checked-in schema (checked against it in tests).

An event is checked when it is made: a dataclass that breaks its contract (an
``event_id`` that is not a UUID, an ``event_time`` that is not int milliseconds or
before 1970) raises :class:`~featurestream.errors.InvalidEvent` instead of existing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, cast

from featurestream.errors import InvalidEvent
from featurestream.events import Contract, contract_for_topic

__all__ = ["Click", "Event", "Impression", "Purchase", "check_record"]


def check_record(contract: Contract, record: Mapping[str, Any]) -> None:
    """Refuse what encoding does not: an ``event_time`` that is not an int of epoch
    milliseconds (a float is refused, never rounded) and a ``uuid`` field (``event_id``)
    that is not a UUID. (Encoding checks types and the contract's minimums.)

    Raises:
        InvalidEvent: kind ``schema_mismatch`` or ``invalid_id``.
    """
    event_time = record.get("event_time")
    if type(event_time) is not int:
        raise InvalidEvent(
            "schema_mismatch",
            f"event_time must be an int of epoch milliseconds (UTC), got "
            f"{type(event_time).__name__} {event_time!r}",
        )
    problem = contract.invalid_uuid(record)
    if problem is not None:
        raise InvalidEvent("invalid_id", problem)


class _Event:
    """What every event dataclass has: its record, checked when the event is made."""

    __slots__ = ()
    TOPIC: ClassVar[str]

    def __post_init__(self) -> None:
        contract = contract_for_topic(self.TOPIC)
        record = self.to_record()
        check_record(contract, record)
        problem = contract.out_of_range(record)
        if problem is not None:
            raise InvalidEvent("out_of_range", problem)

    def to_record(self) -> dict[str, Any]:
        """The Avro record of this event (its fields, in the schema's order)."""
        return {f.name: getattr(self, f.name) for f in fields(cast(Any, self))}


@dataclass(frozen=True, slots=True)
class Click(_Event):
    """A user clicked an item (topic ``clicks``). ``event_time`` is epoch milliseconds, UTC."""

    TOPIC: ClassVar[str] = "clicks"
    event_id: str
    user_id: int
    item_id: int
    page: str
    event_time: int


@dataclass(frozen=True, slots=True)
class Impression(_Event):
    """An item was shown to a user (topic ``impressions``)."""

    TOPIC: ClassVar[str] = "impressions"
    event_id: str
    user_id: int
    item_id: int
    page: str
    event_time: int


@dataclass(frozen=True, slots=True)
class Purchase(_Event):
    """A user bought an item (topic ``purchases``)."""

    TOPIC: ClassVar[str] = "purchases"
    event_id: str
    user_id: int
    item_id: int
    amount: float
    currency: str
    event_time: int


Event = Click | Impression | Purchase
