"""Feast provider plugin: Feast's local provider, minus materializing stream views.

Configure it in ``feature_store.yaml`` with ``provider: streams.provider.FeaturestreamProvider``.
Aggregating stream feature views are kept online by ``featurestream run`` (tiles
merged at read time) and offline by its log, so ``feast materialize`` and
``featurestream materialize`` load only the other (batch) views.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from feast.infra.passthrough_provider import PassthroughProvider
from feast.stream_feature_view import StreamFeatureView

__all__ = ["FeaturestreamProvider"]

log = logging.getLogger(__name__)


class FeaturestreamProvider(PassthroughProvider):
    """Skips aggregating stream views in materialization; everything else is Feast's."""

    def materialize_single_feature_view(
        self,
        config: Any,
        feature_view: Any,
        start_date: datetime,
        end_date: datetime,
        registry: Any,
        project: str,
        tqdm_builder: Any,
        disable_event_timestamp: bool = False,
    ) -> None:
        if isinstance(feature_view, StreamFeatureView) and feature_view.aggregations:
            log.info(
                "view=%s is kept online by featurestream run; not materialized", feature_view.name
            )
            return
        super().materialize_single_feature_view(
            config,
            feature_view,
            start_date,
            end_date,
            registry,
            project,
            tqdm_builder,
            disable_event_timestamp,
        )
