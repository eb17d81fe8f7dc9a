"""Open the Feast repository (the single source of truth for features)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import feast.stream_feature_view  # noqa: F401 - its import resets the RuntimeWarning filters
from feast import FeatureStore
from feast.errors import FeastError
from feast.repo_config import load_repo_config

from featurestream.errors import ConfigError

__all__ = ["apply_repo", "open_store"]

# Feast flags every StreamFeatureView as alpha; featurestream is what runs them. Set
# after Feast's own ``simplefilter("once", RuntimeWarning)`` so it is not overridden.
warnings.filterwarnings(
    "ignore", message="Stream feature views are experimental", category=RuntimeWarning
)


def _config(repo_path: Path, redis_url: str) -> Any:
    yaml_file = repo_path / "feature_store.yaml"
    if not yaml_file.is_file():
        raise ConfigError(
            f"no feature repository at {repo_path.resolve()} (feature_store.yaml missing); "
            "run from the project root or set FEATURESTREAM_REPO_PATH"
        )
    try:
        config = load_repo_config(repo_path.resolve(), yaml_file)
    except (FeastError, ValueError) as exc:
        raise ConfigError(f"{yaml_file}: {exc}") from exc
    if isinstance(config.online_config, dict):
        # The process's settings decide where Redis is, for every view (tiled or not).
        config.online_config["connection_string"] = redis_url
        config._online_store = None
    return config


def open_store(repo_path: Path, redis_url: str) -> FeatureStore:
    """A ``feast.FeatureStore`` on ``repo_path`` whose online store is ``redis_url``.

    Raises:
        ConfigError: when the repository is missing or its configuration is invalid.
    """
    return FeatureStore(repo_path=str(repo_path.resolve()), config=_config(repo_path, redis_url))


def apply_repo(repo_path: Path, redis_url: str) -> None:
    """Register the definitions of ``repo_path`` (what ``feast apply`` does).

    Raises:
        ConfigError: when a definition is invalid.
    """
    from feast.repo_operations import apply_total

    config = _config(repo_path, redis_url)
    root = str(repo_path.resolve())
    cwd = os.getcwd()
    # Feast imports the repository's modules by name from its root and chdirs into it.
    if root not in sys.path:
        sys.path.append(root)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            apply_total(config, Path(root), skip_source_validation=True)
    except (FeastError, ValueError, ImportError, SyntaxError) as exc:
        raise ConfigError(f"feast apply of {repo_path} failed: {exc}") from exc
    finally:
        os.chdir(cwd)
