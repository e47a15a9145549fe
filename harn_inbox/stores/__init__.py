"""Where an `Inbox` keeps its sessions: ``Inbox(store=...)``.

`MemoryStore` (the default) keeps them in this process's memory,
`SqliteStore` in a file, `RedisStore` on a Redis server shared by many
processes. Every store passes the same conformance kit (``harn_inbox.testing``).
"""

from ._memory import MemoryStore
from ._redis import RedisStore
from ._sqlite import SqliteStore

__all__ = ["MemoryStore", "RedisStore", "SqliteStore"]

# Say harn_inbox.stores.MemoryStore, not harn_inbox.stores._memory.MemoryStore.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
