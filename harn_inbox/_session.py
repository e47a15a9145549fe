"""`SessionState`: one session of a store, as plain data and the operations on it.

Everything that decides what a session holds lives here: its pending entries,
its sequence counter, its overflow accounting, its version, and the producer
controls (dedupe keys, coalesce keys, expiry). The methods are plain,
synchronous and free of I/O; the store that owns the session calls them with
its lock held, and a test can check them against
`harn_inbox.testing.InboxModel` directly, without threads.

Pending entries
---------------
Two insertion-ordered dicts keyed by sequence number, each ``None`` when empty:

- ``back``: the entries pushed, oldest first. Their keys go up with every push,
  so the oldest is found by probing upwards from ``head`` (every key of
  ``back`` is at least ``head``, in the order of pushes), never by iterating:
  a dict emptied from the front keeps its deleted slots until it is resized,
  and iteration steps over every one of them.
- ``front``: entries put back by `requeue_front` (or a failed claim), the
  newest last, since it is the session's head: ``popitem`` takes it.

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
``version`` changes on every change but three: an append, an entry a push
discards (``drop_oldest``, coalescing), and an entry that expires. So a
selective consumer that judged the entries it read at version ``v`` knows,
while ``version`` is still ``v``, that every judged entry still pending is where
it was and nothing was put ahead of them: the only news is the tail appended
since (see `read` and `take`). A cleared session's version becomes `CLEARED`:
its life is over, and the store starts a new `SessionState` for the next one.

The controls (`Extras`, made on first use)
------------------------------------------
- **Dedupe keys**: key -> the entry first pushed with it, until the window
  closes (``ts_ms + dedupe_window``). Kept in push order and dropped from the
  front once their window has closed, so they cost memory for the window only.
- **Coalesce keys**: key -> the entry last pushed with it; a push with the key
  removes that entry if it is still pending. Entries are found by identity,
  so a stale mapping (the entry was taken) costs nothing but its slot.
- **Expiry**: a heap of ``(expires_at_ms, sequence, n, entry)``. `purge`
  takes from it what is due and removes those entries still pending, those
  of one expiry in the order of their sequences (whatever the heap's past,
  so every copy of a session reports them alike, but for entries that share
  a sequence across a clear); the store purges before every operation on a
  session that has any.
- **Meta**: ``id(entry) -> (coalesce_key, expires_at_ms)`` for pending entries
  that carry either, so a removal forgets them and a claim carries them back.
"""

from __future__ import annotations

import heapq
from collections import deque
from itertools import count
from typing import TYPE_CHECKING, final

from ._entry import MAX_SEQUENCE, stamp
from ._errors import InboxFull

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._entry import Delivery, InboxEntry
    from ._json import JsonValue

#: The version of a session that was cleared: its life is over (see `Cursor.cleared`).
CLEARED = -1

#: Keys of strays in ``front`` (see the module docstring); only needs to be unique.
_stray_keys = count()

#: The last tie-breaker of the expiry heap: two entries may share an expiry and a
#: sequence (across a clear), and entries themselves have no order.
_expiry_order = count()

#: What a pending entry carries besides itself: its coalesce key and its expiry (ms), or None.
Meta = tuple["str | None", "int | None"]


@final
class PushOptions:
    """The keyword arguments of a push beyond the four fields, checked by the façade."""

    __slots__ = ("coalesce_key", "dedupe_key", "delivery", "expires_in_ms", "payload")

    def __init__(
        self,
        *,
        payload: JsonValue = None,
        delivery: Delivery | None = None,
        dedupe_key: str | None = None,
        coalesce_key: str | None = None,
        expires_in_ms: int | None = None,
    ) -> None:
        self.payload = payload
        self.delivery = delivery
        self.dedupe_key = dedupe_key
        self.coalesce_key = coalesce_key
        self.expires_in_ms = expires_in_ms


