"""Entities of the StreamFlow feature store."""

from feast import Entity, ValueType

OWNER = "ml-platform@streamflow.example"

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A StreamFlow subscriber, keyed by the export's user_id (trimmed at ingestion).",
    owner=OWNER,
    tags={"domain": "customer", "pii": "false"},
)
