"""Serving: fresh features over HTTP for inference services."""

__all__: list[str] = []
