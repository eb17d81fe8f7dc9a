"""The asyncio half of the online store, built from a URL (the feature server's).

Apart from :mod:`streams.online` because reading batch views in Feast's layout needs
Feast, which engine processes never import.
"""

from __future__ import annotations

from .base import OnlineReader

__all__ = ["connect_online_reader"]


def connect_online_reader(
    url: str, *, kind: str = "pipelined", timeout_ms: int = 1000, max_in_flight: int = 64
) -> OnlineReader:
    """The asyncio online-store reader ``kind`` at ``url`` (no I/O until its first call).

    Raises:
        ConfigError: when the URL cannot be parsed.
    """
    from .redis.reader import make_reader

    return make_reader(url, kind=kind, timeout_ms=timeout_ms, max_in_flight=max_in_flight)
