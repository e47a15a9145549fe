"""`SessionState`: one session of a store, as plain data and the operations on it.

Everything that decides what a session holds lives here: its pending entries,
its sequence counter, its overflow accounting and its version. The methods are
plain, synchronous and free of I/O; the store that owns the session calls them
with its lock held, and a test can check them against
`harn_inbox.testing.InboxModel` directly, without threads.

Pending entries
---------------
Two insertion-ordered dicts keyed by sequence number, each ``None`` when empty:

- ``back``: the entries pushed, oldest first. Their keys go up with every push,
  so the oldest is found by probing upwards from ``head`` (every key of
  ``back`` is at least ``head``, in the order of pushes), never by iterating:
  a dict emptied from the front keeps its deleted slots until it is resized,
  and iteration steps over every one of them.
- ``front``: entries put back by `requeue_front`, the newest last, since it
  is the session's head: ``popitem`` takes it.

The pending order is ``reversed(front)``, then ``back``. Appending, taking the
head, requeueing, and removing or finding a given entry are O(1); only the
operations that return or judge every pending entry are O(pending).

An entry from an earlier life of the session (drained, then the session was
cleared and its counter restarted) may go back under a sequence number that
another entry in ``front`` has too. ``front`` then keys it by ``(sequence,
n)``, and ``strays`` counts such keys: while there are any, finding an entry
scans ``front``, the one case that is not O(1) (it takes two clears).

The version
-----------
``version`` changes on every change but three: an append, a ``drop_oldest``
of the head by a push, and (later) entries that a push or the clock discards.
So a selective consumer that judged the entries it read at version ``v`` knows,
while ``version`` is still ``v``, that every judged entry still pending is where
it was and nothing was put ahead of them: the only news is the tail appended
since (see `read` and `take`).
"""

from __future__ import annotations

from itertools import count
from typing import TYPE_CHECKING, final

from ._entry import MAX_SEQUENCE, stamp
from ._errors import InboxFull

if TYPE_CHECKING:
    from ._entry import InboxEntry

#: The version of a session that was cleared: its life is over (see `Cursor.cleared`).
CLEARED = -1

#: Keys of strays in ``front`` (see the module docstring); only needs to be unique.
_stray_keys = count()


@final
class PushNote:
    """What a push returns when it did more than append its entry."""

    __slots__ = ("dropped", "dropped_total", "entry")

    def __init__(self, entry: InboxEntry, dropped: InboxEntry, dropped_total: int) -> None:
        #: The entry the push returns.
        self.entry = entry
        #: The entry ``drop_oldest`` discarded to make room.
        self.dropped = dropped
        #: The session's drop count after it.
        self.dropped_total = dropped_total


@final
class Cursor:
    """Where a selective consumer's judging stands: what it read, at which version."""

    __slots__ = ("last", "session", "version")

    def __init__(self, session: SessionState, version: int, last: int) -> None:
        #: The session read (a cleared session's next life is another object).
        self.session = session
        #: Its version when the entries were read.
        self.version = version
        #: The key of the newest entry of ``back`` read; 0 for none.
        self.last = last

    def reads(self, session: SessionState) -> bool:
        """Whether *session* is still as it was read, but for appends (see "The version")."""
        return self.session is session and self.version == session.version

    def cleared(self) -> bool:
        """Whether the session read has been cleared since (its life has ended)."""
        return self.session.version == CLEARED


