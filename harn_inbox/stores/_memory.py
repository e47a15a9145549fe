"""`MemoryStore`: the sessions of one inbox, in this process's memory. The default store."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from .._errors import InboxClosed
from .._mutex import Mutex, acquire_contended, reentered
from .._session import SessionState
from .._statistics import SessionStatistics

if TYPE_CHECKING:
    from .._entry import InboxEntry
    from .._session import Cursor, PushNote
    from ._protocol import StoreSettings


@final
class MemoryStore:
    """Keeps each session's entries and counters in memory; nothing outlives the process.

    The default: ``Inbox()`` is ``Inbox(store=MemoryStore())``. One store
    serves one inbox. Every operation takes the store's lock for a short
    stretch that never blocks; a session's state is a `SessionState`.

    A session's record stays once it has been used, so that its sequence
    counter carries on after a drain (about 130 bytes for a drained session);
    `Inbox.clear_session` forgets it.
    """

    __slots__ = (
        "_active",
        "_attached",
        "_closed",
        "_drop_oldest",
        "_max_pending",
        "_mutex",
        "_sessions",
    )

    def __init__(self) -> None:
        self._mutex = Mutex("inbox's memory store lock")
        #: Every session with a record: pending entries, or a counter to keep.
        self._sessions: dict[str, SessionState] = {}
        #: The sessions with pending entries (a dict as an ordered set), so that
        #: `sessions` costs what they number, not what every session ever seen does.
        self._active: dict[str, None] = {}
        self._attached = False
        self._closed = False
        self._max_pending: int | None = None
        self._drop_oldest = False

    def __repr__(self) -> str:
        with self._mutex:
            sessions, active = len(self._sessions), len(self._active)
        return f"<MemoryStore sessions={sessions} with_pending={active}>"

    def attach(self, settings: StoreSettings) -> None:
        """Take on the bounds of the inbox that will use this store; once only.

        Raises:
            ValueError: Another inbox uses this store already.
        """
        with self._mutex:
            if self._attached:
                raise ValueError("store is already used by another Inbox; make one store per inbox")
            self._attached = True
            self._max_pending = settings.max_pending
            self._drop_oldest = settings.drop_oldest

    # -- Changing -----------------------------------------------------------------------------

    def push(
        self, session_id: str, kind: str, content: str, source: str, ts_ms: int
    ) -> InboxEntry | PushNote:
        # The mutex, entered inline (one Python call fewer per push).
        mutex = self._mutex
        lock = mutex.lock
        if not lock.acquire(False):
            acquire_contended(lock)
        if mutex.busy:
            lock.release()
            raise reentered(mutex.name)
        mutex.busy = True
        try:
            if self._closed:
                raise InboxClosed(f"push to session {session_id!r} after the inbox was closed")
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = SessionState()
            if session.back is None:  # it may have had nothing pending
                self._active[session_id] = None
            return session.push(
                session_id, kind, content, source, ts_ms, self._max_pending, self._drop_oldest
            )
        finally:
            mutex.busy = False
            lock.release()

    def requeue_front(self, entry: InboxEntry) -> None:
        session_id = entry.session_id
        with self._mutex:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = SessionState()
            session.requeue_front(entry)
            self._active[session_id] = None

    def drain(self, session_id: str) -> list[InboxEntry]:
        with self._mutex:
            session = self._sessions.get(session_id)
            if session is None:
                return []
            entries = session.drain()
            self._settle(session_id, session)
            return entries

    def take(
        self, session_id: str, cursor: Cursor, chosen: list[InboxEntry]
    ) -> list[InboxEntry] | None:
        with self._mutex:
            session = self._sessions.get(session_id)
            if session is None:
                return None  # cleared since it was read
            taken = session.take(cursor, chosen)
            self._settle(session_id, session)
            return taken

    def clear(self, session_id: str) -> int:
        with self._mutex:
            session = self._sessions.pop(session_id, None)
            self._active.pop(session_id, None)
            return 0 if session is None else session.clear()

    def close(self) -> None:
        """Refuse pushes from now on; everything else goes on working."""
        with self._mutex:
            self._closed = True

    # -- Looking ------------------------------------------------------------------------------

    def has_pending(self, session_id: str) -> bool:
        return session_id in self._active  # one dict lookup: atomic, no lock needed

    def read(self, session_id: str, cursor: Cursor | None) -> tuple[Cursor, list[InboxEntry], bool]:
        with self._mutex:
            session = self._sessions.get(session_id)
            if session is None:
                session = _EMPTY_SESSION
            return session.read(cursor)

    def pending_count(self, session_id: str) -> int:
        with self._mutex:
            session = self._sessions.get(session_id)
            return 0 if session is None else session.pending_count()

    def snapshot(self, session_id: str) -> list[InboxEntry]:
        with self._mutex:
            session = self._sessions.get(session_id)
            return [] if session is None else session.entries()

    def sessions(self) -> list[str]:
        with self._mutex:
            return list(self._active)

    def statistics(self, session_id: str) -> SessionStatistics:
        with self._mutex:
            session = self._sessions.get(session_id) or _EMPTY_SESSION
            return SessionStatistics(
                session_id=session_id,
                pending=session.pending_count(),
                waiters=0,
                last_sequence=session.last_sequence,
                dropped=session.dropped,
            )

    # -- Inside -------------------------------------------------------------------------------

    def _settle(self, session_id: str, session: SessionState) -> None:
        # With the lock held, after a change that may have emptied the session.
        if session.back is None and session.front is None:
            self._active.pop(session_id, None)


#: What an unknown session reads as. Never changed: only looked at.
_EMPTY_SESSION = SessionState()
