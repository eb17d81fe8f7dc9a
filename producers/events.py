"""Typed events, one dataclass per checked-in schema (checked against it in tests)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["Click", "Event", "Impression", "Purchase"]


@dataclass(frozen=True, slots=True)
class Click:
    """A user clicked an item (topic ``clicks``). ``event_time`` is epoch milliseconds, UTC."""

    TOPIC: ClassVar[str] = "clicks"
    event_id: str
    user_id: int
    item_id: int
    page: str
    event_time: int

    def to_record(self) -> dict[str, Any]:
        """The Avro record of this event."""
        return {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "page": self.page,
            "event_time": self.event_time,
        }


@dataclass(frozen=True, slots=True)
class Impression:
    """An item was shown to a user (topic ``impressions``)."""

    TOPIC: ClassVar[str] = "impressions"
    event_id: str
    user_id: int
    item_id: int
    page: str
    event_time: int

    def to_record(self) -> dict[str, Any]:
        """The Avro record of this event."""
        return {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "page": self.page,
            "event_time": self.event_time,
        }


@dataclass(frozen=True, slots=True)
class Purchase:
    """A user bought an item (topic ``purchases``)."""

    TOPIC: ClassVar[str] = "purchases"
    event_id: str
    user_id: int
    item_id: int
    amount: float
    currency: str
    event_time: int

    def to_record(self) -> dict[str, Any]:
        """The Avro record of this event."""
        return {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "amount": self.amount,
            "currency": self.currency,
            "event_time": self.event_time,
        }


Event = Click | Impression | Purchase
