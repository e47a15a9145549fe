"""`SqliteStore`: sessions that survive a crash and a restart, in one SQLite file.

Theory of operation
-------------------
The store is the in-memory store (`LocalStore`: each session a
`SessionState`, all under one lock) plus a journal. Every change a session
makes to its queue passes through a few methods of `SessionState`; the
store's sessions (`_JournaledSession`) write each one down as SQL, under the
same lock and so in the order the changes happened, and the store writes each
changed session's counters (`_settle`). An operation returns only once
everything it wrote is committed to the file (`_Journal.wait`). Memory is a
cache of the file: reads come from memory; the file always holds the state
after some prefix of the changes, and every change that returned is in it.

**Group commit.** Threads that finish operations at about the same time share
one commit: the first to wait becomes the leader, takes every statement
written so far (under the store's lock, between two operations, so a batch
never splits an operation), runs them in one transaction with the store's
lock released, and wakes the others; those whose changes it covered return,
the rest elect the next leader. Under load a commit carries many changes, so
durability does not cost one commit per push.

**A failed commit** (a full disk, the file deleted) rolls back. The changes in
that batch, and those written since on top of them, never reach the file:
their operations raise `StoreError`, and the store reloads its sessions from
the file, so memory is again exactly the file. An accepted change is never
lost and a refused one never half kept.

**Restart.** Opening a file loads every session: pending entries in their
order with their payloads, coalesce keys and expiries; sequence counters and
counters; dedupe keys (those whose window has closed are forgotten at the
first push that looks). Entries that a claim took and nobody settled (the
process died in the block) go back to the head of their session, in order:
at-least-once. What `drain` took is gone: at-most-once.

**One owner at a time.** The connection runs in SQLite's exclusive locking
mode and takes the write lock at once, so a second opener, in this process or
another, fails with `StoreError` naming the file instead of sharing it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, final

from .._entry import Delivery, InboxEntry, stamp
from .._errors import StoreError
from .._json import freeze, thaw
from .._mutex import acquire_contended
from .._session import _NO_META, SessionState
from ._local import LocalStore
from ._protocol import ClaimRecord

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .._session import Meta, PushNote
    from ._protocol import StoreSettings

#: ``PRAGMA application_id``: "HRNI". A file with another is not an inbox.
APPLICATION_ID = 0x48524E49
#: ``PRAGMA user_version``: the schema this code reads and writes.
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    last_sequence INTEGER NOT NULL,
    dropped INTEGER NOT NULL,
    duplicates INTEGER NOT NULL,
    coalesced INTEGER NOT NULL,
    expired INTEGER NOT NULL,
    revoked INTEGER NOT NULL,
    reserved INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE entries (
    position INTEGER PRIMARY KEY,  -- order: requeued (< 0, head first), then pushed (> 0)
    session_id TEXT NOT NULL,
    sequence INTEGER NOT NULL, kind TEXT NOT NULL, content TEXT NOT NULL, source TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, payload TEXT, delivery TEXT,
    coalesce_key TEXT, expires_at INTEGER,
    checksum INTEGER NOT NULL  -- of every other column: SQLite keeps none of its own
);
CREATE INDEX entries_by_session ON entries (session_id, position);
CREATE TABLE claimed (
    claim_id INTEGER NOT NULL, ordinal INTEGER NOT NULL,
    session_id TEXT NOT NULL,
    sequence INTEGER NOT NULL, kind TEXT NOT NULL, content TEXT NOT NULL, source TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, payload TEXT, delivery TEXT,
    coalesce_key TEXT, expires_at INTEGER,
    checksum INTEGER NOT NULL,
    PRIMARY KEY (claim_id, ordinal)
) WITHOUT ROWID;
CREATE TABLE dedupe_keys (
    session_id TEXT NOT NULL, key TEXT NOT NULL,
    window_end INTEGER NOT NULL, ordinal INTEGER NOT NULL,
    sequence INTEGER NOT NULL, kind TEXT NOT NULL, content TEXT NOT NULL, source TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, payload TEXT, delivery TEXT,
    checksum INTEGER NOT NULL,
    PRIMARY KEY (session_id, key)
) WITHOUT ROWID;
"""

