"""A fresh embedded stack and a private, applied copy of the feature repository."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from featurestream.settings import Settings
from featurestream_app.stack import down, free_port, up

__all__ = ["bench_stack"]


@contextmanager
def bench_stack(partitions: int = 3) -> Iterator[tuple[Path, Settings]]:
    """A work folder and the settings of a stack started for one benchmark (then removed).

    Topics get ``partitions`` partitions.

    ``settings.repo_path`` is a copy of ``feature_repo/`` applied to the stack's Redis.
    """
    from streams.repo import apply_repo

    work = Path(tempfile.mkdtemp(prefix="fs-bench-"))
    repo = work / "feature_repo"
    shutil.copytree(
        Path("feature_repo"), repo, ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    settings = Settings(
        state_dir=work / "state",
        broker_port=free_port(),
        redis_port=free_port(),
        repo_path=repo,
        topic_partitions=partitions,
    )
    up(settings)
    try:
        apply_repo(repo, settings.online_redis_url)
        yield work, settings
    finally:
        down(settings)
        shutil.rmtree(work, ignore_errors=True)
