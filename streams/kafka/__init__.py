"""Kafka adapters of the engine: the partition reader, the rejected-message producer, the
backfill replay, the admin calls and the schema registry lookup."""
