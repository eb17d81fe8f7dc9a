"""Feast's own feature server on the featurestream repository.

Reads go through :class:`streams.online.feast_store.TiledRedisOnlineStore`, so
stream feature views return exact read-time windows over Feast's HTTP API
(``POST /get-online-features``).
"""

from __future__ import annotations

from pathlib import Path

from feast.feature_server import start_server

from streams.repo import open_store

__all__ = ["serve_feast"]


def serve_feast(repo_path: Path, redis_url: str, *, host: str, port: int, workers: int) -> None:
    """Serve ``repo_path`` over HTTP until stopped."""
    store = open_store(repo_path, redis_url)
    start_server(
        store,
        host=host,
        port=port,
        no_access_log=True,
        workers=workers,
        worker_connections=1000,
        max_requests=0,
        max_requests_jitter=0,
        keep_alive_timeout=30,
        registry_ttl_sec=5,
        tls_key_path="",
        tls_cert_path="",
        metrics=False,
    )
