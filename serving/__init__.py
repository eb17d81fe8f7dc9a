"""Serving: fresh features over HTTP for inference services.

* :func:`run_server` / :func:`build_app`: the fast Feast-compatible feature server
  (``POST /get-online-features`` plus ``/health``, ``/ready``, ``/features``,
  ``/metrics``), configured by :class:`ServerSettings`;
* :mod:`serving.feast_server`: Feast's own feature server on the same repository.
"""

from .server import build_app, create_app, run_server
from .settings import ServerSettings, load_api_keys, parse_api_keys

__all__ = [
    "ServerSettings",
    "build_app",
    "create_app",
    "load_api_keys",
    "parse_api_keys",
    "run_server",
]
