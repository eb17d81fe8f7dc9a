"""Settings of every test tier."""

from __future__ import annotations

from hypothesis import settings

# Property tests are judged on what they compute, never on how long one example took:
# Hypothesis's default 200 ms deadline fails examples on a loaded machine.
settings.register_profile("featurestream", deadline=None)
settings.load_profile("featurestream")