@final
class PushNote:
    """What a push returns when it did more than append its entry, or other than that."""

    __slots__ = ("coalesced", "dropped", "dropped_total", "duplicate", "entry", "total")

    def __init__(
        self,
        entry: InboxEntry,
        *,
        dropped: InboxEntry | None = None,
        dropped_total: int = 0,
        coalesced: InboxEntry | None = None,
        duplicate: bool = False,
        total: int = 0,
    ) -> None:
        #: The entry the push returns (for a duplicate: the first push's).
        self.entry = entry
        #: The entry ``drop_oldest`` discarded to make room, and the drop count after it.
        self.dropped = dropped
        self.dropped_total = dropped_total
        #: The pending entry of the same coalesce key that this push replaced.
        self.coalesced = coalesced
        #: Whether the push stored nothing: its dedupe key was seen within the window.
        self.duplicate = duplicate
        #: The session's count of duplicates (or of coalesced entries) after this push.
        self.total = total


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
class Extras:
    """A session's producer controls and counters: made by the first call that needs one."""

    __slots__ = (
        "coalesce",
        "coalesced",
        "dedupe",
        "dedupe_order",
        "duplicates",
        "expired",
        "expiry",
        "meta",
        "reserved",
        "revoked",
    )

    def __init__(self) -> None:
        #: Dedupe key -> the first entry pushed with it; its window's end in ``dedupe_order``.
        self.dedupe: dict[str, InboxEntry] = {}
        #: ``(window_end_ms, key, entry)`` in push order, to forget closed windows.
        self.dedupe_order: deque[tuple[int, str, InboxEntry]] = deque()
        #: Coalesce key -> the entry last pushed with it (maybe no longer pending).
        self.coalesce: dict[str, InboxEntry] = {}
        #: ``(expires_at_ms, sequence, n, entry)``, a heap; may hold entries gone since.
        self.expiry: list[tuple[int, int, int, InboxEntry]] = []
        #: ``id(entry) -> (coalesce_key, expires_at_ms)`` for pending entries carrying either.
        self.meta: dict[int, Meta] = {}
        self.duplicates = 0
        self.coalesced = 0
        self.expired = 0
        self.revoked = 0
        self.reserved = 0

    def totals(self) -> tuple[int, int, int, int, int]:
        """The counters as a store writes them down: duplicates, coalesced, expired, revoked,
        reserved."""
        return (self.duplicates, self.coalesced, self.expired, self.revoked, self.reserved)

    def set_totals(self, totals: Sequence[int]) -> None:
        """Set the counters from what `totals` gave (a store reading them back)."""
        (self.duplicates, self.coalesced, self.expired, self.revoked, self.reserved) = totals


