"""The integration tier runs against the embedded local stack (real broker + Redis),
started by `featurestream_app.stack.up` on free ports in a temporary state directory.

One stack per test module: lateness is decided per partition from the events it
holds, so modules must not see each other's events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from featurestream.settings import Settings
from tests.support import running_stack


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A running local stack; stopped (by pid) at the end of the module."""
    yield from running_stack(tmp_path_factory)


@pytest.fixture()
def repo(tmp_path: Path, local_stack: Settings) -> Path:
    """A private copy of feature_repo/, applied (registry under the copy)."""
    from streams.repo import apply_repo
    from tests.support import copy_feature_repo

    path = copy_feature_repo(tmp_path)
    apply_repo(path, local_stack.online_redis_url)
    return path
