"""`LocalStore`: sessions kept as `SessionState` objects in this process, under one lock.

The in-memory store is exactly this; the durable store is this plus a journal
that writes every change to a file before the operation returns. So every
control a session has (dedupe, coalescing, expiry, claims) lives once, in
`harn_inbox._session`, and both stores have it.

Each operation is one critical section of the store's `Mutex`, in which it
purges what has expired from the sessions it touches, changes or reads them,
and calls `_settle` for each session it changed. After the lock is released
it calls `_after`: reporting what expired (and, in a durable store, waiting
until the change is safe). Subclasses hook into `_new_session`, `_settle` and
`_after`; nothing else.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from .._errors import InboxClosed
from .._mutex import Mutex, acquire_contended, reentered
from .._session import PushNote, SessionState
from .._statistics import SessionStatistics
from ._protocol import ClaimRecord

if TYPE_CHECKING:
    from .._entry import InboxEntry
    from .._session import Cursor, Meta, PushOptions
    from ._protocol import StoreSettings


class LocalStore:
    """What `MemoryStore` and `SqliteStore` share: see the module docstring."""

    __slots__ = (
        "_active",
        "_closed",
        "_expired",
        "_expiring",
        "_key_windows",
        "_mutex",
        "_sessions",
        "_settings",
    )

    def __init__(self, name: str) -> None:
        self._mutex = Mutex(f"inbox's {name} lock")
        #: Every session with a record: pending entries, or a counter to keep.
        self._sessions: dict[str, SessionState] = {}
        #: The sessions with pending entries (a dict as an ordered set), so that
        #: `sessions` costs what they number, not what every session ever seen does.
        self._active: dict[str, None] = {}
        #: The sessions with entries that may expire: purged before they are looked at.
        self._expiring: dict[str, None] = {}
        #: Entries that expired under the lock, to report once it is released.
        self._expired: list[InboxEntry] = []
        #: (window end, session id) of every dedupe key remembered, in push order: a
        #: keyed push into any session forgets the closed windows of every session,
        #: so memory for keys is bounded by the window even over many sessions.
        self._key_windows: deque[tuple[int, str]] = deque()
        self._settings: StoreSettings | None = None
        self._closed = False

    def __repr__(self) -> str:
        with self._mutex:
            sessions, active = len(self._sessions), len(self._active)
        return f"<{type(self).__name__} sessions={sessions} with_pending={active}>"

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
        try:
            if self._closed:
                raise InboxClosed(f"push to session {session_id!r} after the inbox was closed")
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = self._new_session(session_id)
            elif session.extras is not None and session.extras.expiry:
                self._purge(session_id, session, ts_ms)
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
        if self._expired:
            self._after()
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
        return self._push_settled(session_id, kind, content, source, ts_ms, options)

    def _push_settled(
        self,
        session_id: str,
        kind: str,
        content: str,
        source: str,
        ts_ms: int,
        options: PushOptions | None = None,
    ) -> InboxEntry | PushNote:
        """A push by the general path, where `_settle` and `_after` see it as every other change.

        A push with *options* always comes here; a plain one too in a store
        whose hooks must see every push (a durable one writes its counters
        down there), while `push` above skips them for speed.
        """
        settings = self._settings
        assert settings is not None
        with self._mutex:
            if self._closed:
                raise InboxClosed(f"push to session {session_id!r} after the inbox was closed")
            session = self._session(session_id, ts_ms)
            if options is None:
                pushed = session.push(
                    session_id,
                    kind,
                    content,
                    source,
                    ts_ms,
                    settings.max_pending,
                    settings.drop_oldest,
                )
            else:
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
            if options is not None and options.dedupe_key is not None:
                if not (type(pushed) is PushNote and pushed.duplicate):
                    self._key_windows.append((ts_ms + settings.dedupe_window_ms, session_id))
                self._forget_closed_windows(ts_ms)
            ticket = self._ticket()
        self._after(ticket)
        return pushed

    def reserve_sequence(self, session_id: str) -> int:
        with self._mutex:
            if self._closed:
                raise InboxClosed(
                    f"reserve_sequence for session {session_id!r} after the inbox was closed"
                )
            session = self._session(session_id, None)
            sequence = session.reserve_sequence()
            self._settle(session_id, session)
            ticket = self._ticket()
        self._after(ticket)
        return sequence

    def requeue_front(self, entry: InboxEntry) -> None:
        session_id = entry.session_id
        with self._mutex:
            session = self._session(session_id, None)
            session.requeue_front(entry)
            self._settle(session_id, session)
            ticket = self._ticket()
        self._after(ticket)

    # -- Consuming ----------------------------------------------------------------------------

    def drain(self, session_id: str) -> list[InboxEntry]:
        with self._mutex:
            session = self._existing(session_id)
            entries = [] if session is None else session.drain()
            self._settle(session_id, session)
            ticket = self._ticket()
        self._after(ticket)
        return entries

    def read(self, session_id: str, cursor: Cursor | None) -> tuple[Cursor, list[InboxEntry], bool]:
        with self._mutex:
            session = self._existing(session_id) or _EMPTY_SESSION
            reading = session.read(cursor)
            ticket = self._ticket()
        self._after(ticket)
        return reading

    def take(
        self, session_id: str, cursor: Cursor, chosen: list[InboxEntry]
    ) -> list[InboxEntry] | None:
        with self._mutex:
            session = self._existing(session_id)
            taken = None if session is None else session.take(cursor, chosen)
            self._settle(session_id, session)
            ticket = self._ticket()
        self._after(ticket)
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
            record = None if taken is None else self._new_claim(session_id, taken, metas)
            if record is not None:
                record.life = session
            self._settle(session_id, session)
            ticket = self._ticket()
        self._after(ticket)
        return record

    def settle(self, claim: ClaimRecord) -> None:
        """The claim's entries were handled: they are gone for good (here they already are)."""

    def release(self, claim: ClaimRecord) -> int:
        """Put the claim's entries back at the head of their session; return how many went back."""
        if not claim.entries:
            return 0
        with self._mutex:
            session = self._session(claim.session_id, None)
            restored = session.restore(claim.entries, claim.metas, same_life=claim.life is session)
            self._released(claim)
            self._settle(claim.session_id, session)
            ticket = self._ticket()
        self._after(ticket)
        return restored

    def revoke(self, session_id: str, sequence: int) -> InboxEntry | None:
        with self._mutex:
            session = self._existing(session_id)
            entry = None if session is None else session.revoke(sequence)
            self._settle(session_id, session)
            ticket = self._ticket()
        self._after(ticket)
        return entry

    def clear(self, session_id: str) -> int:
        with self._mutex:
            self._existing(session_id)  # what expired is not pending: not counted as dropped
            session = self._sessions.pop(session_id, None)
            self._active.pop(session_id, None)
            self._expiring.pop(session_id, None)
            if not self._sessions:
                # A dict never shrinks as keys go: once the last record goes,
                # let the tables of a busier past go too.
                self._sessions, self._active, self._expiring = {}, {}, {}
            dropped = 0 if session is None else session.clear()
            self._settle(session_id, session)
            ticket = self._ticket()
        self._after(ticket)
        return dropped

    def refuse_pushes(self) -> None:
        """Refuse pushes from now on (`Inbox.close`); everything else goes on working."""
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
            ticket = self._ticket()
        self._after(ticket)
        return pending

    def pending_count(self, session_id: str) -> int:
        with self._mutex:
            session = self._existing(session_id)
            count = 0 if session is None else session.pending_count()
            ticket = self._ticket()
        self._after(ticket)
        return count

    def snapshot(self, session_id: str) -> list[InboxEntry]:
        with self._mutex:
            session = self._existing(session_id)
            entries = [] if session is None else session.entries()
            ticket = self._ticket()
        self._after(ticket)
        return entries

    def sessions(self) -> list[str]:
        with self._mutex:
            for session_id in list(self._expiring):
                self._existing(session_id)
            active = list(self._active)
            ticket = self._ticket()
        self._after(ticket)
        return active

    def statistics(self, session_id: str) -> SessionStatistics:
        with self._mutex:
            session = self._existing(session_id) or _EMPTY_SESSION
            counters = session.counters()
            ticket = self._ticket()
        self._after(ticket)
        return SessionStatistics(
            session_id=session_id, waiters=0, durable=self._durable(), **counters
        )

    # -- Hooks for subclasses -----------------------------------------------------------------

    def _new_session(self, session_id: str) -> SessionState:
        """A new record for *session_id* (under the lock)."""
        return SessionState()

    def _new_claim(
        self, session_id: str, entries: list[InboxEntry], metas: list[Meta]
    ) -> ClaimRecord:
        """The record of a claim that took *entries* (under the lock)."""
        return ClaimRecord(session_id, entries, metas, None)

    def _released(self, claim: ClaimRecord) -> None:
        """*claim*'s entries went back to their session (under the lock)."""

    def _settle(self, session_id: str, session: SessionState | None) -> None:
        """After a change to *session* (None: it had no record), under the lock.

        Keeps the indexes of sessions with pending and expiring entries true.
        """
        if session is None or session.version < 0:  # gone, or cleared
            return
        if session.back is None and session.front is None:
            self._active.pop(session_id, None)
        else:
            self._active[session_id] = None
        if session.expires():
            self._expiring[session_id] = None
        else:
            self._expiring.pop(session_id, None)

    def _forget_closed_windows(self, now_ms: int) -> None:
        """Forget the dedupe keys of every session whose window closed by *now_ms* (locked)."""
        windows = self._key_windows
        while windows and windows[0][0] <= now_ms:
            session = self._sessions.get(windows.popleft()[1])
            if session is not None and session.extras is not None:
                session._forget_closed_windows(now_ms)

    def _ticket(self) -> int:
        """Under the lock, at the end of an operation: what `_after` must wait for.

        A durable store's count of the changes written so far if this
        operation wrote any, else 0. Taken under the lock, where nothing else
        can run on this thread (the lock refuses re-entry), and carried to
        `_after` on the operation's own stack: an operation that user code
        runs in between (a logger, a signal handler) has its own.
        """
        return 0

    def _after(self, ticket: int = 0) -> None:
        """After an operation, with the lock released: report what expired.

        A durable store then waits until its *ticket* is in the file.
        """
        # (Read unlocked first: most calls have nothing to report.)
        if self._expired:
            with self._mutex:
                expired, self._expired = self._expired, []
            if expired:
                assert self._settings is not None
                self._settings.expired(expired)

    def _durable(self) -> bool:
        """Whether what this store holds survives the process."""
        return False

    # -- Inside (with the lock held) ----------------------------------------------------------

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
            session = self._sessions[session_id] = self._new_session(session_id)
        elif session_id in self._expiring:
            assert self._settings is not None
            self._purge(session_id, session, self._settings.now_ms() if now_ms is None else now_ms)
        return session

    def _purge(self, session_id: str, session: SessionState, now_ms: int) -> None:
        expired = session.purge(now_ms)
        if expired:
            self._expired += expired
            self._settle(session_id, session)


#: What an unknown session reads as. Never changed: only looked at.
_EMPTY_SESSION = SessionState()
