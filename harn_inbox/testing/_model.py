"""The reference model: `InboxModel`, the contract as plain data.

`check_bounds` checks ``max_pending``, ``overflow`` and ``dedupe_window`` for
the model and for `make_conformance_machine` alike.
"""

from __future__ import annotations

import math
from collections import Counter
from itertools import count
from typing import TYPE_CHECKING, Literal, final

import attrs

from .._arguments import check_seconds
from .._clock import SystemClock
from .._entry import MAX_SEQUENCE, InboxEntry
from .._errors import InboxClosed, InboxFull
from .._statistics import SessionStatistics

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._clock import Clock
    from .._entry import Delivery

Overflow = Literal["reject", "drop_oldest"]


def check_bounds(max_pending: object, overflow: object, dedupe_window: object = 600) -> None:
    if max_pending is not None and (
        not isinstance(max_pending, int) or isinstance(max_pending, bool) or max_pending < 1
    ):
        raise ValueError(f"max_pending must be an int of at least 1 or None, not {max_pending!r}")
    if overflow not in ("reject", "drop_oldest"):
        raise ValueError(f"overflow must be 'reject' or 'drop_oldest', not {overflow!r}")
    if math.isinf(check_seconds("dedupe_window", dedupe_window)):
        raise ValueError(f"dedupe_window must be finite, not {dedupe_window!r}")


def _milliseconds(seconds: float) -> int:
    """Seconds on the clock as whole milliseconds, rounded up (as the inbox counts them)."""
    return math.ceil(seconds * 1000)


@final
@attrs.define(eq=False)
class Held:
    """A pending entry and what it carries: its coalesce key, when it expires, when it came.

    An entry put back by `InboxModel.requeue_front` carries nothing: the entry
    alone says neither. A claim gives back what its entries carried.
    """

    entry: InboxEntry
    #: The model's count of pushes when it was pushed: of two entries, the later is newer.
    pushed: int
    coalesce_key: str | None = None
    expires_at_ms: int | None = None


@final
@attrs.frozen(eq=False)
class Claimed:
    """The entries a claim took, with what they carried, until it ends (see `InboxModel.claim`)."""

    session_id: str
    held: list[Held]

    @property
    def entries(self) -> list[InboxEntry]:
        return [held.entry for held in self.held]


@attrs.define(eq=False)
class _Session:
    """One session's life, from its first use to its `InboxModel.clear_session`."""

    pending: list[Held] = attrs.Factory(list)
    last_sequence: int = 0
    #: Dedupe key -> the entry first pushed with it, and when its window closes (ms).
    dedupe: dict[str, tuple[InboxEntry, int]] = attrs.Factory(dict)
    #: How often each counted event happened: "dropped", "duplicates", "coalesced", ...
    events: Counter[str] = attrs.Factory(Counter)

    def next_sequence(self) -> int:
        self.last_sequence = 1 if self.last_sequence == MAX_SEQUENCE else self.last_sequence + 1
        return self.last_sequence

    def entries(self) -> list[InboxEntry]:
        return [held.entry for held in self.pending]