class SessionState:
    """One session: pending entries, sequence counter, drop count, version, controls.

    Read and changed only under the lock of the store that owns it. A durable
    store extends it to write down each change; everything that changes the
    queue goes through `push`, `_append`, `_put_first`, `_remove`,
    `_pop_head`, `drain`, `clear` and the two dedupe-key methods, so that is
    where it looks (and `_removed`, for many removed at once).
    """

    __slots__ = ("back", "dropped", "extras", "front", "head", "last_sequence", "strays", "version")

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
        self.extras: Extras | None = None

    # -- Looking ------------------------------------------------------------------------------

    def pending_count(self) -> int:
        return len(self.back or ()) + len(self.front or ())

    def entries(self) -> list[InboxEntry]:
        """Every pending entry, oldest first (a new list)."""
        if self.front is None:
            return [] if self.back is None else list(self.back.values())
        return [*reversed(self.front.values()), *(self.back or {}).values()]

    def counters(self) -> dict[str, int]:
        """The counters `SessionStatistics` reports (all but ``waiters``)."""
        extras = self.extras or _NO_EXTRAS
        return {
            "pending": self.pending_count(),
            "last_sequence": self.last_sequence,
            "dropped": self.dropped,
            "duplicates": extras.duplicates,
            "coalesced": extras.coalesced,
            "expired": extras.expired,
            "revoked": extras.revoked,
            "reserved": extras.reserved,
        }

    def expires(self) -> bool:
        """Whether entries may expire here: the store must `purge` before looking."""
        return self.extras is not None and bool(self.extras.expiry)

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
            dropped = self._make_room(session_id, max_pending, drop_oldest)
        # _next_sequence and _append, inline: this is every push's path.
        sequence = self.last_sequence + 1
        if sequence > MAX_SEQUENCE:
            sequence = self._wrap()
        self.last_sequence = sequence
        entry = stamp(sequence, session_id, kind, content, source, ts_ms)
        back = self.back
        if back is None:
            self.back = {sequence: entry}
            self.head = sequence
        else:
            back[sequence] = entry
        if dropped is None:
            return entry
        return PushNote(entry, dropped=dropped, dropped_total=self.dropped)

    def push_with(
        self,
        session_id: str,
        kind: str,
        content: str,
        source: str,
        ts_ms: int,
        max_pending: int | None,
        drop_oldest: bool,
        options: PushOptions,
        dedupe_window_ms: int,
    ) -> InboxEntry | PushNote:
        """`push` with *options*: a payload, a delivery class, and the producer controls.

        A dedupe key seen within its window stores nothing and returns the
        first push's entry. A coalesce key removes the pending entry pushed
        with it before the new one is appended (so it never needs room).

        Raises:
            InboxFull: As for `push`; nothing changed.
        """
        extras = self._extras()
        key = options.dedupe_key
        if key is not None:
            self._forget_closed_windows(ts_ms)
            first = extras.dedupe.get(key)
            if first is not None:
                extras.duplicates += 1
                return PushNote(first, duplicate=True, total=extras.duplicates)
        coalesce_key = options.coalesce_key
        previous = None
        if coalesce_key is not None:
            previous = extras.coalesce.get(coalesce_key)
            if previous is not None and not self._is_pending(previous):
                previous = None
        # Refuse before changing anything: the entry it replaces makes room.
        full = max_pending is not None and (
            self.pending_count() - (previous is not None) >= max_pending
        )
        if full and not drop_oldest:
            raise InboxFull(session_id, self.pending_count(), max_pending)  # type: ignore[arg-type]
        if previous is not None:
            self._remove(previous)
            extras.coalesced += 1
        dropped = None
        if full:
            dropped = self._make_room(session_id, max_pending, drop_oldest)  # type: ignore[arg-type]
        sequence = self._next_sequence()
        entry = stamp(
            sequence, session_id, kind, content, source, ts_ms, options.payload, options.delivery
        )
        expires_at = None if options.expires_in_ms is None else ts_ms + options.expires_in_ms
        self._append(entry, (coalesce_key, expires_at))
        if key is not None:
            self._remember_key(key, entry, ts_ms + dedupe_window_ms)
        if dropped is None and previous is None:
            return entry
        return PushNote(
            entry,
            dropped=dropped,
            dropped_total=self.dropped,
            coalesced=previous,
            total=extras.coalesced,
        )

    def reserve_sequence(self) -> int:
        """Issue the next sequence number to nobody's entry (an injection delivered at once)."""
        self._extras().reserved += 1
        return self._next_sequence()

    def requeue_front(self, entry: InboxEntry) -> None:
        """Put *entry* first.

        Raises:
            ValueError: An equal entry is pending (nothing changed).
        """
        if self._find_equal(entry):
            raise ValueError(
                f"entry is already pending: session {entry.session_id!r} "
                f"holds an equal entry, sequence {entry.sequence}"
            )
        self._put_first(entry)
        self.version += 1

    # -- Consuming ----------------------------------------------------------------------------

    def drain(self, metas: list[Meta] | None = None) -> list[InboxEntry]:
        """Take every pending entry, oldest first (their metas into *metas*, if given)."""
        entries = self.entries()
        if entries:
            extras = self.extras
            if metas is not None:
                held = {} if extras is None else extras.meta
                metas.extend(held.get(id(entry), _NO_META) for entry in entries)
            self.back = self.front = None
            self.strays = 0
            if extras is not None:
                extras.meta = {}
                extras.coalesce = {}
                extras.expiry = []
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

    def take(
        self, cursor: Cursor, chosen: list[InboxEntry], metas: list[Meta] | None = None
    ) -> list[InboxEntry] | None:
        """Remove those of *chosen* (read at *cursor*) that are still pending, in order.

        ``None`` if the version moved since *cursor*: something judged may have
        been taken, or something put ahead of it; read again. The taken
        entries' metas go into *metas*, if given.
        """
        if not cursor.reads(self):
            return None
        back = self.back
        if back is not None and self.front is None and self.extras is None:
            # The common case, in one pass: every pending entry is in `back`
            # and carries nothing (the judged ones taken may be thousands).
            taken = [entry for entry in chosen if back.get(entry.sequence) is entry]
            for entry in taken:
                del back[entry.sequence]
            if not back:
                self.back = None
            if metas is not None:
                metas += [_NO_META] * len(taken)
            self._removed(taken)
        else:
            taken = []
            for entry in chosen:
                meta = self._remove(entry)
                if meta is not None:
                    taken.append(entry)
                    if metas is not None:
                        metas.append(meta)
        if taken:
            self.version += 1
        return taken

    def revoke(self, sequence: int) -> InboxEntry | None:
        """Remove the pending entry with *sequence* (the one nearest the head) and return it."""
        entry = self._find_sequence(sequence)
        if entry is None:
            return None
        self._remove(entry)
        self._extras().revoked += 1
        self.version += 1
        return entry

    def restore(
        self, entries: list[InboxEntry], metas: list[Meta], *, same_life: bool = True
    ) -> int:
        """Put claimed *entries* back at the head, in their order, with what they carried.

        Of entries of one coalesce key the newest stays pending (latest wins,
        counted as coalesced): an entry given back stays out if a newer one of
        its key is pending, and replaces an older one. Newer means a higher
        sequence (counted across the wrap of the counter), or any entry of
        this life when the claim was taken in an earlier one (*same_life*
        false: the session was cleared meanwhile). An entry already pending
        (put back by hand) is not put back twice. Returns how many went back.
        """
        extras = self.extras
        restored = 0
        # Judged before any goes back: two entries of the claim may be equal
        # (one requeued by hand from before a clear, one pushed since), and
        # both go back.
        pending = [self._find_equal(entry) for entry in entries]
        for entry, meta, already in zip(
            reversed(entries), reversed(metas), reversed(pending), strict=True
        ):
            coalesce_key = meta[0]
            if coalesce_key is not None and extras is not None:
                rival = extras.coalesce.get(coalesce_key)
                if rival is not None and rival is not entry and self._is_pending(rival):
                    extras.coalesced += 1
                    if not same_life or self._newer(rival, entry):
                        continue
                    self._remove(rival)
            if already:
                continue
            self._put_first(entry, meta)
            restored += 1
        self.version += 1
        return restored

    def purge(self, now_ms: int) -> list[InboxEntry]:
        """Remove the pending entries whose expiry is *now_ms* or earlier; return them."""
        extras = self.extras
        expired: list[InboxEntry] = []
        if extras is None:
            return expired
        expiry, meta = extras.expiry, extras.meta
        while expiry and expiry[0][0] <= now_ms:
            expires_at, _, _, entry = heapq.heappop(expiry)
            # The heap forgets nothing (lazily): this item is stale unless the
            # entry is pending *with this expiry*. The same entry object may be
            # pending again without one (requeued by hand after a claim took it).
            held = meta.get(id(entry))
            if held is not None and held[1] == expires_at and self._remove(entry) is not None:
                expired.append(entry)
        extras.expired += len(expired)
        return expired

    def clear(self) -> int:
        """End this life of the session; return how many entries were pending.

        The store forgets this object: the session's next life is a new one.
        """
        pending = self.pending_count()
        self.back = self.front = self.extras = None
        self.last_sequence = self.dropped = self.strays = 0
        self.version = CLEARED
        return pending

    # -- Inside -------------------------------------------------------------------------------

    def _extras(self) -> Extras:
        extras = self.extras
        if extras is None:
            extras = self.extras = Extras()
        return extras

    def _next_sequence(self) -> int:
        sequence = self.last_sequence + 1
        if sequence > MAX_SEQUENCE:
            sequence = self._wrap()
        self.last_sequence = sequence
        return sequence

    def _wrap(self) -> int:
        """The counter passed 2**64-1: it goes on at 1 (never 0). Returns 1.

        Readers compare keys of `back` (a cursor's tail is the keys above the
        last it read), so keys there must keep going up: what is pending moves
        ahead, into `front`, in order, and `back` starts over at 1. The
        version moves: readers start over.
        """
        self.version += 1
        back = self.back
        if back is not None:
            self.back = None
            self._move_ahead(list(back.values()))
        return 1

    def restack(self) -> None:
        """Make the keys of `back` go up again (entries loaded in their order across a wrap)."""
        back = self.back
        if back is None:
            return
        keys = list(back)
        descents = [index for index in range(1, len(keys)) if keys[index] < keys[index - 1]]
        if descents:
            start = descents[-1]
            self._move_ahead([back.pop(key) for key in keys[:start]])
            self.head = keys[start]

    def _move_ahead(self, entries: list[InboxEntry]) -> None:
        # *entries*, the oldest pending ones of `back` (taken out of it), in
        # order, go into `front` behind what is there. `front` is held head
        # last: they go in below it, the last of them deepest.
        front: dict[object, InboxEntry] = {}
        for entry in reversed(entries):
            front[entry.sequence] = entry
        for key, entry in (self.front or {}).items():
            if key in front:
                key = (entry.sequence, next(_stray_keys))
                self.strays += 1
            front[key] = entry
        self.front = front or None

    def _newer(self, one: InboxEntry, other: InboxEntry) -> bool:
        """Whether *one* was given its sequence after *other*, across the counter's wrap."""
        last = self.last_sequence
        return (last - one.sequence) % MAX_SEQUENCE < (last - other.sequence) % MAX_SEQUENCE

    def _append(self, entry: InboxEntry, meta: Meta = (None, None)) -> None:
        # Every appended entry but a plain push's comes here (push inlines it).
        back = self.back
        if back is None:
            self.back = {entry.sequence: entry}
            self.head = entry.sequence
        else:
            back[entry.sequence] = entry
        if meta != _NO_META:
            self._carry(entry, meta)

    def _make_room(self, session_id: str, max_pending: int, drop_oldest: bool) -> InboxEntry:
        # The session is full: refuse (changing nothing), or drop the oldest entry.
        if not drop_oldest:
            raise InboxFull(session_id, self.pending_count(), max_pending)
        dropped = self._pop_head()
        self.dropped += 1
        return dropped

    def _put_first(self, entry: InboxEntry, meta: Meta = (None, None)) -> None:
        front = self.front
        sequence = entry.sequence
        if front is None:
            self.front = {sequence: entry}
        elif sequence in front:
            front[(sequence, next(_stray_keys))] = entry
            self.strays += 1
        else:
            front[sequence] = entry
        if meta != _NO_META:
            self._carry(entry, meta)

    def _carry(self, entry: InboxEntry, meta: Meta) -> None:
        # *entry* just became pending with a coalesce key or an expiry.
        extras = self._extras()
        coalesce_key, expires_at = meta
        extras.meta[id(entry)] = meta
        if coalesce_key is not None:
            extras.coalesce[coalesce_key] = entry
        if expires_at is not None:
            item = (expires_at, entry.sequence, next(_expiry_order), entry)
            heapq.heappush(extras.expiry, item)

    def _remember_key(self, key: str, entry: InboxEntry, window_end: int) -> None:
        # A dedupe key, until *window_end* (ms on the inbox's clock).
        extras = self._extras()
        extras.dedupe[key] = entry
        extras.dedupe_order.append((window_end, key, entry))

    def _pop_head(self) -> InboxEntry:
        # The oldest pending entry, removed. The session holds one.
        front = self.front
        if front is not None:
            key, entry = front.popitem()
            if type(key) is tuple:
                self.strays -= 1
            if not front:
                self.front = None
        else:
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
        if self.extras is not None:
            self._forget_meta(entry)
        return entry

    def _remove(self, entry: InboxEntry) -> Meta | None:
        # Remove this very entry (by identity) if it is pending: return its
        # meta (`_NO_META` if it carries none), or None if it was not pending.
        sequence = entry.sequence
        back = self.back
        if back is not None and back.get(sequence) is entry:
            del back[sequence]
            if not back:
                self.back = None
        else:
            front = self.front
            if front is None:
                return None
            key: object = sequence
            if front.get(sequence) is not entry:
                if not self.strays:
                    return None
                key = next((key for key, held in front.items() if held is entry), None)
                if key is None:
                    return None
            del front[key]
            if type(key) is tuple:
                self.strays -= 1
            if not front:
                self.front = None
        if self.extras is None:
            return _NO_META
        return self._forget_meta(entry)

    def _removed(self, entries: list[InboxEntry]) -> None:
        """*entries* left `back` together, carrying nothing (`take`'s fast path)."""

    def _forget_meta(self, entry: InboxEntry) -> Meta:
        # *entry* left the queue: drop what it carried; return it.
        assert self.extras is not None
        meta = self.extras.meta.pop(id(entry), _NO_META)
        coalesce_key = meta[0]
        if coalesce_key is not None and self.extras.coalesce.get(coalesce_key) is entry:
            del self.extras.coalesce[coalesce_key]
        return meta

    def _is_pending(self, entry: InboxEntry) -> bool:
        sequence = entry.sequence
        if self.back is not None and self.back.get(sequence) is entry:
            return True
        front = self.front
        if front is None:
            return False
        if front.get(sequence) is entry:
            return True
        return bool(self.strays) and any(held is entry for held in front.values())

    def _find_equal(self, entry: InboxEntry) -> bool:
        # Whether an entry equal to *entry* is pending (O(1) but for strays).
        sequence = entry.sequence
        back, front = self.back, self.front
        return (back is not None and back.get(sequence) == entry) or (
            front is not None
            and (front.get(sequence) == entry or (bool(self.strays) and entry in front.values()))
        )

    def _with_sequence(self, sequence: int) -> list[InboxEntry]:
        # The pending entries with *sequence*, head first: more than one only
        # after a clear (an entry of an earlier life put back).
        found = []
        front = self.front
        if front is not None:
            if self.strays:
                found += [held for held in reversed(front.values()) if held.sequence == sequence]
            elif (held := front.get(sequence)) is not None:
                found.append(held)
        back = self.back
        if back is not None and (held := back.get(sequence)) is not None:
            found.append(held)
        return found

    def _find_sequence(self, sequence: int) -> InboxEntry | None:
        # The pending entry with *sequence* nearest the head.
        found = self._with_sequence(sequence)
        return found[0] if found else None

    def _forget_closed_windows(self, now_ms: int) -> None:
        # Dedupe keys in push order: forget those whose window has closed.
        extras = self.extras
        assert extras is not None
        order = extras.dedupe_order
        while order and order[0][0] <= now_ms:
            _, key, entry = order.popleft()
            if extras.dedupe.get(key) is entry:
                del extras.dedupe[key]


#: The meta of an entry that carries no coalesce key and no expiry.
_NO_META: Meta = (None, None)

#: What a session without controls reads as. Never changed: only looked at.
_NO_EXTRAS = Extras()
