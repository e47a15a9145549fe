"""`Inbox`: the public façade over a store (the sessions) and a parking lot (the waits).

Theory of operation
-------------------
Three parts, each in its own module:

- The **store** (``harn_inbox.stores``) keeps the sessions: pending entries,
  sequence counters, overflow and drop accounting, each session's version.
  Each of its methods is atomic. `MemoryStore`, the default, keeps every
  session as a plain `harn_inbox._session.SessionState` under one lock.
- The **parking lot** (``_lot.py``) keeps the wait calls in progress and the
  protocol they follow: a waiter is armed before it looks, so a change its
  look misses notifies it. Wakes are made outside every lock.
- The **waiters** (``_waiters.py``) are how a thread, a trio task and an
  asyncio task sleep and wake.

The façade checks arguments (so bad input changes nothing), reads the clock
outside every lock, calls the store, tells the lot what changed (a push or a
requeue notifies the session; a clear ends its waits; `close` ends them all),
and reports to the telemetry. It holds no lock of its own.

What runs where: only the store's and the lot's short critical sections are
under a lock, and they call no user code (ids and entry fields are plain
copies, see ``check_text``). A clock's ``now_ms()``, a predicate and its
``__bool__``, a logger: all run in the caller's thread with no lock held.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from functools import partial
from time import time_ns as _time_ns
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, final

import attrs
import sniffio
import trio

from ._arguments import check_int, check_seconds, check_text, check_timeout, type_error
from ._batches import Batches, BatchesRegistry
from ._claim import Claim
from ._clock import Clock, SystemClock
from ._entry import (
    MAX_SEQUENCE,
    Delivery,
    InboxEntry,
    check_delivery,
    has_plain_fields,
    rebuilt,
)
from ._errors import InboxFull
from ._json import freeze
from ._judging import Judge, Predicate, check_predicate
from ._lot import Look, ParkingLot, fallback_logger
from ._offloop import off_loop
from ._session import PushOptions
from ._telemetry import Telemetry
from ._waiters import AsyncioWaiter, ThreadWaiter, TrioWaiter
from .stores import MemoryStore
from .stores._protocol import ClaimRecord, StoreSettings

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from structlog.typing import FilteringBoundLogger

    from ._statistics import SessionStatistics
    from .stores._protocol import NetworkStore, Store

_OVERFLOWS = ("reject", "drop_oldest")
T = TypeVar("T")


@final
class Inbox:
    """The inboxes of all sessions of one agent runtime.

    Make one per runtime and pass it to whatever pushes or waits; instances
    share nothing. Every method may be called from any thread, with or
    without an event loop running in it; the async ones work under trio and
    asyncio alike, detecting which is running.

    Args:
        store: Where the sessions live. A new `harn_inbox.stores.MemoryStore`
            by default. A store serves one inbox.
        clock: Where stamps and timeouts come from. `SystemClock` by default;
            `ManualClock` for tests; any `Clock`.
        logger: A structlog logger that receives one event per operation
            (``inbox.push``, ``inbox.drain``, ...). With none, the inbox logs
            nothing and pays next to nothing for telemetry.
        max_pending: Bound each session to this many pending entries. ``None``
            (the default) means unbounded.
        overflow: What a push to a full session does: ``"reject"`` raises
            `InboxFull` and stores nothing; ``"drop_oldest"`` discards the
            session's oldest entry to make room and counts it in `dropped`.
        dedupe_window: Seconds (on the inbox's clock) for which a push's
            ``dedupe_key`` makes a later push with the same key a duplicate.

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: ``max_pending`` is below 1, ``overflow`` is not one of the
            two names, ``dedupe_window`` is negative, NaN or infinite, or
            *store* serves another inbox already.
    """

    __slots__ = (
        "__weakref__",
        "_batches",
        "_clock",
        "_lot",
        "_lot_mutex",
        "_network",
        "_network_store",
        "_now_ms",
        "_parked",
        "_store",
        "_telemetry",
    )

    def __init__(
        self,
        *,
        store: Store | None = None,
        clock: Clock | None = None,
        logger: FilteringBoundLogger | None = None,
        max_pending: int | None = None,
        overflow: Literal["reject", "drop_oldest"] = "reject",
        dedupe_window: float = 600,
    ) -> None:
        if clock is None:
            clock = SystemClock()
        elif isinstance(clock, type) or not (
            callable(getattr(clock, "now_ms", None))
            and callable(getattr(clock, "call_later", None))
        ):
            type_error("clock", "a Clock instance (with now_ms() and call_later())", clock)
        if logger is not None and not all(
            callable(getattr(logger, level, None)) for level in ("debug", "info", "warning")
        ):
            type_error(
                "logger", "a structlog logger (with debug(), info(), warning()) or None", logger
            )
        if max_pending is not None and (max_pending := check_int("max_pending", max_pending)) < 1:
            raise ValueError(f"max_pending must be at least 1 or None, not {max_pending!r}")
        overflow_name = check_text("overflow", overflow)
        if overflow_name not in _OVERFLOWS:
            raise ValueError(f"overflow must be 'reject' or 'drop_oldest', not {overflow!r}")
        window = check_seconds("dedupe_window", dedupe_window)
        if math.isinf(window):
            raise ValueError(f"dedupe_window must be finite, not {dedupe_window!r}")
        if store is None:
            store = MemoryStore()
        elif isinstance(store, type) or not callable(getattr(store, "attach", None)):
            type_error("store", "a store instance (from harn_inbox.stores)", store)
        lot = ParkingLot()
        self._lot = lot
        self._lot_mutex = lot.mutex
        #: The sessions with parked waits: a push looks here, lock-free (see _lot.py).
        self._parked = lot.parked
        self._clock = clock
        #: None for the SystemClock, read inline: the push path.
        self._now_ms = None if type(clock) is SystemClock else clock.now_ms
        self._telemetry = None if logger is None else Telemetry(logger)
        self._batches = BatchesRegistry()
        self._store = store  # before attach: its settings' bound methods show this inbox
        #: The store's looks go over the network: async calls run them off the loop.
        self._network = bool(getattr(store, "network", False))
        if self._network and not (
            callable(getattr(store, "has_pending_here", None))
            and callable(getattr(store, "read_here", None))
        ):
            raise TypeError(
                f"store {store!r} says network = True but lacks has_pending_here and "
                "read_here (see harn_inbox.stores._protocol.NetworkStore)"
            )
        #: The same store, as one whose waits may look "here" first (only if `_network`).
        self._network_store = cast("NetworkStore", store)
        store.attach(
            StoreSettings(
                max_pending=max_pending,
                drop_oldest=overflow_name == "drop_oldest",
                notify=lot.notify,
                notify_all=lot.notify_all,
                cleared=lot.end_session,
                waiter_count=lot.waiter_count,
                dedupe_window_ms=_milliseconds(window),
                now_ms=self._read_clock,
                expired=self._expired,
                emit=None if self._telemetry is None else self._telemetry.emit_fields,
            )
        )

    def __repr__(self) -> str:
        state = "closed" if self._lot.closed else "open"
        return f"<Inbox {state} store={self._store!r} lot={self._lot!r}>"

    # -- Producing ----------------------------------------------------------------------------

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
        """Append a nudge to *session_id*'s inbox and wake that session's waiters.

        Any thread, never blocks. The entry gets the session's next sequence
        number and ``ts_ms`` from the inbox's clock. ``""`` is a valid session.

        Args:
            payload: Structured data for the entry, a JSON value; the entry
                keeps a read-only copy (see `InboxEntry`).
            delivery: When the loop is meant to see it: a `Delivery`, or its name.
            dedupe_key: If a push with this key reached this session within the
                inbox's ``dedupe_window``, store nothing and return that push's
                entry (pending or not): a retried producer pushes once.
            coalesce_key: Latest wins: the pending entry of this session pushed
                with the same key is removed, and this one appended (with the
                next sequence number). It never needs room of its own.
            expires_in: Seconds (on the inbox's clock) after which the entry, if
                still pending, is dropped: no drain, wait or snapshot returns it.
                It is counted (``statistics().expired``) and logged.

        Returns:
            The stamped entry, as a later drain will return it (for a
            duplicate: the first push's entry).

        Raises:
            TypeError, ValueError: An argument is invalid; the message names
                it (for a payload, the path to the part that is not JSON).
                Nothing is stored.
            InboxClosed: The inbox is closed (nothing is stored).
            InboxFull: The session is full and ``overflow="reject"`` (nothing is stored).
        """
        if not (str is type(session_id) is type(kind) is type(content) is type(source)):
            session_id = check_text("session_id", session_id)
            kind = check_text("kind", kind)
            content = check_text("content", content)
            source = check_text("source", source)
        if self._lot_mutex.busy:  # a finalizer inside the lot's lock must not store, then fail
            self._lot_mutex.refuse_reentry()
        plain = (
            payload is None
            and delivery is None
            and dedupe_key is None
            and coalesce_key is None
            and expires_in is None
        )
        if not plain:
            options = _push_options(payload, delivery, dedupe_key, coalesce_key, expires_in)
        ts_ms = _time_ns() // 1_000_000 if self._now_ms is None else self._read_clock()
        try:
            if plain:
                pushed = self._store.push(session_id, kind, content, source, ts_ms)
            else:
                pushed = self._store.push_with(session_id, kind, content, source, ts_ms, options)
        except InboxFull as full:
            if self._telemetry is not None:
                self._telemetry.emit(
                    "warning",
                    "inbox.push",
                    session_id=session_id,
                    kind=kind,
                    source=source,
                    outcome="rejected",
                    max_pending=full.max_pending,
                )
            raise
        if type(pushed) is InboxEntry:
            entry = pushed
        else:
            entry = pushed.entry
            if pushed.duplicate:  # nothing was stored: nobody to wake
                if self._telemetry is not None:
                    self._telemetry.pushed(session_id, kind, source, pushed)
                return entry
        if session_id in self._parked:
            self._lot.notify(session_id)
        if self._telemetry is not None:
            self._telemetry.pushed(session_id, kind, source, pushed)
        return entry

    def reserve_sequence(self, session_id: str) -> int:
        """Take *session_id*'s next sequence number for an entry that is not queued.

        For an injection delivered at once, outside the inbox, that must stay
        ordered with the queued ones: it gets a number as a push would, and
        the next push gets the one after. Sequences issued stay gapless;
        pending entries skip the reserved numbers. Any thread, never blocks.

        Raises:
            TypeError: *session_id* is not a ``str``.
            InboxClosed: The inbox is closed.
        """
        session_id = check_text("session_id", session_id)
        sequence = self._store.reserve_sequence(session_id)
        if self._telemetry is not None:
            self._telemetry.emit(
                "debug",
                "inbox.reserve_sequence",
                session_id=session_id,
                sequence=sequence,
                reserved_total=self._store.statistics(session_id).reserved,
            )
        return sequence

    def _read_clock(self) -> int:
        # The clock, read and checked: what is not a stamp is refused.
        if self._now_ms is None:
            return _time_ns() // 1_000_000
        ts_ms = self._now_ms()
        if type(ts_ms) is not int:
            raise TypeError(f"clock.now_ms() must return int, not {ts_ms!r}")
        if ts_ms < 0:
            raise ValueError(f"clock.now_ms() must not be negative, not {ts_ms!r}")
        return ts_ms

    def requeue_front(self, entry: InboxEntry) -> None:
        """Put a drained entry back at the head of its session, unchanged; wake its waiters.

        For a consumer that took an entry and could not handle it yet. The
        entry keeps its sequence number; the session's counter is not touched.
        Allowed after `close` and beyond ``max_pending``: the entry was
        accepted once and is not lost now. An entry drained before a
        `clear_session` goes back too, as the entry it was: its sequence
        belongs to the session's earlier life and may equal one that the
        restarted counter issues (or has issued: both are then pending).

        Raises:
            TypeError: *entry* is not an `InboxEntry`, or holds a field of
                another type (only if built with attrs' validators off).
            ValueError: An equal entry (every field alike) is already pending
                in that session: requeueing it would deliver it twice. (Two
                distinct entries are equal only across a `clear_session`, on
                a clock that did not move in between: the second is refused.)
                Or a field is out of range (only if built with attrs'
                validators off).
        """
        entry = _checked_entry(entry)
        self._lot_mutex.refuse_reentry()
        self._store.requeue_front(entry)
        self._lot.notify(entry.session_id)
        if self._telemetry is not None:
            self._telemetry.emit(
                "debug",
                "inbox.requeue_front",
                session_id=entry.session_id,
                kind=entry.kind,
                source=entry.source,
                sequence=entry.sequence,
            )

    # -- Consuming ----------------------------------------------------------------------------

    def drain(self, session_id: str) -> list[InboxEntry]:
        """Take everything pending in *session_id*, oldest first, leaving it empty.

        Any thread, never blocks. An unknown session gives ``[]``. The
        sequence counter carries on: the next push gets the next number.

        Raises:
            TypeError: *session_id* is not a ``str``.
        """
        session_id = check_text("session_id", session_id)
        entries = self._store.drain(session_id)
        if self._telemetry is not None:
            self._telemetry.emit("debug", "inbox.drain", session_id=session_id, count=len(entries))
        return entries

    def drain_where(self, session_id: str, predicate: Predicate) -> list[InboxEntry]:
        """Take the entries of *session_id* for which *predicate* is true, in order.

        The others stay queued, in their order. Any thread, never blocks.

        The predicate runs in the calling thread without any lock held, so it
        may be slow or call the inbox without stalling anyone. It should be a
        plain, pure function of the entry: it is called at most once per entry
        that stays pending, whatever arrives, is taken or is requeued around
        it meanwhile (entries are immutable, so a verdict holds). The call
        takes what it judged: entries pushed while the predicate runs are
        later than the call, and an entry that a push discards meanwhile
        (``drop_oldest``) is not taken. An entry that another consumer takes
        and then requeues may be judged again.

        Raises:
            TypeError: *session_id* is not a ``str``, *predicate* is not
                callable or is an ``async def`` function, or it returned an
                awaitable (nothing is taken).
            Exception: Whatever *predicate* raises propagates, and the inbox is
                exactly as if the call had not happened.
        """
        session_id = check_text("session_id", session_id)
        predicate = check_predicate(predicate)
        taken = Judge(self._store, session_id, predicate, self._store.take).look()
        if not isinstance(taken, list):
            taken = []
        if self._telemetry is not None:
            self._telemetry.emit(
                "debug", "inbox.drain_where", session_id=session_id, taken=len(taken)
            )
        return taken

    def clear_session(self, session_id: str) -> int:
        """Forget *session_id*: drop its entries and restart its sequence at 1.

        Waiters parked on it wake and report that nothing is pending, and its
        `batches` channels end. Any thread, never blocks.

        Returns:
            How many pending entries were dropped.

        Raises:
            TypeError: *session_id* is not a ``str``.
        """
        session_id = check_text("session_id", session_id)
        self._lot_mutex.refuse_reentry()
        dropped = self._store.clear(session_id)
        self._batches.end_session(session_id)
        self._lot.end_session(session_id)
        if self._telemetry is not None:
            self._telemetry.emit(
                "info", "inbox.clear_session", session_id=session_id, dropped=dropped
            )
        return dropped

    def revoke(self, session_id: str, sequence: int) -> InboxEntry | None:
        """Remove *session_id*'s pending entry with *sequence* and return it.

        ``None`` if no such entry is pending (taken already, expired, never
        pushed). Any thread, never blocks; wakes nobody.

        Raises:
            TypeError: *session_id* is not a ``str`` or *sequence* not an ``int``.
            ValueError: *sequence* is outside 1 .. 2**64-1.
        """
        session_id = check_text("session_id", session_id)
        sequence = check_int("sequence", sequence)
        if not 1 <= sequence <= MAX_SEQUENCE:
            raise ValueError(f"sequence must be between 1 and 2**64-1, not {sequence!r}")
        entry = self._store.revoke(session_id, sequence)
        if self._telemetry is not None:
            self._telemetry.emit(
                "info",
                "inbox.revoke",
                session_id=session_id,
                sequence=sequence,
                revoked=entry is not None,
                revoked_total=self._store.statistics(session_id).revoked,
            )
        return entry

    def claim(self, session_id: str, predicate: Predicate | None = None) -> Claim:
        """Hold *session_id*'s entries for a block: ``with inbox.claim(sid) as entries:``.

        Entering takes the pending entries (all, or those *predicate* accepts,
        judged as in `drain_where`). If the block raises, they go back to the
        head of the session in their order, with all they carried (coalesce
        key, expiry), and its waiters wake; if it ends normally, they are
        gone: at-least-once, where `drain` is at-most-once. ``async with``
        works too, under trio and asyncio; a cancellation before the entries
        are taken takes nothing, and one in the block gives them back. With a
        network store (`RedisStore`), ``async with`` takes, settles and
        releases off the event loop; a cancellation while it takes gives back
        whatever it took.

        Raises:
            TypeError: *session_id* is not a ``str``, or *predicate* is not a
                plain callable (raised here, before anything is taken).
        """
        session_id = check_text("session_id", session_id)
        if predicate is not None:
            predicate = check_predicate(predicate)
        return Claim(
            session_id,
            partial(self._take_claim, session_id, predicate),
            self._settle_claim,
            self._release_claim,
            network=self._network,
        )

    # -- Looking ------------------------------------------------------------------------------

    def pending_count(self, session_id: str) -> int:
        """How many entries *session_id* has pending. Any thread, never blocks."""
        return self._store.pending_count(check_text("session_id", session_id))

    def snapshot(self, session_id: str) -> list[InboxEntry]:
        """A copy of what *session_id* has pending, oldest first; changes nothing."""
        return self._store.snapshot(check_text("session_id", session_id))

    def sessions(self) -> list[str]:
        """The sessions that have at least one pending entry, in no promised order.

        Costs what those sessions number, not what every session ever seen does.
        """
        return self._store.sessions()

    def waiter_count(self, session_id: str) -> int:
        """How many wait calls (sync and async) are in progress on *session_id*.

        A wait counts from its first park until it returns, is cancelled, or
        times out, including while it is woken and about to look again. Zero
        after every wait ended.
        """
        return self._lot.waiter_count(check_text("session_id", session_id))

    def dropped(self, session_id: str) -> int:
        """How many entries ``overflow="drop_oldest"`` discarded from *session_id*.

        Counted since the session was last cleared.
        """
        return self._store.statistics(check_text("session_id", session_id)).dropped

    def statistics(self, session_id: str) -> SessionStatistics:
        """*session_id* at one instant, as a frozen `SessionStatistics` record.

        Any thread, never blocks. An unknown session gives zeros.

        Raises:
            TypeError: *session_id* is not a ``str``.
        """
        session_id = check_text("session_id", session_id)
        counts = self._store.statistics(session_id)
        waiters = self._lot.waiter_count(session_id)
        return counts if not waiters else _with_waiters(counts, waiters)

    @property
    def closed(self) -> bool:
        """Whether `close` has been called."""
        return self._lot.closed

    # -- Waiting ------------------------------------------------------------------------------

    def wait_sync(self, session_id: str, timeout: float | None = None) -> bool:
        """Block the calling thread until *session_id* has something pending.

        For worker threads (a thread of ``trio.to_thread.run_sync``, a plain
        ``threading.Thread``). Only a push (or requeue) to this session wakes it.

        Args:
            timeout: Seconds to wait at most (on the inbox's clock); ``None``
                waits without limit; ``0`` just looks.

        Returns:
            ``True`` at once if something is pending, or as soon as something
            is pushed; ``False`` if the timeout passed, the session was
            cleared, or the inbox is closed with nothing pending.

        Raises:
            TypeError, ValueError: *session_id* or *timeout* is invalid.
            RuntimeError: Called with a timeout other than 0 from a thread that
                is running a trio or asyncio loop (it would block the very loop
                that must deliver the push): ``await inbox.wait(...)`` instead.
        """
        session_id = check_text("session_id", session_id)
        timeout = check_timeout(timeout)
        _refuse_blocking_a_loop(timeout, "wait_sync", "wait")
        waiter = ThreadWaiter((session_id,), self._lot)
        started = self._started()
        result = waiter.run(
            partial(self._look_pending, session_id),
            timeout,
            self._clock,
            self._here(self._look_pending_here, session_id),
        )
        found = result is True
        self._log_wait("inbox.wait", waiter, found, started, timeout)
        return found

    async def wait(self, session_id: str, timeout: float | None = None) -> bool:
        """Wait until *session_id* has something pending. Works under trio and asyncio.

        Only a push (or requeue) to this session wakes it, from whatever thread
        it comes. Takes nothing: pair it with `drain` (or use `wait_for` /
        `batches`).

        Args:
            timeout: Seconds to wait at most (on the inbox's clock); ``None``
                waits without limit; ``0`` just looks.

        Returns:
            ``True`` at once if something is pending, or as soon as something
            is pushed; ``False`` if the timeout passed, the session was
            cleared, or the inbox is closed with nothing pending.

        Raises:
            TypeError, ValueError: *session_id* or *timeout* is invalid.
            trio.Cancelled, asyncio.CancelledError: The wait was cancelled; it
                leaves no waiter registered.
        """
        session_id = check_text("session_id", session_id)
        timeout = check_timeout(timeout)
        waiter = self._async_waiter((session_id,))
        started = self._started()
        result = await waiter.run(
            partial(self._look_pending, session_id),
            timeout,
            self._clock,
            self._here(self._look_pending_here, session_id),
        )
        found = result is True
        self._log_wait("inbox.wait", waiter, found, started, timeout)
        return found

    async def wait_for(
        self,
        session_id: str,
        predicate: Predicate,
        timeout: float | None = None,
        *,
        limit: int | None = None,
    ) -> list[InboxEntry]:
        """Wait until entries of *session_id* match *predicate*, then take them.

        Selective receive: takes the matching entries as `drain_where` does and
        leaves the rest queued, in order. Replaces the racy "drain, look for my
        handle, requeue the rest". The predicate runs in the waiting task,
        without any lock, as in `drain_where`: once per entry that stays
        pending, whatever arrives or is requeued meanwhile. Between rounds of
        judging it lets the event loop run others, so a steady producer holds
        up neither the loop nor the timeout.

        With *limit*, it takes at most that many (the oldest) and leaves the
        other matches queued: ``[result] = await inbox.wait_for(sid, pred,
        limit=1)`` never takes a second match it would have to put back.

        Returns:
            The matching entries, in order, once there is at least one; ``[]``
            if the timeout passed, the session was cleared, or the inbox is
            closed with nothing matching.

        Raises:
            TypeError, ValueError: An argument is invalid (an ``async def``
                predicate, or one that returns an awaitable, among them).
            trio.Cancelled, asyncio.CancelledError: The wait was cancelled. A
                cancelled or timed-out wait_for has taken nothing.
            Exception: Whatever *predicate* raises; nothing is taken.
        """
        session_id = check_text("session_id", session_id)
        predicate = check_predicate(predicate)
        timeout = check_timeout(timeout)
        limit = _check_limit(limit)
        waiter = self._async_waiter((session_id,))
        started = self._started()
        read_here = self._network_store.read_here if self._network else None
        judge = Judge(self._store, session_id, predicate, self._store.take, limit, read_here)
        result = await waiter.run(
            judge.look,
            timeout,
            self._clock,
            judge.look_here if self._network else None,
            self._give_back,
        )
        taken = result if isinstance(result, list) else []
        self._log_wait("inbox.wait_for", waiter, taken, started, timeout)
        return taken

    async def wait_any(
        self, session_ids: Iterable[str], timeout: float | None = None
    ) -> str | None:
        """Wait until any of *session_ids* has something pending; return the first such one.

        For a scheduler serving many sessions from one task. The first of
        *session_ids*, in their order, with pending entries; only pushes (or
        requeues) to them wake it. Takes nothing. Works under trio and asyncio.

        Returns:
            A session id at once if one has entries, or as soon as one gets
            some; ``None`` if the timeout passed, every one of the sessions was
            cleared during the wait, or the inbox is closed with nothing pending
            in them.

        Raises:
            TypeError, ValueError: *session_ids* is not a non-empty iterable of
                ``str`` (a single ``str`` is refused), or *timeout* is invalid.
            trio.Cancelled, asyncio.CancelledError: The wait was cancelled.
        """
        sessions = _check_session_ids(session_ids)
        timeout = check_timeout(timeout)
        waiter = self._async_waiter(sessions)
        started = self._started()
        result = await waiter.run(
            partial(self._look_any, sessions),
            timeout,
            self._clock,
            self._here(self._look_any_here, sessions),
        )
        found = result if isinstance(result, str) else None
        self._log_wait("inbox.wait_any", waiter, found, started, timeout)
        return found

    def wait_any_sync(self, session_ids: Iterable[str], timeout: float | None = None) -> str | None:
        """`wait_any` for a thread: block it until one of *session_ids* has something pending.

        Raises:
            TypeError, ValueError: As for `wait_any`.
            RuntimeError: As for `wait_sync`: in a thread running an event
                loop, with a timeout other than 0.
        """
        sessions = _check_session_ids(session_ids)
        timeout = check_timeout(timeout)
        _refuse_blocking_a_loop(timeout, "wait_any_sync", "wait_any")
        waiter = ThreadWaiter(sessions, self._lot)
        started = self._started()
        result = waiter.run(
            partial(self._look_any, sessions),
            timeout,
            self._clock,
            self._here(self._look_any_here, sessions),
        )
        found = result if isinstance(result, str) else None
        self._log_wait("inbox.wait_any", waiter, found, started, timeout)
        return found

    def batches(self, session_id: str) -> Batches:
        """An async channel of *session_id*'s entries, drained a batch at a time.

        Each step waits for pending entries and returns them all (a non-empty
        list), under trio or asyncio. It is a ``trio.abc.ReceiveChannel``:
        ``async for batch in inbox.batches(sid)``, ``await ch.receive()``,
        ``async with``. Iteration ends (``receive`` raises
        ``trio.EndOfChannel``) when the session is cleared, or when the inbox
        is closed and the session drained. A cancelled step has taken nothing.

        Raises:
            TypeError: *session_id* is not a ``str``.
        """
        stream = Batches(
            check_text("session_id", session_id), self._receive_batch, self._aclose_batches
        )
        self._batches.add(stream)
        return stream

    async def _receive_batch(self, stream: Batches) -> list[InboxEntry]:
        waiter = self._async_waiter((stream.session_id,))
        started = self._started()
        result = await waiter.run(
            partial(self._look_batch, stream),
            None,
            self._clock,
            self._here(self._look_batch_here, stream),
            self._give_back,
        )
        batch = result if isinstance(result, list) else []
        self._log_wait("inbox.batch", waiter, batch, started, None)
        return batch

    def _aclose_batches(self, stream: Batches) -> None:
        stream.closed = True
        self._batches.discard(stream)
        # Receivers parked on this channel look again and see it closed (and
        # those of other channels of the session look again, for nothing).
        self._lot.wake_session(stream.session_id)

    # -- Awaitable forms ----------------------------------------------------------------------
    #
    # For a store whose operations go over the network (`RedisStore`), each
    # runs in a worker thread, so the event loop never blocks on the server;
    # with the in-process stores they run at once, as the plain forms do.

    async def apush(
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
        """`push`, awaitable: for a task under trio or asyncio.

        Arguments, result and errors as for `push`. Cancelled while the store
        works (its round trip on the wire), it stops waiting at once; the push
        may then have been applied or not, as after a `StoreError`.
        """
        return await self._async(
            partial(
                self.push,
                session_id,
                kind,
                content,
                source,
                payload=payload,
                delivery=delivery,
                dedupe_key=dedupe_key,
                coalesce_key=coalesce_key,
                expires_in=expires_in,
            )
        )

    async def areserve_sequence(self, session_id: str) -> int:
        """`reserve_sequence`, awaitable (see `apush` for cancellation)."""
        return await self._async(partial(self.reserve_sequence, session_id))

    async def arequeue_front(self, entry: InboxEntry) -> None:
        """`requeue_front`, awaitable (see `apush` for cancellation)."""
        await self._async(partial(self.requeue_front, entry))

    async def adrain(self, session_id: str) -> list[InboxEntry]:
        """`drain`, awaitable: a cancelled ``adrain`` has taken nothing.

        Cancelled while its round trip is on the wire, it stops waiting at
        once; whatever the drain took when the server answers goes back to the
        head of the session, in order.
        """
        return await self._async(partial(self.drain, session_id), self._give_back)

    async def adrain_where(self, session_id: str, predicate: Predicate) -> list[InboxEntry]:
        """`drain_where`, awaitable; cancellation as for `adrain`.

        With a network store the predicate runs in the worker thread.
        """
        return await self._async(partial(self.drain_where, session_id, predicate), self._give_back)

    async def arevoke(self, session_id: str, sequence: int) -> InboxEntry | None:
        """`revoke`, awaitable (see `apush` for cancellation)."""
        return await self._async(partial(self.revoke, session_id, sequence))

    async def aclear_session(self, session_id: str) -> int:
        """`clear_session`, awaitable (see `apush` for cancellation)."""
        return await self._async(partial(self.clear_session, session_id))

    async def apending_count(self, session_id: str) -> int:
        """`pending_count`, awaitable."""
        return await self._async(partial(self.pending_count, session_id))

    async def asnapshot(self, session_id: str) -> list[InboxEntry]:
        """`snapshot`, awaitable."""
        return await self._async(partial(self.snapshot, session_id))

    async def asessions(self) -> list[str]:
        """`sessions`, awaitable."""
        return await self._async(self.sessions)

    async def astatistics(self, session_id: str) -> SessionStatistics:
        """`statistics`, awaitable."""
        return await self._async(partial(self.statistics, session_id))

    async def _async(
        self, call: Callable[[], T], give_back: Callable[[Any], object] | None = None
    ) -> T:
        if self._network:
            _, result = await off_loop(call, give_back)
            return cast("T", result)
        result = call()
        if sniffio.current_async_library() == "trio":
            # trio's rule, every async call is a checkpoint: one that cannot
            # raise Cancelled, since the call is done.
            await trio.lowlevel.cancel_shielded_checkpoint()
        return result

    def _give_back(self, taken: object) -> None:
        # A wait or drain that stopped waiting for its look (cancelled, timed
        # out, closed) while the look was on the wire: what the look took goes
        # back to the head, in order (see _offloop.py). In the look's worker thread.
        if isinstance(taken, list) and taken:
            for entry in reversed(taken):
                self._store.requeue_front(entry)
            self._lot.notify(taken[0].session_id)

    # -- Shutting down ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting pushes; wake every parked waiter. Idempotent; any thread.

        Afterwards pushes raise `InboxClosed`, waits return at once (``True``
        only if something is still pending), `batches` channels yield what is
        left and end. Draining stays possible: nothing accepted is lost.
        """
        if self._lot.closed:
            return
        self._lot_mutex.refuse_reentry()
        self._store.refuse_pushes()
        woken = self._lot.close()
        if self._telemetry is not None:
            self._telemetry.emit("info", "inbox.close", woken=woken)

    def __enter__(self) -> Inbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Inbox:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- Inside -------------------------------------------------------------------------------

    def _look_pending(self, session_id: str) -> Literal[True] | Look:
        return True if self._store.has_pending(session_id) else Look.NOTHING

    def _look_any(self, session_ids: tuple[str, ...]) -> str | Look:
        for session_id in session_ids:
            if self._store.has_pending(session_id):
                return session_id
        return Look.NOTHING

    # A network store's waits look "here" first, on the event loop, from what
    # this process holds (`Look.AWAY` where that needs the network): see
    # `harn_inbox._lot.wait_steps`, and the store's `has_pending_here`.

    def _here(self, look_here: Callable[..., Any], *args: Any) -> Callable[[], Any] | None:
        return partial(look_here, *args) if self._network else None

    def _look_pending_here(self, session_id: str) -> Literal[True] | Look:
        pending = self._network_store.has_pending_here(session_id)
        if pending is None:
            return Look.AWAY
        return True if pending else Look.NOTHING

    def _look_any_here(self, session_ids: tuple[str, ...]) -> str | Look:
        for session_id in session_ids:
            pending = self._network_store.has_pending_here(session_id)
            if pending is None:
                return Look.AWAY  # (the first in order with entries may be this one)
            if pending:
                return session_id
        return Look.NOTHING

    def _look_batch_here(self, stream: Batches) -> list[InboxEntry] | Look:
        if stream.cleared or stream.closed:
            return []
        pending = self._network_store.has_pending_here(stream.session_id)
        return Look.NOTHING if pending is False else Look.AWAY  # a drain goes over the network

    def _take_claim(self, session_id: str, predicate: Predicate | None) -> ClaimRecord:
        if predicate is None:
            record = self._store.claim(session_id, None, None)
        else:
            judged = Judge(self._store, session_id, predicate, self._store.claim).look()
            record = ClaimRecord(session_id, [], [], None) if isinstance(judged, Look) else judged
        assert record is not None
        if self._telemetry is not None:
            self._telemetry.emit(
                "debug", "inbox.claim", session_id=session_id, taken=len(record.entries)
            )
        return record

    def _settle_claim(self, record: ClaimRecord) -> None:
        self._store.settle(record)
        if self._telemetry is not None and record.entries:
            self._telemetry.emit(
                "debug", "inbox.claim_settled", session_id=record.session_id, count=len(record)
            )

    def _release_claim(self, record: ClaimRecord) -> None:
        self._lot_mutex.refuse_reentry()
        restored = self._store.release(record)
        if restored:
            self._lot.notify(record.session_id)
        if self._telemetry is not None and record.entries:
            self._telemetry.emit(
                "info",
                "inbox.claim_released",
                session_id=record.session_id,
                count=len(record),
                restored=restored,
            )

    def _expired(self, entries: list[InboxEntry]) -> None:
        # From the store, no lock held: entries that expired before anyone took them.
        totals: dict[str, int] = {}
        for entry in entries:
            fields: dict[str, object] = {
                "session_id": entry.session_id,
                "sequence": entry.sequence,
                "kind": entry.kind,
                "source": entry.source,
            }
            if self._telemetry is not None:
                if entry.session_id not in totals:
                    # Read once the whole report is counted: the same total for each.
                    totals[entry.session_id] = self._store.statistics(entry.session_id).expired
                fields["expired_total"] = totals[entry.session_id]
                self._telemetry.emit("info", "inbox.expired", **fields)
            else:
                fallback_logger.info("harn_inbox: entry expired unread: %r", fields)

    def _look_batch(self, stream: Batches) -> list[InboxEntry] | Look:
        if stream.cleared or stream.closed:
            return []  # a result: the channel has ended
        return self._store.drain(stream.session_id) or Look.NOTHING

    def _async_waiter(self, session_ids: tuple[str, ...]) -> TrioWaiter | AsyncioWaiter:
        library = sniffio.current_async_library()
        if library == "trio":
            return TrioWaiter(session_ids, self._lot)
        if library == "asyncio":
            return AsyncioWaiter(session_ids, self._lot)
        raise RuntimeError(f"harn_inbox waits under trio or asyncio, not {library}")

    def _started(self) -> int:
        # The clock at the start of a wait, for telemetry only.
        return 0 if self._telemetry is None else self._clock.now_ms()

    def _log_wait(
        self, event: str, waiter: Any, result: object, started: int, timeout: float | None
    ) -> None:
        if self._telemetry is None:
            return
        try:
            waited_ms = self._clock.now_ms() - started
        except Exception:  # the wait's result is already taken: log without it
            waited_ms = -1
        self._telemetry.waited(
            event,
            waiter.session_ids,
            result,
            waiter.interrupted,
            self._lot.closed,
            waited_ms,
            timeout,
        )


def _checked_entry(entry: object) -> InboxEntry:
    """*entry* as an `InboxEntry` of plain fields in range, or the error naming it."""
    if type(entry) is not InboxEntry:
        type_error("entry", "an InboxEntry", entry)
    if not has_plain_fields(entry):
        # The fields are compared under the store's lock, so they must be
        # plain (see check_text). InboxEntry's converters see to it, but
        # unpickling bypasses them: requeue a plain copy of such an entry.
        # (attrs' validators can be switched off: check the copy too.)
        entry = rebuilt(entry)
        if not has_plain_fields(entry):
            type_error("entry", "an InboxEntry of plain str and int fields", entry)
    if not (1 <= entry.sequence <= MAX_SEQUENCE and entry.ts_ms >= 0):
        # Only an entry built with attrs' validators off gets here.
        raise ValueError(
            f"entry must have a sequence in 1 .. 2**64-1 and a non-negative ts_ms, not {entry!r}"
        )
    return entry


def _push_options(
    payload: object,
    delivery: object,
    dedupe_key: object,
    coalesce_key: object,
    expires_in: object,
) -> PushOptions:
    """The keyword arguments of a push, checked: each error names its argument."""
    expires_in_ms = None
    if expires_in is not None:
        seconds = check_seconds("expires_in", expires_in)
        if not math.isinf(seconds):
            expires_in_ms = _milliseconds(seconds)
    return PushOptions(
        payload=freeze(payload, "payload"),
        delivery=check_delivery(delivery),
        dedupe_key=_check_key("dedupe_key", dedupe_key),
        coalesce_key=_check_key("coalesce_key", coalesce_key),
        expires_in_ms=expires_in_ms,
    )


def _check_key(name: str, value: object) -> str | None:
    if value is None:
        return None
    key = check_text(name, value)
    if not key:
        raise ValueError(f"{name} must be a non-empty str or None, not {value!r}")
    return key


def _check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    value = check_int("limit", limit)
    if value < 1:
        raise ValueError(f"limit must be at least 1 or None, not {limit!r}")
    return value


def _check_session_ids(session_ids: object) -> tuple[str, ...]:
    """*session_ids* as a tuple of distinct plain ``str``, in their first order."""
    if isinstance(session_ids, str) or not isinstance(session_ids, Iterable):
        type_error("session_ids", "an iterable of str (not a str)", session_ids)
    sessions = tuple(dict.fromkeys(check_text("session_ids", sid) for sid in session_ids))
    if not sessions:
        raise ValueError("session_ids must name at least one session")
    return sessions


def _milliseconds(seconds: float) -> int:
    """*seconds* (finite, non-negative) as whole milliseconds, rounded up."""
    return math.ceil(seconds * 1000)


def _refuse_blocking_a_loop(timeout: float | None, call: str, instead: str) -> None:
    if timeout != 0 and _loop_running_here():
        raise RuntimeError(
            f"{call}() would block the event loop running in this thread; "
            f"use 'await inbox.{instead}(...)' there instead"
        )


def _with_waiters(counts: SessionStatistics, waiters: int) -> SessionStatistics:
    return attrs.evolve(counts, waiters=waiters)


def _loop_running_here() -> bool:
    if trio.lowlevel.in_trio_run():
        return True
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