@final
@attrs.define(eq=False)
class InboxModel:
    """The inbox contract as plain data: a list per session and a few counters.

    It has `Inbox`'s queue operations with the same arguments, results and
    errors, but no waiting and no locking: one thread, no surprises. It is
    what the conformance machine compares an inbox with, and a readable
    statement of the contract:

    - each session is a FIFO; only sessions with entries pending are listed;
    - a session's sequence starts at 1 and goes up by exactly one per
      accepted push or `reserve_sequence` (wrapping from 2**64-1 to 1),
      across drains, until `clear_session` restarts it; pending entries skip
      the reserved numbers;
    - ``ts_ms`` is the clock's ``now_ms()`` at the push; ``payload`` and
      ``delivery`` are kept as pushed;
    - with ``max_pending``, a push to a full session either raises `InboxFull`
      and stores nothing (``"reject"``) or discards the session's single
      oldest entry and counts it in `dropped` (``"drop_oldest"``);
      `requeue_front` and a failed claim may go beyond the bound;
    - a push whose ``dedupe_key`` was pushed to the session less than
      ``dedupe_window`` seconds earlier stores nothing and returns the first
      push's entry, pending or not (a duplicate); `clear_session` forgets the
      keys;
    - a push with a ``coalesce_key`` removes the session's pending entry
      pushed with that key (counted as coalesced) and appends the new one: it
      never needs room of its own; of the entries pushed with one key, at most
      one is pending, the newest;
    - an entry pushed with ``expires_in`` is gone once the clock reads
      ``ts_ms + ceil(expires_in * 1000)`` or later: no operation returns it,
      and it is counted as expired (if it was pending when that time came);
    - a claim takes entries; a failed one gives them back (see `release`);
    - after `close`, pushes and `reserve_sequence` raise `InboxClosed`;
      everything else still works.

    Every operation first removes what has expired by now.

    Args:
        clock: Where ``ts_ms`` and expiry come from (only ``now_ms()`` is used).
        max_pending: The bound per session, or ``None`` for none.
        overflow: ``"reject"`` or ``"drop_oldest"``, as for `Inbox`.
        dedupe_window: Seconds a dedupe key holds, as for `Inbox`.

    Raises:
        ValueError: ``max_pending`` is below 1, ``overflow`` is not one of the
            two names, or ``dedupe_window`` is negative, NaN or infinite.
    """

    clock: Clock = attrs.field(factory=SystemClock, kw_only=True)
    max_pending: int | None = attrs.field(default=None, kw_only=True)
    overflow: Overflow = attrs.field(default="reject", kw_only=True)
    dedupe_window: float = attrs.field(default=600, kw_only=True)
    _sessions: dict[str, _Session] = attrs.field(init=False, factory=dict)
    _pushes: count[int] = attrs.field(init=False, factory=count)
    _closed: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        check_bounds(self.max_pending, self.overflow, self.dedupe_window)

    # -- Producing

    def push(
        self,
        session_id: str,
        kind: str,
        content: str,
        source: str,
        *,
        payload: object = None,
        delivery: Delivery | str | None = None,
        dedupe_key: str | None = None,
        coalesce_key: str | None = None,
        expires_in: float | None = None,
    ) -> InboxEntry:
        """Append an entry stamped with the next sequence and the clock's time; return it.

        A duplicate (see the class docstring) returns the first push's entry instead.
        """
        if self._closed:
            raise InboxClosed(f"push to session {session_id!r} after the inbox was closed")
        session = self._session(session_id)
        now = self.clock.now_ms()
        if dedupe_key is not None and dedupe_key in session.dedupe:
            session.events["duplicates"] += 1
            return session.dedupe[dedupe_key][0]
        replaced = [
            held
            for held in session.pending
            if coalesce_key is not None and held.coalesce_key == coalesce_key
        ]
        full = self.max_pending is not None and (
            len(session.pending) - len(replaced) >= self.max_pending
        )
        if full and self.overflow == "reject":
            raise InboxFull(session_id, len(session.pending), self.max_pending)  # type: ignore[arg-type]
        for held in replaced:
            session.pending.remove(held)
            session.events["coalesced"] += 1
        if full:
            del session.pending[0]
            session.events["dropped"] += 1
        sequence = session.next_sequence()
        entry = InboxEntry(sequence, session_id, kind, content, source, now, payload, delivery)
        expires_at_ms = None
        if expires_in is not None and not math.isinf(expires_in):
            expires_at_ms = now + _milliseconds(expires_in)
        session.pending.append(Held(entry, next(self._pushes), coalesce_key, expires_at_ms))
        if dedupe_key is not None:
            session.dedupe[dedupe_key] = (entry, now + _milliseconds(self.dedupe_window))
        return entry

    def reserve_sequence(self, session_id: str) -> int:
        """Issue the session's next sequence number to no entry."""
        if self._closed:
            raise InboxClosed(f"reserve_sequence for {session_id!r} after the inbox was closed")
        session = self._session(session_id)
        session.events["reserved"] += 1
        return session.next_sequence()

    def requeue_front(self, entry: InboxEntry) -> None:
        """Put *entry* first in its session; `ValueError` if an equal entry is already pending."""
        session = self._session(entry.session_id)
        if entry in session.entries():
            raise ValueError(
                f"entry is already pending: session {entry.session_id!r} "
                f"holds an equal entry, sequence {entry.sequence}"
            )
        session.pending.insert(0, Held(entry, next(self._pushes)))

    # -- Consuming

    def drain(self, session_id: str) -> list[InboxEntry]:
        """Take everything pending in *session_id*, oldest first."""
        return self.claim(session_id).entries

    def drain_where(
        self, session_id: str, predicate: Callable[[InboxEntry], object]
    ) -> list[InboxEntry]:
        """Take the entries *predicate* holds true for, in order; keep the rest, in order.

        *predicate* is called once per pending entry, before anything changes,
        so if it raises, the exception propagates and nothing has changed.
        """
        return self.take_matching(session_id, predicate)

    def take_matching(
        self,
        session_id: str,
        predicate: Callable[[InboxEntry], object],
        limit: int | None = None,
    ) -> list[InboxEntry]:
        """What `drain_where` takes, or ``wait_for`` with *limit*: the first *limit* matches."""
        return self.claim(session_id, predicate, limit).entries

    def revoke(self, session_id: str, sequence: int) -> InboxEntry | None:
        """Remove the pending entry with *sequence* nearest the head and return it, or None."""
        session = self._session(session_id)
        for held in session.pending:
            if held.entry.sequence == sequence:
                session.pending.remove(held)
                session.events["revoked"] += 1
                return held.entry
        return None

    def claim(
        self,
        session_id: str,
        predicate: Callable[[InboxEntry], object] | None = None,
        limit: int | None = None,
    ) -> Claimed:
        """Take the pending entries (those *predicate* holds true for, the first *limit*).

        They are gone unless the claim is given back with `release`.
        """
        session = self._session(session_id)
        verdicts = [predicate is None or bool(predicate(held.entry)) for held in session.pending]
        taken = [held for held, verdict in zip(session.pending, verdicts, strict=True) if verdict][
            :limit
        ]
        session.pending = [held for held in session.pending if held not in taken]
        return Claimed(session_id, taken)

    def release(self, claimed: Claimed) -> int:
        """The claim's block raised: put its entries back first, in order; return how many.

        Each goes back with its coalesce key and expiry, unless it is pending
        already (requeued by hand: not twice). Of entries of one coalesce key
        the newest stays pending: an entry given back stays out if a newer one
        of its key is pending, and replaces an older one (either way counted
        as coalesced).
        """
        session = self._session(claimed.session_id)
        already = session.entries()
        back = []
        for held in claimed.held:
            rival = next(
                (
                    other
                    for other in session.pending
                    if held.coalesce_key is not None and other.coalesce_key == held.coalesce_key
                ),
                None,
            )
            if rival is not None:
                session.events["coalesced"] += 1
                if rival.pushed > held.pushed:
                    continue
                session.pending.remove(rival)
            if held.entry not in already:
                back.append(held)
        session.pending[:0] = back
        return len(back)

    def clear_session(self, session_id: str) -> int:
        """End the session's life (entries, sequence, keys, counters); return its pending count."""
        session = self._session(session_id)
        del self._sessions[session_id]
        return len(session.pending)

    # -- Looking

    def pending_count(self, session_id: str) -> int:
        """How many entries *session_id* has pending."""
        return len(self._session(session_id).pending)

    def snapshot(self, session_id: str) -> list[InboxEntry]:
        """A copy of *session_id*'s pending entries, oldest first."""
        return self._session(session_id).entries()

    def sessions(self) -> list[str]:
        """The sessions with at least one entry pending."""
        return [session_id for session_id in list(self._sessions) if self.pending_count(session_id)]

    def dropped(self, session_id: str) -> int:
        """How many entries ``"drop_oldest"`` discarded from *session_id* since it was cleared."""
        return self._session(session_id).events["dropped"]

    def statistics(self, session_id: str) -> SessionStatistics:
        """The session's counters since it was last cleared, with ``waiters=0``."""
        session = self._session(session_id)
        events = session.events
        return SessionStatistics(
            session_id=session_id,
            pending=len(session.pending),
            waiters=0,
            last_sequence=session.last_sequence,
            dropped=events["dropped"],
            duplicates=events["duplicates"],
            coalesced=events["coalesced"],
            expired=events["expired"],
            revoked=events["revoked"],
            reserved=events["reserved"],
        )

    def deadlines_ms(self) -> list[int]:
        """When the clock alone changes something from now on: expiries, dedupe windows' ends."""
        now = self.clock.now_ms()
        moments = {
            moment
            for session in self._sessions.values()
            for moment in (
                *(held.expires_at_ms for held in session.pending),
                *(end for _, end in session.dedupe.values()),
            )
            if moment is not None and moment > now
        }
        return sorted(moments)

    # -- Shutting down

    def close(self) -> None:
        """Refuse pushes from now on."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def _session(self, session_id: str) -> _Session:
        """The session's current life, once what has expired by now is gone and counted."""
        session = self._sessions.setdefault(session_id, _Session())
        now = self.clock.now_ms()
        expired = [
            held
            for held in session.pending
            if held.expires_at_ms is not None and now >= held.expires_at_ms
        ]
        for held in expired:
            session.pending.remove(held)
        session.events["expired"] += len(expired)
        session.dedupe = {key: first for key, first in session.dedupe.items() if now < first[1]}
        return session