_ENTRY_COLUMNS = "sequence, kind, content, source, ts_ms, payload, delivery"
_INSERT_ENTRY = (
    f"INSERT INTO entries (position, session_id, {_ENTRY_COLUMNS}, coalesce_key, expires_at, "
    "checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_ENTRY = "DELETE FROM entries WHERE position = ?"
_DELETE_SESSION_ENTRIES = "DELETE FROM entries WHERE session_id = ?"
_UPSERT_SESSION = (
    "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO UPDATE SET "
    "last_sequence = excluded.last_sequence, dropped = excluded.dropped, "
    "duplicates = excluded.duplicates, coalesced = excluded.coalesced, "
    "expired = excluded.expired, revoked = excluded.revoked, reserved = excluded.reserved"
)
_DELETE_SESSION = "DELETE FROM sessions WHERE session_id = ?"
_INSERT_KEY = (
    "INSERT OR REPLACE INTO dedupe_keys "
    f"(session_id, key, window_end, ordinal, {_ENTRY_COLUMNS}, checksum) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_CLOSED_KEYS = "DELETE FROM dedupe_keys WHERE session_id = ? AND window_end <= ?"
_DELETE_SESSION_KEYS = "DELETE FROM dedupe_keys WHERE session_id = ?"
_INSERT_CLAIMED = (
    f"INSERT INTO claimed (claim_id, ordinal, session_id, {_ENTRY_COLUMNS}, "
    "coalesce_key, expires_at, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_CLAIM = "DELETE FROM claimed WHERE claim_id = ?"

Sync = Literal["normal", "full"]
_SYNCS = ("normal", "full")


@final
class SqliteStore(LocalStore):
    """Keeps every session in one SQLite file: what was pushed survives a crash.

    ``Inbox(store=SqliteStore("agent-inbox.db"))``. When a call that changes
    the inbox returns, its change is in the file: with ``sync="normal"`` (WAL,
    ``synchronous=NORMAL``) it survives the process being killed; with
    ``sync="full"`` also a power loss. Threads pushing at once share commits.
    A new inbox on the same file finds every pending entry, counter and dedupe
    key (see the module docstring), and what an unsettled `Inbox.claim` held
    back at the head. Only the standard library's ``sqlite3`` is used.

    One store serves one inbox, and one open store owns its file: opening a
    file that another store (in this process or another) has open raises.
    `close` (or leaving ``with SqliteStore(...) as store:``) closes the file;
    `Inbox.close` only stops pushes, and draining after it still works.

    Args:
        path: The file; made, with its schema, if it does not exist.
        sync: ``"normal"`` or ``"full"``, as above.

    Raises:
        TypeError: *path* is not a ``str`` or path, or *sync* not a ``str``.
        ValueError: *sync* is not ``"normal"`` or ``"full"``.
        StoreError: The file cannot be used (naming it, and why): it is open
            elsewhere, is not a SQLite file or not an inbox, is corrupt, is
            from a newer harn_inbox, or cannot be written.
    """

    __slots__ = ("_journal", "_next_back", "_next_claim", "_next_front", "_next_key", "path")

    def __init__(self, path: str | os.PathLike[str], *, sync: Sync = "normal") -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or a path, not {type(path).__name__}")
        if not isinstance(sync, str):
            raise TypeError(f"sync must be 'normal' or 'full', not {type(sync).__name__}")
        if sync not in _SYNCS:
            raise ValueError(f"sync must be 'normal' or 'full', not {sync!r}")
        super().__init__("sqlite store")
        #: The file, as given.
        self.path = Path(path)
        connection = _open(self.path, sync)  # in a transaction that holds the write lock
        self._journal = _Journal(self, connection)
        self._next_back = 1
        self._next_front = -1
        self._next_claim = 1
        self._next_key = 1
        try:
            with self._mutex:
                self._load()
            # Read whole and sound: only now write to it (the lock is kept from here).
            connection.execute(
                "INSERT INTO meta VALUES ('opened', 1) "
                "ON CONFLICT (key) DO UPDATE SET value = value + 1"
            )
            connection.execute("COMMIT")
            connection.execute(f"PRAGMA synchronous = {sync.upper()}")
            with self._mutex:
                self._requeue_claims()
                ticket = self._journal.take_ticket()
            self._journal.wait(ticket)  # the claims put back at the head are in the file now
        except BaseException as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            self._journal.close()
            if isinstance(error, sqlite3.Error):
                raise _store_error(self.path, "cannot be used", error) from error
            raise

    def __repr__(self) -> str:
        state = "closed" if self._journal.closed else "open"
        return f"<SqliteStore {str(self.path)!r} {state}>"

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the file: the store can no longer be used, and the file can be opened again.

        Idempotent; any thread. Everything that returned is in the file
        already. Calls on the inbox afterwards raise `StoreError`.
        """
        self._journal.close()

    # -- Operations not shared with the memory store --------------------------------------

    # The general path rather than LocalStore's inline one: the session's
    # counters must be written down too (_settle).
    push = LocalStore._push_settled

    def settle(self, claim: ClaimRecord) -> None:
        if claim.token is None:  # a claim that took nothing
            return
        with self._mutex:
            self._check_open()
            self._journal.record(_DELETE_CLAIM, (claim.token,))
            ticket = self._ticket()
        self._after(ticket)

    def attach(self, settings: StoreSettings) -> None:
        super().attach(settings)
        # Now the clock is known: forget the dedupe keys whose window closed while
        # the file was shut (a session that sees no keyed push would keep them).
        with self._mutex:
            self._forget_closed_windows(settings.now_ms())
            ticket = self._ticket()
        self._after(ticket)

    # -- The hooks of LocalStore ----------------------------------------------------------------

    def _new_session(self, session_id: str) -> SessionState:
        return _JournaledSession(self, session_id)

    def _new_claim(
        self, session_id: str, entries: list[InboxEntry], metas: list[Meta]
    ) -> ClaimRecord:
        if not entries:
            return ClaimRecord(session_id, entries, metas, None)
        claim_id = self._next_claim
        self._next_claim += 1
        for ordinal, (entry, meta) in enumerate(zip(entries, metas, strict=True)):
            self._journal.record(
                _INSERT_CLAIMED,
                _checksummed((claim_id, ordinal, session_id, *_columns(entry), *meta)),
            )
        return ClaimRecord(session_id, entries, metas, claim_id)

    def _released(self, claim: ClaimRecord) -> None:
        if claim.token is not None:
            self._journal.record(_DELETE_CLAIM, (claim.token,))

    def _settle(self, session_id: str, session: SessionState | None) -> None:
        super()._settle(session_id, session)
        if session is not None and session.version >= 0:
            extras = session.extras
            self._journal.session_row(
                session_id,
                (session_id, _to_i64(session.last_sequence), session.dropped)
                + ((0, 0, 0, 0, 0) if extras is None else extras.totals()),
            )

    def _ticket(self) -> int:
        return self._journal.take_ticket()

    def _after(self, ticket: int = 0) -> None:
        super()._after()  # a logger told what expired may write: its ticket is its own
        self._journal.wait(ticket)

    def _durable(self) -> bool:
        return True

    def _existing(self, session_id: str) -> SessionState | None:
        self._check_open()
        return super()._existing(session_id)

    def _session(self, session_id: str, now_ms: int | None) -> SessionState:
        self._check_open()
        return super()._session(session_id, now_ms)

    def _check_open(self) -> None:
        # Every operation on a session looks it up first: that is where a closed store says so.
        if self._journal.closed:
            raise StoreError(f"{self.path}: the store was closed; open the file again")

    # -- Loading ------------------------------------------------------------------------------

    def _load(self) -> None:
        """Read every session from the file into memory (with the lock held).

        Raises:
            StoreError: The file is corrupt (a row fails its checksum, or
                cannot be read), naming it.
        """
        connection = self._journal.connection
        self._sessions.clear()
        self._active.clear()
        self._expiring.clear()
        self._journal.positions.clear()
        try:
            for row in connection.execute("SELECT * FROM sessions"):
                session = self._new_session(row[0])
                session.last_sequence = _from_i64(row[1])
                session.dropped = row[2]
                if any(row[3:]):
                    session._extras().set_totals(row[3:])
                self._sessions[row[0]] = session
            positions = [0, 0]
            # Requeued entries (position < 0) go in nearest-to-zero first, so the
            # most recent (the head) ends last in `front`; then the pushed ones.
            for query in (
                "SELECT * FROM entries WHERE position < 0 ORDER BY position DESC",
                "SELECT * FROM entries WHERE position > 0 ORDER BY position",
            ):
                for row in connection.execute(query):
                    _check_row(self.path, "entries", row)
                    position, session_id = row[0], row[1]
                    entry = _entry(session_id, row[2:9])
                    meta = (row[9], row[10])
                    session = self._sessions.get(session_id) or self._orphan(session_id)
                    if position < 0:
                        SessionState._put_first(session, entry, meta)
                    else:
                        SessionState._append(session, entry, meta)
                    self._journal.positions[id(entry)] = position
                    positions = [min(positions[0], position), max(positions[1], position)]
            self._next_front = positions[0] - 1
            self._next_back = positions[1] + 1
            for session in self._sessions.values():
                session.restack()  # a session whose sequence wrapped: keys go up again
            keys = connection.execute(
                "SELECT * FROM dedupe_keys ORDER BY window_end, ordinal"
            ).fetchall()
            for row in keys:
                _check_row(self.path, "dedupe_keys", row)
                session = self._sessions.get(row[0]) or self._orphan(row[0])
                SessionState._remember_key(session, row[1], _entry(row[0], row[4:11]), row[2])
                self._key_windows.append((row[2], row[0]))
            self._next_key = 1 + max((row[3] for row in keys), default=0)
            claims = connection.execute(
                "SELECT * FROM claimed ORDER BY claim_id DESC, ordinal"
            ).fetchall()
            for row in claims:
                _check_row(self.path, "claimed", row)
            self._next_claim = 1 + max((row[0] for row in claims), default=0)
        except StoreError:
            raise
        except Exception as error:
            raise _store_error(self.path, "is corrupt (it cannot be read)", error) from error
        for session_id, session in self._sessions.items():
            LocalStore._settle(self, session_id, session)

    def _requeue_claims(self) -> None:
        # At opening (with the lock held): what unsettled claims held goes back
        # to the head of its session, in order; the claims go. (The process
        # that made them died in the block: at-least-once.)
        claims = self._journal.connection.execute(
            "SELECT * FROM claimed ORDER BY claim_id DESC, ordinal"
        ).fetchall()
        # Latest claim first: an earlier claim took older entries, so it ends up ahead.
        for claim_id in dict.fromkeys(row[0] for row in claims):
            rows = [row for row in claims if row[0] == claim_id]
            session_id = rows[0][2]
            session = self._session(session_id, None)
            session.restore(
                [_entry(session_id, row[3:10]) for row in rows],
                [(row[10], row[11]) for row in rows],
            )
            self._journal.record(_DELETE_CLAIM, (claim_id,))
            self._settle(session_id, session)

    def _orphan(self, session_id: str) -> SessionState:
        # Entries or keys of a session with no counters row (never written so).
        session = self._sessions[session_id] = self._new_session(session_id)
        return session


class _JournaledSession(SessionState):
    """A `SessionState` that writes each change to its store's journal (module docstring)."""

    __slots__ = ("session_id", "store")

    def __init__(self, store: SqliteStore, session_id: str) -> None:
        super().__init__()
        self.store = store
        self.session_id = session_id

    def push(
        self,
        session_id: str,
        kind: str,
        content: str,
        source: str,
        ts_ms: int,
        max_pending: int | None,
        drop_oldest: bool,
    ) -> InboxEntry | PushNote:
        pushed = super().push(session_id, kind, content, source, ts_ms, max_pending, drop_oldest)
        self._write_entry(pushed if type(pushed) is InboxEntry else pushed.entry, _NO_META, True)
        return pushed

    def _append(self, entry: InboxEntry, meta: Meta = _NO_META) -> None:
        super()._append(entry, meta)
        self._write_entry(entry, meta, True)

    def _put_first(self, entry: InboxEntry, meta: Meta = _NO_META) -> None:
        super()._put_first(entry, meta)
        self._write_entry(entry, meta, False)

    def _remove(self, entry: InboxEntry) -> Meta | None:
        meta = super()._remove(entry)
        if meta is not None:
            self._erase_entry(entry)
        return meta

    def _pop_head(self) -> InboxEntry:
        entry = super()._pop_head()
        self._erase_entry(entry)
        return entry

    def _removed(self, entries: list[InboxEntry]) -> None:
        for entry in entries:
            self._erase_entry(entry)

    def drain(self, metas: list[Meta] | None = None) -> list[InboxEntry]:
        entries = super().drain(metas)
        if entries:
            journal = self.store._journal
            journal.record(_DELETE_SESSION_ENTRIES, (self.session_id,))
            for entry in entries:
                journal.positions.pop(id(entry), None)
        return entries

    def clear(self) -> int:
        entries = self.entries()
        dropped = super().clear()
        journal = self.store._journal
        for entry in entries:
            journal.positions.pop(id(entry), None)
        journal.forget_session(self.session_id)
        return dropped

    def _remember_key(self, key: str, entry: InboxEntry, window_end: int) -> None:
        super()._remember_key(key, entry, window_end)
        store = self.store
        ordinal = store._next_key
        store._next_key += 1
        store._journal.record(
            _INSERT_KEY,
            _checksummed((self.session_id, key, window_end, ordinal, *_columns(entry))),
        )

    def _forget_closed_windows(self, now_ms: int) -> None:
        extras = self.extras
        before = 0 if extras is None else len(extras.dedupe_order)
        super()._forget_closed_windows(now_ms)
        if extras is not None and len(extras.dedupe_order) < before:
            self.store._journal.record(_DELETE_CLOSED_KEYS, (self.session_id, now_ms))

    def _write_entry(self, entry: InboxEntry, meta: Meta, pushed: bool) -> None:
        store = self.store
        if pushed:
            position = store._next_back
            store._next_back += 1
        else:
            position = store._next_front
            store._next_front -= 1
        store._journal.positions[id(entry)] = position
        store._journal.record(
            _INSERT_ENTRY, _checksummed((position, self.session_id, *_columns(entry), *meta))
        )

    def _erase_entry(self, entry: InboxEntry) -> None:
        journal = self.store._journal
        position = journal.positions.pop(id(entry), None)
        if position is not None:
            journal.record(_DELETE_ENTRY, (position,))


class _Journal:
    """The SQL a store's changes wrote, and the group commit that puts it in the file.

    `record`, `session_row` and `forget_session` are called with the store's
    lock held, by the operation that changes something; `wait` by that
    operation's thread once it has released the lock.
    """

    __slots__ = (
        "_committed",
        "_committing",
        "_descriptor",
        "_failures",
        "_local",
        "_rows",
        "_statements",
        "_store",
        "_written",
        "closed",
        "connection",
        "positions",
    )

    def __init__(self, store: SqliteStore, connection: sqlite3.Connection) -> None:
        self._store = store
        self.connection = connection
        #: The file, held open to see it deleted: its link count drops to 0.
        self._descriptor = os.open(store.path, os.O_RDONLY)
        #: id(pending entry) -> its row's position (entries are alive while pending).
        self.positions: dict[int, int] = {}
        # Under the store's lock: what was written since the last batch was taken.
        self._statements: list[tuple[str, tuple[Any, ...]]] = []
        #: Session id -> its counters' row as last written, for the end of the batch.
        self._rows: dict[str, tuple[Any, ...]] = {}
        #: How many changes were written so far; an operation's ticket is this
        #: count after its last change (per thread: `_local.ticket`, until the
        #: operation takes it, still under the store's lock: `take_ticket`).
        self._written = 0
        self._local = threading.local()
        #: Held by the thread committing (the leader of a group commit).
        self._committing = threading.Lock()
        #: How far the file has got: changes up to this count are in it (or failed).
        self._committed = 0
        #: Tickets whose batch failed: (first, last, what their operations raise).
        self._failures: list[tuple[int, int, StoreError]] = []
        self.closed = False

    # -- Writing (store lock held) -------------------------------------------------------------

    def record(self, sql: str, parameters: tuple[Any, ...]) -> None:
        self._statements.append((sql, parameters))
        self._written += 1
        self._local.ticket = self._written

    def session_row(self, session_id: str, row: tuple[Any, ...]) -> None:
        """The session's counters as they are now: written at the end of the batch."""
        if self._rows.get(session_id) != row:
            self._rows[session_id] = row
            self._written += 1
            self._local.ticket = self._written

    def forget_session(self, session_id: str) -> None:
        """The session was cleared: its entries, keys and counters go (its next life may follow)."""
        self._rows.pop(session_id, None)
        for sql in (_DELETE_SESSION_ENTRIES, _DELETE_SESSION_KEYS, _DELETE_SESSION):
            self.record(sql, (session_id,))

    # -- Waiting (no lock held) ------------------------------------------------------------------

    def take_ticket(self) -> int:
        """This thread's operation's ticket, or 0 if it wrote nothing (under the store's lock)."""
        local = self._local
        ticket: int = getattr(local, "ticket", 0)
        if ticket:
            local.ticket = 0
        return ticket

    def wait(self, ticket: int) -> None:
        """Return once the changes up to *ticket* are in the file; else raise.

        The group commit: whoever finds no commit in progress leads one, of
        everything written so far; whoever finds one waits for it to end (on
        the commit lock, yielding first: a commit takes less than a thread's
        wake-up) and then looks again: covered, or lead the next.

        Raises:
            StoreError: Its batch could not be committed; the store went back
                to what the file holds.
        """
        if not ticket:
            return
        committing = self._committing
        while True:
            for first, last, error in self._failures:  # appended to, never changed
                if first <= ticket <= last:
                    raise error
            if self._committed >= ticket:
                return
            if committing.acquire(False):
                committed = None
                try:
                    if self._committed < ticket:
                        committed = self._commit_batch()
                finally:
                    committing.release()
                # Told with no lock held: a logger may write to the inbox.
                settings = self._store._settings
                if committed is not None and settings is not None and settings.emit is not None:
                    settings.emit("debug", "inbox.commit", committed)
            else:
                acquire_contended(committing)
                committing.release()

    def _commit_batch(self) -> dict[str, object] | None:
        # The leader: everything written so far, in one transaction, the store's lock released.
        # Returns the fields of the commit's telemetry event (None if it failed, or no logger).
        with self._store._mutex:
            statements, self._statements = self._statements, []
            rows, self._rows = self._rows, {}
            through = self._written
        started = time.perf_counter()
        try:
            if self.closed:
                raise StoreError(f"{self._store.path}: the store was closed")
            if os.fstat(self._descriptor).st_nlink == 0:
                raise StoreError(
                    f"{self._store.path} was deleted or replaced while open: "
                    "changes can no longer be kept"
                )
            connection = self.connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                for sql, batch in _runs(statements):
                    connection.executemany(sql, batch)
                connection.executemany(_UPSERT_SESSION, list(rows.values()))
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:  # SQLite rolls back itself on a full disk
                    connection.execute("ROLLBACK")
                raise
        except Exception as error:
            self._fail(error)
            return None
        self._committed = through
        settings = self._store._settings
        if settings is None or settings.emit is None:
            return None  # nobody to tell: no event to make
        return {
            "store": str(self._store.path),
            "entries": sum(1 for sql, _ in statements if sql is _INSERT_ENTRY),
            "changes": len(statements) + len(rows),
            "commit_ms": round((time.perf_counter() - started) * 1e3, 3),
        }

    def _fail(self, error: Exception) -> None:
        # The batch did not reach the file, nor did anything written on top of it
        # since: those operations raise, and memory goes back to what the file holds.
        failure = error
        if not isinstance(failure, StoreError):
            failure = _store_error(self._store.path, "cannot be written", error)
        store = self._store
        with store._mutex:
            self._statements, self._rows = [], {}
            last = self._written
            if not self.closed:
                try:
                    store._load()
                except StoreError:
                    pass  # the next commit will say what is wrong with the file
        self._failures.append((self._committed + 1, last, failure))
        self._committed = last
        if store._settings is not None:
            # What the waits saw while memory was reloaded may be stale: look again.
            store._settings.notify_all()

    def close(self) -> None:
        """Close the connection (after the commit in progress, if any). Idempotent."""
        with self._committing:
            if self.closed:
                return
            self.closed = True
            try:
                self.connection.close()
            except Exception:  # closing what is already broken
                pass
            os.close(self._descriptor)


def _runs(
    statements: list[tuple[str, tuple[Any, ...]]],
) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """Consecutive statements of the same SQL, together: one executemany each."""
    batch: list[tuple[Any, ...]] = []
    current = ""
    for sql, parameters in statements:
        if sql is not current and batch:
            yield current, batch
            batch = []
        current = sql
        batch.append(parameters)
    if batch:
        yield current, batch


def _columns(entry: InboxEntry) -> tuple[Any, ...]:
    """An entry's row: sequence (as a signed 64-bit int), kind ... delivery."""
    payload = entry.payload
    return (
        _to_i64(entry.sequence),
        entry.kind,
        entry.content,
        entry.source,
        entry.ts_ms,
        None if payload is None else json.dumps(thaw(payload), separators=(",", ":")),
        None if entry.delivery is None else entry.delivery.value,
    )


def _checksummed(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """*row* with its checksum appended: CRC-32 of its columns' repr."""
    return (*row, _checksum(row))


def _checksum(row: tuple[Any, ...]) -> int:
    # repr escapes what UTF-8 cannot encode (lone surrogates), and reads back the same.
    return zlib.crc32(repr(row).encode())


def _check_row(path: Path, table: str, row: tuple[Any, ...]) -> None:
    if _checksum(row[:-1]) != row[-1]:
        raise StoreError(f"{path} is corrupt: a row of {table} does not match its checksum")


def _entry(session_id: str, row: tuple[Any, ...]) -> InboxEntry:
    """An entry from `_columns`' row."""
    sequence, kind, content, source, ts_ms, payload, delivery = row
    return stamp(
        _from_i64(sequence),
        session_id,
        kind,
        content,
        source,
        ts_ms,
        None if payload is None else freeze(json.loads(payload)),
        None if delivery is None else Delivery(delivery),
    )


def _to_i64(value: int) -> int:
    # Sequences are u64; SQLite's integers are signed 64-bit: two's complement.
    return value - 2**64 if value >= 2**63 else value


def _from_i64(value: int) -> int:
    return value + 2**64 if value < 0 else value


def _store_error(path: Path, what: str, error: BaseException) -> StoreError:
    return StoreError(f"{path} {what}: {error}")


def _open(path: Path, sync: Sync) -> sqlite3.Connection:
    """The file's connection, its schema checked (or made), in a transaction that holds its lock.

    Nothing is written to a file that is not an inbox: the caller reads it
    whole inside this transaction and commits only if it is sound.
    """
    _check_file(path)
    try:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    except sqlite3.Error as error:
        raise _store_error(path, "cannot be opened", error) from error
    try:
        # Exclusive locking mode before anything touches the file: locks, once
        # taken, are kept until the connection closes, and WAL needs no shared
        # memory. So one store owns the file from the first read on.
        connection.execute("PRAGMA locking_mode = EXCLUSIVE")
        try:
            application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise StoreError(
                    f"{path} is open in another inbox (in this process or another): one "
                    "owner at a time (the Redis store shares sessions between processes)"
                ) from error
            raise
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        new = application_id == 0 and version == 0 and tables == 0
        if not new and application_id != APPLICATION_ID:
            raise StoreError(f"{path} is a SQLite file but not a harn_inbox store")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} has schema version {version}, newer than this harn_inbox reads "
                f"({SCHEMA_VERSION}): upgrade harn-inbox to open it"
            )
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{path} cannot use write-ahead logging (journal_mode={mode})")
        connection.execute("BEGIN IMMEDIATE")
        if new:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException as error:
        connection.close()
        if isinstance(error, sqlite3.Error):
            raise _store_error(path, "cannot be used", error) from error
        raise
    return connection


def _check_file(path: Path) -> None:
    """Refuse, with the reason, a file SQLite would open and then fail on or misread."""
    directory = path.parent if str(path.parent) else Path(".")
    if not path.exists():
        if not os.access(directory, os.W_OK):
            raise StoreError(f"{path} cannot be made: its directory {directory} is read-only")
        return
    if not os.access(path, os.W_OK):
        raise StoreError(f"{path} is read-only: a store writes every change to its file")
    if not os.access(directory, os.W_OK):
        raise StoreError(
            f"{path} is in a read-only directory ({directory}): the store keeps its "
            "write-ahead log beside the file"
        )
    size = path.stat().st_size
    if size == 0:
        return
    with path.open("rb") as file:
        header = file.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        raise StoreError(f"{path} is not a SQLite file (so not a harn_inbox store)")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The header's page count is valid when its change counter matches (bytes 92-95),
    # and only with no write-ahead log beside the file: a checkpoint copies the log's
    # pages in page order, header first, so a kill part way leaves a header counting
    # pages that are still only in the log. SQLite finishes that copy when it opens.
    log = Path(f"{path}-wal")
    logged = log.exists() and log.stat().st_size > 0
    counted = header[24:28] == header[92:96] and pages > 0 and not logged
    if size % page_size or (counted and size < pages * page_size):
        raise StoreError(
            f"{path} is truncated or corrupt: {size} bytes, not the "
            f"{pages * page_size if counted else 'whole pages of'} {page_size}-byte pages "
            "its header says"
        )
