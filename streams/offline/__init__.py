"""The offline side: the append-only Parquet log and the Feast offline store plugin.

``streams.offline.feast_store`` is imported by Feast by class path and is not
re-exported here.
"""

from .log import EntityEvents, ViewLogWriter, log_schema, read_view_log, write_backfill

__all__ = ["EntityEvents", "ViewLogWriter", "log_schema", "read_view_log", "write_backfill"]
