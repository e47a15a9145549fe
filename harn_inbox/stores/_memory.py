"""`MemoryStore`: the sessions of one inbox, in this process's memory. The default store."""

from __future__ import annotations

from typing import TYPE_CHECKING, final

from .._errors import InboxClosed
from .._mutex import Mutex, acquire_contended, reentered
from .._session import SessionState
from .._statistics import SessionStatistics
from ._protocol import ClaimRecord

if TYPE_CHECKING:
    from .._entry import InboxEntry
    from .._session import Cursor, Meta, PushNote, PushOptions
    from ._protocol import StoreSettings


@final
class MemoryStore:
    """Keeps each session's entries and counters in memory; nothing outlives the process.

    The default: ``Inbox()`` is ``Inbox(store=MemoryStore())``. One store
    serves one inbox. Every operation takes the store's lock for a short
    stretch that never blocks; each session is a `SessionState`.

    A session's record stays once it has been used, so that its sequence
    counter carries on after a drain: about 130 bytes for a drained session,
    whose only other record would be the counter itself.
    `Inbox.clear_session` forgets it.
    """

    __slots__ = (
        "_active",
        "_closed",
        "_expired",
        "_expiring",
        "_mutex",
        "_sessions",
        "_settings",
    )

    def __init__(self) -> None:
        self._mutex = Mutex("inbox's memory store lock")
        #: Every session with a record: pending entries, or a counter to keep.
        self._sessions: dict[str, SessionState] = {}
        #: The sessions with pending entries (a dict as an ordered set), so that
        #: `sessions` costs what they number, not what every session ever seen does.
        self._active: dict[str, None] = {}
        #: The sessions with entries that may expire: purged before they are looked at.
        self._expiring: dict[str, None] = {}
        #: Entries that expired under the lock, to report once it is released.
        self._expired: list[InboxEntry] = []
        self._settings: StoreSettings | None = None
        self._closed = False

    def __repr__(self) -> str:
        with self._mutex:
            sessions, active = len(self._sessions), len(self._active)
        return f"<MemoryStore sessions={sessions} with_pending={active}>"

    def attach(self, settings: StoreSettings) -> None:
        """Serve the inbox whose *settings* these are; once only.

        Raises:
            ValueError: Another inbox uses this store already.
        """
        with self._mutex:
            if self._settings is not None:
                raise ValueError("store is already used by another Inbox; make one store per inbox")
            self._settings = settings

    # -- Producing ----------------------------------------------------------------------------

    def push(
        self, session_id: str, kind: str, content: str, source: str, ts_ms: int
    ) -> InboxEntry | PushNote:
        settings = self._settings
        assert settings is not None
        # The mutex, entered inline: one Python call fewer on the hot path.
        mutex = self._mutex
        lock = mutex.lock
        if not lock.acquire(False):
            acquire_contended(lock)
        if mutex.busy:
            lock.release()
            raise reentered(mutex.name)
        mutex.busy = True
        purged = False
        try:
            if self._closed:
                raise InboxClosed(f"push to session {session_id!r} after the inbox was closed")
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = SessionState()
            elif session.extras is not None and session.extras.expiry:
                purged = self._purge(session_id, session, ts_ms)
            if session.back is None:  # it may have had nothing pending
                self._active[session_id] = None
            pushed = session.push(
                session_id,
                kind,
                content,
                source,
                ts_ms,
                settings.max_pending,
                settings.drop_oldest,
            )
        finally:
            mutex.busy = False
            lock.release()
            if purged:
                self._report_expired()
        return pushed

    def push_with(
        self,
        session_id: str,
        kind: str,
        content: str,
        source: str,
        ts_ms: int,
        options: PushOptions,
    ) -> InboxEntry | PushNote:
        settings = self._settings
        assert settings is not None
        with self._mutex:
            if self._closed:
                raise InboxClosed(f"push to session {session_id!r} after the inbox was closed")
            session = self._session(session_id, ts_ms)
            pushed = session.push_with(
                session_id,
                kind,
                content,
                source,
                ts_ms,
                settings.max_pending,
                settings.drop_oldest,
                options,
                settings.dedupe_window_ms,
            )
            self._settle(session_id, session)
        self._report_expired()
        return pushed

    def reserve_sequence(self, session_id: str) -> int:
        with self._mutex:
            if self._closed:
                raise InboxClosed(
                    f"reserve_sequence for session {session_id!r} after the inbox was closed"
                )
            sequence = self._session(session_id, None).reserve_sequence()
        self._report_expired()
        return sequence

    def requeue_front(self, entry: InboxEntry) -> None:
        session_id = entry.session_id
        with self._mutex:
            session = self._session(session_id, None)
            session.requeue_front(entry)
            self._active[session_id] = None
        self._report_expired()

    # -- Consuming ----------------------------------------------------------------------------

    def drain(self, session_id: str) -> list[InboxEntry]:
        with self._mutex:
            session = self._existing(session_id)
            entries = [] if session is None else session.drain()
            self._settle(session_id, session)
        self._report_expired()
        return entries

    def read(self, session_id: str, cursor: Cursor | None) -> tuple[Cursor, list[InboxEntry], bool]:
        with self._mutex:
            session = self._existing(session_id) or _EMPTY_SESSION
            reading = session.read(cursor)
        self._report_expired()
        return reading

    def take(
        self, session_id: str, cursor: Cursor, chosen: list[InboxEntry]
    ) -> list[InboxEntry] | None:
        with self._mutex:
            session = self._existing(session_id)
            taken = None if session is None else session.take(cursor, chosen)
            self._settle(session_id, session)
        self._report_expired()
        return taken

    def claim(
        self, session_id: str, cursor: Cursor | None, chosen: list[InboxEntry] | None
    ) -> ClaimRecord | None:
        metas: list[Meta] = []
        with self._mutex:
            session = self._existing(session_id)
            if session is None:
                taken: list[InboxEntry] | None = None if cursor is not None else []
            elif cursor is None:
                taken = session.drain(metas)
            else:
                assert chosen is not None
                taken = session.take(cursor, chosen, metas)
            self._settle(session_id, session)
        self._report_expired()
        return None if taken is None else ClaimRecord(session_id, taken, metas)

    def settle(self, claim: ClaimRecord) -> None:
        """The claim's entries were handled: they are gone for good (here they already are)."""

    def release(self, claim: ClaimRecord) -> int:
        """Put the claim's entries back at the head of their session; return how many went back."""
        if not claim.entries:
            return 0
        metas: list[Meta] = claim.token  # type: ignore[assignment]
        with self._mutex:
            session = self._session(claim.session_id, None)
            restored = session.restore(claim.entries, metas)
            self._settle(claim.session_id, session)
        self._report_expired()
        return restored

    def revoke(self, session_id: str, sequence: int) -> InboxEntry | None:
        with self._mutex:
            session = self._existing(session_id)
            entry = None if session is None else session.revoke(sequence)
            self._settle(session_id, session)
        self._report_expired()
        return entry

    def clear(self, session_id: str) -> int:
        with self._mutex:
            session = self._sessions.pop(session_id, None)
            self._active.pop(session_id, None)
            self._expiring.pop(session_id, None)
            return 0 if session is None else session.clear()

    def close(self) -> None:
        """Refuse pushes from now on; everything else goes on working."""
        with self._mutex:
            self._closed = True

    # -- Looking ------------------------------------------------------------------------------

    def has_pending(self, session_id: str) -> bool:
        # Lock-free, the common case: one dict lookup is atomic. A session with
        # entries that may expire is purged first, under the lock.
        if session_id not in self._active:
            return False
        if session_id not in self._expiring:
            return True
        with self._mutex:
            self._existing(session_id)
            pending = session_id in self._active
        self._report_expired()
        return pending

    def pending_count(self, session_id: str) -> int:
        with self._mutex:
            session = self._existing(session_id)
            count = 0 if session is None else session.pending_count()
        self._report_expired()
        return count

    def snapshot(self, session_id: str) -> list[InboxEntry]:
        with self._mutex:
            session = self._existing(session_id)
            entries = [] if session is None else session.entries()
        self._report_expired()
        return entries

    def sessions(self) -> list[str]:
        with self._mutex:
            for session_id in list(self._expiring):
                self._existing(session_id)
            active = list(self._active)
        self._report_expired()
        return active

    def statistics(self, session_id: str) -> SessionStatistics:
        with self._mutex:
            session = self._existing(session_id) or _EMPTY_SESSION
            counters = session.counters()
        self._report_expired()
        return SessionStatistics(session_id=session_id, waiters=0, **counters)

    # -- Inside (with the lock held; _report_expired without) --------------------------------

    def _existing(self, session_id: str) -> SessionState | None:
        # The session's record, purged of what has expired; None if it has none.
        session = self._sessions.get(session_id)
        if session is not None and session_id in self._expiring:
            assert self._settings is not None
            self._purge(session_id, session, self._settings.now_ms())
        return session

    def _session(self, session_id: str, now_ms: int | None) -> SessionState:
        # The session's record, made if it has none; purged at *now_ms* (or the clock's now).
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = SessionState()
        elif session_id in self._expiring:
            assert self._settings is not None
            self._purge(session_id, session, self._settings.now_ms() if now_ms is None else now_ms)
        return session

    def _purge(self, session_id: str, session: SessionState, now_ms: int) -> bool:
        # Whether something expired (then `_report_expired` after the lock).
        expired = session.purge(now_ms)
        if expired:
            self._expired += expired
            self._settle(session_id, session)
        return bool(expired)

    def _settle(self, session_id: str, session: SessionState | None) -> None:
        # After a change: keep the indexes of sessions with pending and expiring entries true.
        if session is None:
            return
        if session.back is None and session.front is None:
            self._active.pop(session_id, None)
        else:
            self._active[session_id] = None
        if session.expires():
            self._expiring[session_id] = None
        else:
            self._expiring.pop(session_id, None)

    def _report_expired(self) -> None:
        # With the lock released: tell the inbox what expired, for its telemetry.
        # (Read unlocked first: most calls have nothing to report.)
        if self._expired:
            with self._mutex:
                expired, self._expired = self._expired, []
            if expired:
                assert self._settings is not None
                self._settings.expired(expired)


#: What an unknown session reads as. Never changed: only looked at.
_EMPTY_SESSION = SessionState()
