"""`featurestream` with one protection switched off, for the fault suite's negative controls.

Run as ``python -m tests.e2e.engine_variant run ...`` with ``FAULTS_VARIANT``:

* ``no-dedupe``: the partition gate never reports a duplicate (resent events count twice).
* ``no-produce-bound``: the watermark moves with event times alone (one producer clock
  that runs fast turns the next events of its partition late).
* ``no-eviction-check``: the store's eviction count is not compared with the markers'
  (keys Redis evicts to free memory go unnoticed).
* ``forget-state``: tile state is not resumed after a crash while source offsets are
  (what a stateless restart with at-least-once offsets does): tiles restart from empty.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import bytewax.operators as op

from featurestream_app.cli.main import main
from streams.core import gate

variant = os.environ.get("FAULTS_VARIANT", "")
if variant == "no-dedupe":
    original_admit = gate.PartitionGate.admit

    def admit(
        self: gate.PartitionGate, event_id: str, event_time_ms: int, produced_ms: int | None = None
    ) -> str:
        status = original_admit(self, f"{event_id}-{uuid.uuid4()}", event_time_ms, produced_ms)
        return status

    gate.PartitionGate.admit = admit  # type: ignore[method-assign]
elif variant == "no-produce-bound":
    original_admit = gate.PartitionGate.admit

    def unbounded(
        self: gate.PartitionGate, event_id: str, event_time_ms: int, produced_ms: int | None = None
    ) -> str:
        status = original_admit(self, event_id, event_time_ms, None)
        return status

    gate.PartitionGate.admit = unbounded  # type: ignore[method-assign]
elif variant == "no-eviction-check":
    import featurestream_app.engine
    import streams.flow.watch
    from streams.online import base

    def never(mark: Any, stats: Any) -> None:
        return None

    for module in (base, streams.flow.watch, featurestream_app.engine):
        module.evicted_since = never  # type: ignore[attr-defined]
elif variant == "forget-state":
    original_stateful_batch = op.stateful_batch
    run_id = uuid.uuid4().hex[:8]

    def stateful_batch(step_id: str, up: Any, builder: Any) -> Any:
        return original_stateful_batch(f"{step_id}_{run_id}", up, builder)

    op.stateful_batch = stateful_batch
elif variant:
    raise SystemExit(f"unknown FAULTS_VARIANT {variant!r}")

if __name__ == "__main__":
    main()