@final
class SessionState:
    """One session: pending entries, sequence counter, drop count and version.

    Read and changed only under the lock of the store that owns it.
    """

    __slots__ = ("back", "dropped", "front", "head", "last_sequence", "strays", "version")

    def __init__(self) -> None:
        self.back: dict[int, InboxEntry] | None = None
        self.front: dict[object, InboxEntry] | None = None
        #: No key of ``back`` is below it (valid while ``back`` is not None).
        self.head = 0
        #: The last sequence issued since the session began or was cleared; 0 if none.
        self.last_sequence = 0
        #: Entries that ``overflow="drop_oldest"`` discarded since it began or was cleared.
        self.dropped = 0
        #: How many keys of ``front`` are ``(sequence, n)`` (see the module docstring).
        self.strays = 0
        self.version = 0

    # -- Looking ------------------------------------------------------------------------------

    def pending_count(self) -> int:
        return len(self.back or ()) + len(self.front or ())

    def entries(self) -> list[InboxEntry]:
        """Every pending entry, oldest first (a new list)."""
        if self.front is None:
            return [] if self.back is None else list(self.back.values())
        return [*reversed(self.front.values()), *(self.back or {}).values()]

    def is_idle(self) -> bool:
        """Whether the session holds nothing at all: a fresh session would behave the same."""
        return (
            self.back is None
            and self.front is None
            and self.last_sequence == 0
            and self.dropped == 0
        )

    # -- Producing ----------------------------------------------------------------------------

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
        """Stamp and append an entry; return it, or a `PushNote` if the push did more.

        Raises:
            InboxFull: The session holds *max_pending* entries and *drop_oldest*
                is false. Nothing changed.
        """
        dropped = None
        if max_pending is not None and self.pending_count() >= max_pending:
            if not drop_oldest:
                raise InboxFull(session_id, self.pending_count(), max_pending)
            dropped = self._pop_head()
            self.dropped += 1
        sequence = self.last_sequence + 1
        if sequence > MAX_SEQUENCE:
            sequence = 1  # u64 wraps to 1, never 0
            self.version += 1  # keys of `back` stop going up: readers start over
        entry = stamp(sequence, session_id, kind, content, source, ts_ms)
        self.last_sequence = sequence
        back = self.back
        if back is None:
            self.back = {sequence: entry}
            self.head = sequence
        else:
            back[sequence] = entry
        if dropped is None:
            return entry
        return PushNote(entry, dropped, self.dropped)

    def requeue_front(self, entry: InboxEntry) -> None:
        """Put *entry* first.

        Raises:
            ValueError: An equal entry is pending (nothing changed).
        """
        sequence = entry.sequence
        back, front = self.back, self.front
        if (back is not None and back.get(sequence) == entry) or (
            front is not None
            and (front.get(sequence) == entry or (self.strays and entry in front.values()))
        ):
            raise ValueError(
                f"entry is already pending: session {entry.session_id!r} "
                f"holds an equal entry, sequence {sequence}"
            )
        if front is None:
            self.front = {sequence: entry}
        elif sequence in front:
            front[(sequence, next(_stray_keys))] = entry
            self.strays += 1
        else:
            front[sequence] = entry
        self.version += 1

    # -- Consuming ----------------------------------------------------------------------------

    def drain(self) -> list[InboxEntry]:
        """Take every pending entry, oldest first."""
        entries = self.entries()
        if entries:
            self.back = self.front = None
            self.strays = 0
            self.version += 1
        return entries

    def read(self, cursor: Cursor | None) -> tuple[Cursor, list[InboxEntry], bool]:
        """What a selective consumer has not judged yet, and whether it must start over.

        With no *cursor*, or one of another version: every pending entry, and
        ``True`` (verdicts carry over only by entry, see `harn_inbox._judging`).
        Else the entries appended since *cursor* was made, and ``False``.
        """
        back = self.back
        last = 0
        if back is not None:
            last = next(reversed(back))
        if cursor is None or not cursor.reads(self):
            return Cursor(self, self.version, last), self.entries(), True
        if back is None or last == cursor.last:
            return cursor, [], False
        tail = []
        for key in reversed(back):
            if key <= cursor.last:
                break
            tail.append(back[key])
        tail.reverse()
        return Cursor(self, self.version, last), tail, False

    def take(self, cursor: Cursor, chosen: list[InboxEntry]) -> list[InboxEntry] | None:
        """Remove those of *chosen* (read at *cursor*) that are still pending, in order.

        ``None`` if the version moved since *cursor*: something judged may have
        been taken, or something put ahead of it; read again.
        """
        if not cursor.reads(self):
            return None
        taken = [entry for entry in chosen if self._remove(entry)]
        if taken:
            self.version += 1
        return taken

    def clear(self) -> int:
        """End this life of the session; return how many entries were pending.

        The store forgets this object: the session's next life is a new one.
        """
        pending = self.pending_count()
        self.back = self.front = None
        self.last_sequence = self.dropped = self.strays = 0
        self.version = CLEARED
        return pending

    # -- Inside -------------------------------------------------------------------------------

    def _pop_head(self) -> InboxEntry:
        # The oldest pending entry, removed. The session holds one.
        front = self.front
        if front is not None:
            key, entry = front.popitem()
            if type(key) is tuple:
                self.strays -= 1
            if not front:
                self.front = None
            return entry
        back = self.back
        assert back is not None
        head = self.head
        while head not in back:
            head = 1 if head == MAX_SEQUENCE else head + 1
        entry = back.pop(head)
        if back:
            self.head = head
        else:
            self.back = None
        return entry

    def _remove(self, entry: InboxEntry) -> bool:
        # Remove this very entry (by identity) if it is pending; say whether it was.
        sequence = entry.sequence
        back = self.back
        if back is not None and back.get(sequence) is entry:
            del back[sequence]
            if not back:
                self.back = None
            return True
        front = self.front
        if front is None:
            return False
        key: object = sequence
        if front.get(sequence) is not entry:
            if not self.strays:
                return False
            key = next((key for key, held in front.items() if held is entry), None)
            if key is None:
                return False
        del front[key]
        if type(key) is tuple:
            self.strays -= 1
        if not front:
            self.front = None
        return True
