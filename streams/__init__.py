"""The streaming engine: Feast stream feature views compiled and run by Bytewax.

* ``streams.core``: pure aggregation core (specs, aggregators, tiles).
* ``streams.definitions``: compiles Feast objects into specs.
* ``streams.online``: the online tile store (Redis) and the Feast online store plugin.
* ``streams.flow``: the Bytewax dataflow and its Kafka/Redis adapters.
"""

__all__: list[str] = []
