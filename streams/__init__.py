"""The streaming engine: Feast stream feature views compiled and run by Bytewax.

* ``streams.core``: the pure core (specs, aggregators, tiles, classification, reference).
* ``streams.definitions``: compiles Feast objects into specs; ``streams.repo`` opens
  the Feast repository; ``streams.provider`` is the Feast provider plugin.
* ``streams.online``: the online-store port, its Redis and in-memory implementations,
  and the Feast online store plugin.
* ``streams.offline``: the Parquet offline log and the Feast offline store plugin.
* ``streams.kafka``: every Kafka client the engine uses.
* ``streams.flow``: the Bytewax dataflow and its Bytewax sources and sinks.
* ``streams.backfill``, ``streams.restore``, ``streams.consistency``: history, restores
  after an online-store loss, online/offline agreement.
"""

__all__: list[str] = []
