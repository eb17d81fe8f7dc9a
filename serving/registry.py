"""Adapter: read the Feast registry of a ``FeatureStore`` into a snapshot (blocking I/O).

Called from a worker thread at start-up and every ``registry_refresh_s``; a
snapshot is made (and a new catalog compiled) only when the registry's content
changed since the last one.
"""

from __future__ import annotations

import hashlib
from typing import Any

from featurestream.errors import ConfigError

from .catalog import RegistrySnapshot

__all__ = ["StoreRegistry"]


class StoreRegistry:
    """The registry of one ``feast.FeatureStore``.

    Args:
        store: The feature store (its registry is read on :meth:`load`, not here).
    """

    def __init__(self, store: Any) -> None:
        self._store = store

    @property
    def project(self) -> str:
        """The Feast project."""
        return str(self._store.project)

    def load(self, previous_fingerprint: str | None = None) -> RegistrySnapshot | None:
        """Re-read the registry; None when it did not change since ``previous_fingerprint``.

        Raises:
            ConfigError: when the registry cannot be read or its objects not rebuilt.
        """
        store = self._store
        project = store.project
        try:
            store.refresh_registry()
            registry = store.registry
            fingerprint = hashlib.sha256(
                registry.proto().SerializeToString(deterministic=True)
            ).hexdigest()
            if fingerprint == previous_fingerprint:
                return None
            config = store.config
            return RegistrySnapshot(
                project=project,
                entity_key_serialization_version=int(config.entity_key_serialization_version),
                versioned_online_reads=bool(
                    getattr(config.registry, "enable_online_feature_view_versioning", False)
                ),
                entities=tuple(registry.list_entities(project, allow_cache=True)),
                feature_views=(
                    *registry.list_feature_views(project, allow_cache=True),
                    *registry.list_stream_feature_views(project, allow_cache=True),
                ),
                on_demand_feature_views=tuple(
                    registry.list_on_demand_feature_views(project, allow_cache=True)
                ),
                feature_services=tuple(registry.list_feature_services(project, allow_cache=True)),
                fingerprint=fingerprint,
            )
        except Exception as exc:  # Feast rebuilds user code (UDFs) here: it may raise anything
            raise ConfigError(
                f"cannot read the Feast registry of project {project!r}: "
                f"{type(exc).__name__}: {exc}; check the registry path in feature_store.yaml "
                "and run featurestream apply"
            ) from exc
