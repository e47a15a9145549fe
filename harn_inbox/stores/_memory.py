"""`MemoryStore`: the sessions of one inbox, in this process's memory. The default store."""

from __future__ import annotations

from typing import final

from ._local import LocalStore


@final
class MemoryStore(LocalStore):
    """Keeps each session's entries and counters in memory; nothing outlives the process.

    The default: ``Inbox()`` is ``Inbox(store=MemoryStore())``. One store
    serves one inbox. Every operation takes the store's lock for a short
    stretch that never blocks; each session is a `harn_inbox._session.SessionState`.

    A session's record stays once it has been used, so that its sequence
    counter carries on after a drain: about 130 bytes for a drained session,
    whose only other record would be the counter itself.
    `Inbox.clear_session` forgets it.
    """

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("memory store")
