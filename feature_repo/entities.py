"""Entities of the e-commerce demo domain."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A shopper, identified by the user_id carried by every event.",
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.INT64,
    description="A catalogue item.",
)
