"""The online store on Redis: the one package that knows keys, fields, expiry, scripts
and Redis errors (import-linter keeps ``redis`` and ``hiredis`` in here).

* :mod:`.layout`: the tiles' keys and fields (pure, no Feast).
* :mod:`.feast_layout`: batch views in Feast's layout, and the commands of the port's
  reads (imports Feast: only the feature server loads it).
* :mod:`.client`: URLs, clients and the mapping of Redis errors to ours.
* :mod:`.store`: :class:`RedisOnlineStore`, the blocking half of the port.
* :mod:`.reader`: the asyncio half (the feature server's readers) on :mod:`.resp`.

Engine processes import this package without Feast; :mod:`.reader` is imported where
it is used.
"""

from .client import RedisAddress, check, connect, parse
from .store import RedisOnlineStore

__all__ = ["RedisAddress", "RedisOnlineStore", "check", "connect", "parse"]
