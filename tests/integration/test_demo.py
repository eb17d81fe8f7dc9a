"""``featurestream demo``, the README's first command, end to end on a stack of its own:
the stack started, batch data materialized, clicks and impressions streamed through the
engine, every view caught up, features read through Feast equal to the events, online
equal to offline (check-consistency), and a model served with its training data's
features. A second run on the same stack reads new users only (the first run's
events are still in the topics).
"""

from __future__ import annotations

import re
from pathlib import Path

from featurestream.settings import Settings
from featurestream_app.stack import free_port
from tests.support import copy_feature_repo, run_cli, stack_env

_CHECKED = re.compile(r"^(\d+) users checked, (\d+) events, (\d+) mismatches$", re.MULTILINE)
_COMPARED = re.compile(
    r"^(\d+) values compared online and offline, (\d+) mismatches$", re.MULTILINE
)
_SERVED = re.compile(r"^\s+\d+\s+7\s+[-\d.]+\s+(yes|NO)$", re.MULTILINE)


def test_the_demo_checks_every_step_and_runs_again_on_its_stack(tmp_path: Path) -> None:
    settings = Settings(
        state_dir=tmp_path / "stack", broker_port=free_port(), redis_port=free_port()
    )
    env = stack_env(
        settings,
        copy_feature_repo(tmp_path),
        FEATURESTREAM_STATE_DIR=str(settings.state_dir),
    )
    try:
        for run in range(2):
            result = run_cli(
                "demo", "--duration", "3", "--rate", "40", "--users", "12", env=env, timeout=600
            )
            out = result.stdout
            checked = _CHECKED.findall(out)
            assert len(checked) == 1, out
            users, events, mismatches = map(int, checked[0])
            assert 0 < users <= 12 and 0 < events <= 120 and mismatches == 0, (run, out)
            compared = _COMPARED.findall(out)
            assert len(compared) == 1 and int(compared[0][0]) > 0, out
            assert int(compared[0][1]) == 0, out
            assert _SERVED.findall(out) == ["yes"] * 3, out
            assert "waiting for the engine to catch up" in result.stderr
    finally:
        run_cli("down", env=env, ok=False)
