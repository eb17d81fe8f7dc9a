"""The feature server's configuration files (they hold the API keys) do not pile up in
the temp directory when servers are killed before they remove their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from serving.server import remove_stale_configs


def test_files_of_dead_servers_are_removed_and_the_others_kept(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"featurestream-serve-{dead.pid}-abc123.json"
    running = tmp_path / f"featurestream-serve-{os.getpid()}-def456.json"
    unnamed = tmp_path / "featurestream-serve-xyz.json"  # no pid in its name: not ours to judge
    other = tmp_path / f"something-else-{dead.pid}-abc.json"
    for path in (stale, running, unnamed, other):
        path.write_text("{}")
    assert remove_stale_configs(tmp_path) == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (running, unnamed, other)
    )
