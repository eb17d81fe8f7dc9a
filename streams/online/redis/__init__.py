"""The online store on Redis: the one package that knows keys, fields, expiry, scripts
and Redis errors (import-linter keeps ``redis`` and ``hiredis`` in here).

* :mod:`.layout`: keys and fields, and the commands of the port's reads (pure).
* :mod:`.client`: URLs, clients and the mapping of Redis errors to ours.
* :mod:`.store`: :class:`RedisOnlineStore`, the blocking half of the port.
* :mod:`.reader`: the asyncio half (the feature server's readers) on :mod:`.resp`.
"""

from .client import RedisAddress, check, connect, parse
from .reader import AsyncRedisReader, PipelinedRedisReader, ThreadRedisReader, make_reader
from .store import RedisOnlineStore

__all__ = [
    "AsyncRedisReader",
    "PipelinedRedisReader",
    "RedisAddress",
    "RedisOnlineStore",
    "ThreadRedisReader",
    "check",
    "connect",
    "make_reader",
    "parse",
]
