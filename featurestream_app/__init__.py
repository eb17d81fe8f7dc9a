"""The composition root: the ``featurestream`` command, the local stack and the benchmarks.

Every process starts here: a command loads the settings once, builds the adapters
it needs (Kafka, Redis, Parquet, HTTP) and wires the engine (:mod:`streams`), the
feature server (:mod:`serving`) and the producers (:mod:`producers`) together.
Nothing below imports this package.
"""

__all__: list[str] = []
