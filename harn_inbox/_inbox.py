"""`Inbox`: per-session queues of nudges, their sequence counters, and the waiters parked on them.

Theory of operation
-------------------
One ``threading.Lock`` (``_lock``) guards all state. Every method takes it for
a short, non-blocking stretch and never calls user code while holding it,
except the clock's ``now_ms()`` and an asyncio loop's ``is_closed()`` and
``create_future()``; not even a ``str`` subclass's ``__hash__``, since ids,
bounds and entry fields are plain copies (``check_text``, the converters of
`InboxEntry`). State is plain data:

- ``_sessions``: session id -> its `Session` record: pending entries (oldest
  first), the last sequence issued (kept after a drain, so sequences never
  restart; reset by ``clear_session``), the wait calls in progress on it, and
  the ``drop_oldest`` count. A record exists only while it holds something.
  See ``_waiters.py`` for the parking protocol and why no wake-up is lost.
- ``_streams``: session id -> its live ``batches`` channels, to end them when
  the session is cleared, whether or not they are parked at that moment.

**Pending lists change in place only at their ends.** A push appends; a
``drop_oldest`` push into a full session also deletes the head, and counts it
in the record's ``dropped``. Everything else (drain, drain_where,
requeue_front, clear) replaces the session's list with a new one or removes
it, and a list that has left its session is never put back. So whoever saw
list ``L`` holding ``n`` entries with the session's ``dropped`` at ``d``, and
later, under the lock, finds ``L`` still in place and ``dropped`` still ``d``,
knows that ``L[:n]`` is what it saw and ``L[n:]`` is what was pushed since.
``_take_matching`` relies on this to run a user's predicate *outside* the
lock: a slow or re-entrant predicate stalls nobody and deadlocks nothing.
(Deleting the head in place is a memmove; replacing the list cost a copy of
every pending entry, some 0.3 ms per push with 100,000 pending.)

Pushes take the lock politely (``_acquire_contended``): under the GIL, many
producer threads blocking on one lock turn every push into an OS handoff (a
lock convoy); yielding the GIL to the holder, which never blocks under the
lock, avoids it.

Wake-ups are per session: a push looks only at its own session's waiters, so
idle waiters on other sessions cost it nothing. Waiters are woken after the
lock is released; each one unparked under the lock is owed exactly one wake.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
import threading
import weakref
from collections.abc import Callable
from functools import partial
from time import sleep as _yield_thread
from time import time_ns as _time_ns
from typing import TYPE_CHECKING, Any, Literal, TypeVar, final

import attrs
import sniffio
import trio

from ._arguments import check_callable, check_int, check_text, check_timeout, type_error
from ._clock import Clock, SystemClock
from ._entry import MAX_SEQUENCE, Blank, InboxEntry, has_plain_fields
from ._errors import InboxClosed, InboxFull
from ._session import Session
from ._waiters import (
    PARKED,
    AsyncioWaiter,
    Interrupt,
    Parked,
    ThreadWaiter,
    TrioWaiter,
    Waiter,
    fallback_logger,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from types import TracebackType

    from structlog.typing import FilteringBoundLogger

    from ._batches import Batches

T = TypeVar("T")
Predicate = Callable[[InboxEntry], object]

_OVERFLOWS = ("reject", "drop_oldest")
#: How often a push yields the GIL to a lock holder before blocking on the lock.
_POLITE_LOOKS = 20
#: The largest int CPython compares on its fastest path (one 30-bit digit).
_SMALL_INT = 2**30 - 1


@final
@attrs.define(init=False, repr=False, eq=False)
class Inbox:
    """The inboxes of all sessions of one agent runtime.

    Make one per runtime and pass it to whatever pushes or waits; instances
    share nothing. Every method may be called from any thread, with or
    without an event loop running in it; the async ones work under trio and
    asyncio alike, detecting which is running.

    Args:
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

    Raises:
        TypeError: An argument has the wrong type.
        ValueError: ``max_pending`` is below 1, or ``overflow`` is not one of
            the two names.
    """

    _clock: Clock
    _now_ms: Callable[[], int] | None
    _logger: FilteringBoundLogger | None
    _max_pending: int | None
    _drop_oldest: bool
    _lock: threading.Lock
    _sessions: dict[str, Session]
    _streams: dict[str, weakref.WeakSet[Batches]]
    _streams_sweep_at: int
    _closed: bool
    _admits_all: bool

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        logger: FilteringBoundLogger | None = None,
        max_pending: int | None = None,
        overflow: Literal["reject", "drop_oldest"] = "reject",
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
        # Plain copies (see check_text): both are compared under the lock.
        if max_pending is not None and (max_pending := check_int("max_pending", max_pending)) < 1:
            raise ValueError(f"max_pending must be at least 1 or None, not {max_pending!r}")
        overflow_name = check_text("overflow", overflow)
        if overflow_name not in _OVERFLOWS:
            raise ValueError(f"overflow must be 'reject' or 'drop_oldest', not {overflow!r}")
        self._clock = clock
        self._now_ms = None if type(clock) is SystemClock else clock.now_ms
        self._logger = logger
        self._max_pending = max_pending
        self._drop_oldest = overflow_name == "drop_oldest"
        self._lock = threading.Lock()
        self._sessions = {}
        self._streams = {}
        self._streams_sweep_at = 64
        self._closed = False
        #: Whether a push can be neither refused nor given a drop, and stamps
        #: from the SystemClock (read inline): open, unbounded, system time.
        #: Read and written under the lock; push's one test for its rare cases.
        self._admits_all = max_pending is None and self._now_ms is None

    def __repr__(self) -> str:
        with self._lock:
            records = self._sessions.values()
            sessions = sum(record.pending is not None for record in records)
            pending = sum(len(record.pending or ()) for record in records)
            waiters = sum(len(record.waiters or ()) for record in records)
            state = "closed" if self._closed else "open"
        return f"<Inbox {state} sessions={sessions} pending={pending} waiters={waiters}>"

    # -- Producing ----------------------------------------------------------------------------

    def push(self, session_id: str, kind: str, content: str, source: str) -> InboxEntry:
        """Append a nudge to *session_id*'s inbox and wake that session's waiters.

        Any thread, never blocks. The entry gets the session's next sequence
        number and ``ts_ms`` from the inbox's clock. ``""`` is a valid session.

        Returns:
            The stamped entry, as a later drain will return it.

        Raises:
            TypeError: An argument is not a ``str`` (nothing is stored).
            InboxClosed: The inbox is closed (nothing is stored).
            InboxFull: The session is full and ``overflow="reject"`` (nothing is stored).
        """
        if not (str is type(session_id) is type(kind) is type(content) is type(source)):
            session_id = check_text("session_id", session_id)
            kind = check_text("kind", kind)
            content = check_text("content", content)
            source = check_text("source", source)
        lock = self._lock
        try:
            if not lock.acquire(False):
                _acquire_contended(lock)
            try:
                if self._admits_all:  # the SystemClock, read inline: this is the hot path
                    ts_ms = _time_ns() // 1_000_000
                    dropped = None
                else:
                    ts_ms, dropped = self._admit(session_id)
                # Nothing raises from here on: only now may a new record appear.
                sessions = self._sessions
                try:
                    session = sessions[session_id]
                except KeyError:
                    session = sessions[session_id] = Session()
                sequence = session.last_sequence + 1
                # The first test is the cheap one (both small ints) and fails
                # until a session nears 2**30 pushes.
                if sequence > _SMALL_INT and sequence > MAX_SEQUENCE:
                    sequence = 1  # u64 wraps to 1, never 0
                # The fields are checked: stamp them without attrs' frozen
                # __init__, which would check them again, slowly (see _entry.Blank).
                entry: Any = Blank()
                entry.sequence = sequence
                entry.session_id = session_id
                entry.kind = kind
                entry.content = content
                entry.source = source
                entry.ts_ms = ts_ms
                entry.__class__ = InboxEntry
                session.last_sequence = sequence
                pending = session.pending
                if pending is None:
                    session.pending = [entry]
                elif dropped is None:
                    pending.append(entry)
                else:
                    # Counted with the shift (see "Pending lists change in place
                    # only at their ends"): judgments of this list are void.
                    del pending[0]
                    session.dropped = drops = session.dropped + 1
                    pending.append(entry)
                woken = session.waiters and self._unpark_session(session)
            finally:
                lock.release()
        except InboxFull:
            if self._logger is not None:
                self._emit(
                    "warning",
                    "inbox.push",
                    session_id=session_id,
                    kind=kind,
                    source=source,
                    outcome="rejected",
                    max_pending=self._max_pending,
                )
            raise
        if woken:
            for waiter in woken:
                waiter.wake()
        if self._logger is not None:
            if dropped is None:
                self._log_push(entry)
            else:
                self._log_push(entry, dropped, drops)
        return entry  # type: ignore[no-any-return]

    def _log_push(
        self, entry: InboxEntry, dropped: InboxEntry | None = None, drops: int = 0
    ) -> None:
        fields: dict[str, object] = {
            "session_id": entry.session_id,
            "kind": entry.kind,
            "source": entry.source,
            "sequence": entry.sequence,
        }
        if dropped is None:
            self._emit("debug", "inbox.push", **fields)
        else:
            self._emit(
                "warning",
                "inbox.push",
                **fields,
                outcome="dropped_oldest",
                dropped_sequence=dropped.sequence,
                dropped_total=drops,
            )

    def _admit(self, session_id: str) -> tuple[int, InboxEntry | None]:
        # With the lock held, for a push that `_admits_all` does not wave
        # through: refuse it (closed, or full and rejecting), or say which
        # entry it drops (full, dropping the oldest); read a custom clock.
        # Changes nothing, so whatever it raises leaves the inbox as it was.
        if self._closed:
            raise InboxClosed(f"push to session {session_id!r} after the inbox was closed")
        dropped = None
        session = self._sessions.get(session_id)
        pending = None if session is None else session.pending
        if (
            pending is not None
            and self._max_pending is not None
            and len(pending) >= self._max_pending
        ):
            if not self._drop_oldest:
                raise InboxFull(session_id, len(pending), self._max_pending)
            dropped = pending[0]
        if self._now_ms is None:
            ts_ms = _time_ns() // 1_000_000
        else:
            ts_ms = self._now_ms()
            if type(ts_ms) is not int:
                raise TypeError(f"clock.now_ms() must return int, not {ts_ms!r}")
            if ts_ms < 0:
                raise ValueError(f"clock.now_ms() must not be negative, not {ts_ms!r}")
        return ts_ms, dropped

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
            ValueError: An equal entry (all six fields) is already pending in
                that session: requeueing it would deliver it twice. (Two
                distinct entries are equal only across a `clear_session`, on
                a clock that did not move in between: the second is refused.)
                Or a field is out of range (only if built with attrs'
                validators off).
        """
        if type(entry) is not InboxEntry:
            type_error("entry", "an InboxEntry", entry)
        if not has_plain_fields(entry):
            # The fields are compared under the lock, so they must be plain
            # (see check_text). InboxEntry's converters see to it, but
            # unpickling bypasses them: requeue a plain copy of such an entry.
            # (attrs' validators can be switched off: check the copy too.)
            entry = attrs.evolve(entry)
            if not has_plain_fields(entry):
                type_error("entry", "an InboxEntry of plain str and int fields", entry)
        if not (1 <= entry.sequence <= MAX_SEQUENCE and entry.ts_ms >= 0):
            # Only an entry built with attrs' validators off gets here.
            raise ValueError(
                "entry must have a sequence in 1 .. 2**64-1 and a non-negative ts_ms, "
                f"not {entry!r}"
            )
        session_id = entry.session_id
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                session = self._sessions[session_id] = Session()
            pending = session.pending
            if pending is None:
                session.pending = [entry]
            elif entry in pending:
                raise ValueError(
                    f"entry is already pending: session {session_id!r} "
                    f"holds an equal entry, sequence {entry.sequence}"
                )
            else:
                session.pending = [entry, *pending]  # replaced, not changed in place
            woken = self._unpark_session(session)
        _wake_all(woken)
        if self._logger is not None:
            self._emit(
                "debug",
                "inbox.requeue_front",
                session_id=session_id,
                kind=entry.kind,
                source=entry.source,
                sequence=entry.sequence,
            )

    # -- Consuming -----------------------------------------------------------------------------

    def drain(self, session_id: str) -> list[InboxEntry]:
        """Take everything pending in *session_id*, oldest first, leaving it empty.

        Any thread, never blocks. An unknown session gives ``[]``. The
        sequence counter carries on: the next push gets the next number.

        Raises:
            TypeError: *session_id* is not a ``str``.
        """
        session_id = check_text("session_id", session_id)
        with self._lock:
            entries = self._take_all(session_id) or []
        if self._logger is not None:
            self._emit("debug", "inbox.drain", session_id=session_id, count=len(entries))
        return entries

    def drain_where(self, session_id: str, predicate: Predicate) -> list[InboxEntry]:
        """Take the entries of *session_id* for which *predicate* is true, in order.

        The others stay queued, in their order. Any thread, never blocks. The
        result is as if the whole call happened at one instant.

        The predicate runs in the calling thread without the inbox's lock held,
        so it may be slow or call the inbox without stalling anyone. It should
        be a pure function of the entry: it is called at most once per entry
        that stays pending, whatever arrives, is taken or is requeued around
        it meanwhile (entries are immutable, so a verdict holds). An entry
        that another consumer takes and then requeues may be judged again.

        Raises:
            TypeError: *session_id* is not a ``str`` or *predicate* not callable.
            Exception: Whatever *predicate* raises propagates, and the inbox is
                exactly as if the call had not happened.
        """
        session_id = check_text("session_id", session_id)
        check_callable("predicate", predicate)
        taken = self._take_matching(session_id, Judgments(predicate), None)
        assert not isinstance(taken, Parked)  # without a waiter it never parks
        if self._logger is not None:
            self._emit("debug", "inbox.drain_where", session_id=session_id, taken=len(taken))
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
        with self._lock:
            for stream in self._streams.pop(session_id, ()):
                stream._cleared = True
            session = self._sessions.get(session_id)
            dropped = 0
            woken = []
            if session is not None:
                dropped = len(session.pending or ())
                session.pending = None
                session.last_sequence = session.dropped = 0
                # Every wait in progress on it ends, parked or not (a woken
                # one that has yet to look again would otherwise wait on).
                # The record stays until they have left.
                for waiter in session.waiters or ():
                    waiter.interrupted = Interrupt.CLEARED
                woken = self._unpark_session(session)
                self._discard_if_empty(session_id, session)
        _wake_all(woken)
        if self._logger is not None:
            self._emit("info", "inbox.clear_session", session_id=session_id, dropped=dropped)
        return dropped

    # -- Looking -------------------------------------------------------------------------------

    def pending_count(self, session_id: str) -> int:
        """How many entries *session_id* has pending. Any thread, never blocks."""
        session_id = check_text("session_id", session_id)
        with self._lock:
            session = self._sessions.get(session_id)
            return 0 if session is None else len(session.pending or ())

    def snapshot(self, session_id: str) -> list[InboxEntry]:
        """A copy of what *session_id* has pending, oldest first; changes nothing."""
        session_id = check_text("session_id", session_id)
        with self._lock:
            session = self._sessions.get(session_id)
            return [] if session is None else list(session.pending or ())

    def sessions(self) -> list[str]:
        """The sessions that have at least one pending entry, in no promised order."""
        with self._lock:
            return [sid for sid, session in self._sessions.items() if session.pending is not None]

    def waiter_count(self, session_id: str) -> int:
        """How many wait calls (sync and async) are in progress on *session_id*.

        A wait counts from the moment it first parks (a ``wait_for``: from its
        first look) until it returns, is cancelled, or times out, including
        while it is woken and about to look again. Zero after every wait ended.
        """
        session_id = check_text("session_id", session_id)
        with self._lock:
            session = self._sessions.get(session_id)
            return 0 if session is None else len(session.waiters or ())

    def dropped(self, session_id: str) -> int:
        """How many entries ``overflow="drop_oldest"`` discarded from *session_id*.

        Counted since the session was last cleared.
        """
        session_id = check_text("session_id", session_id)
        with self._lock:
            session = self._sessions.get(session_id)
            return 0 if session is None else session.dropped

    @property
    def closed(self) -> bool:
        """Whether `close` has been called."""
        return self._closed

    # -- Waiting -------------------------------------------------------------------------------

    def wait_sync(self, session_id: str, timeout: float | None = None) -> bool:
        """Block the calling thread until *session_id* has something pending.

        For worker threads (a thread of ``trio.to_thread.run_sync``, a plain
        ``threading.Thread``). Only a push to this session wakes it.

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
        if timeout != 0 and _loop_running_here():
            raise RuntimeError(
                "wait_sync() would block the event loop running in this thread; "
                "use 'await inbox.wait(...)' there instead"
            )
        waiter = ThreadWaiter(session_id, self)
        step = partial(self._step_pending, session_id)
        if self._logger is None:
            return waiter.run(step, timeout)
        started = self._clock.now_ms()
        result = waiter.run(step, timeout)
        self._log_wait("inbox.wait", waiter, result, started, timeout)
        return result

    async def wait(self, session_id: str, timeout: float | None = None) -> bool:
        """Wait until *session_id* has something pending. Works under trio and asyncio.

        Only a push to this session wakes it, from whatever thread it comes.
        Takes nothing: pair it with `drain` (or use `wait_for` / `batches`).

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
        waiter = self._async_waiter(session_id)
        return await self._logged_wait_async(
            waiter, partial(self._step_pending, session_id), timeout
        )

    async def wait_for(
        self, session_id: str, predicate: Predicate, timeout: float | None = None
    ) -> list[InboxEntry]:
        """Wait until entries of *session_id* match *predicate*, then take them.

        Selective receive: takes the matching entries as `drain_where` does and
        leaves the rest queued, in order. Replaces the racy "drain, look for my
        handle, requeue the rest". The predicate runs in the waiting task,
        without the inbox's lock, as in `drain_where`: once per entry that
        stays pending, whatever arrives or is requeued meanwhile.

        Returns:
            The matching entries, in order, once there is at least one; ``[]``
            if the timeout passed, the session was cleared, or the inbox is
            closed with nothing matching.

        Raises:
            TypeError, ValueError: An argument is invalid.
            trio.Cancelled, asyncio.CancelledError: The wait was cancelled. A
                cancelled or timed-out wait_for has taken nothing.
            Exception: Whatever *predicate* raises; nothing is taken.
        """
        session_id = check_text("session_id", session_id)
        check_callable("predicate", predicate)
        timeout = check_timeout(timeout)
        waiter = self._async_waiter(session_id)
        return await self._logged_wait_async(
            waiter,
            partial(self._take_matching, session_id, Judgments(predicate)),
            timeout,
            "inbox.wait_for",
        )

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
        from ._batches import Batches

        session_id = check_text("session_id", session_id)
        stream = Batches(self, session_id)
        with self._lock:
            streams = self._streams.get(session_id)
            if streams is None:
                if len(self._streams) >= self._streams_sweep_at:
                    # Channels dropped without aclose() leave empty sets behind:
                    # sweep them, amortized O(1) per new entry.
                    self._streams = {sid: live for sid, live in self._streams.items() if live}
                    self._streams_sweep_at = max(64, 2 * len(self._streams))
                streams = self._streams[session_id] = weakref.WeakSet()
            streams.add(stream)
        return stream

    # -- Shutting down -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop accepting pushes; wake every parked waiter. Idempotent; any thread.

        Afterwards pushes raise `InboxClosed`, waits return at once (``True``
        only if something is still pending), `batches` channels yield what is
        left and end. Draining stays possible: nothing accepted is lost.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._admits_all = False
            woken = [
                waiter
                for session in list(self._sessions.values())  # records may go
                for waiter in self._unpark_session(session)
            ]
        _wake_all(woken)
        if self._logger is not None:
            self._emit("info", "inbox.close", woken=len(woken))

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

    # -- The steps (see _waiters.py): decide under the lock, or register the waiter -------------

    def _step_pending(self, session_id: str, waiter: Waiter | None) -> bool | Parked:
        with self._lock:
            session = self._sessions.get(session_id)
            pending = session is not None and session.pending is not None
            if waiter is None:
                return pending
            pending = pending and waiter.interrupted is not Interrupt.CLEARED
            if pending or waiter.interrupted is not None or self._closed:
                self._leave_locked(waiter)
                return pending
            self._park(waiter)
        return PARKED

    def _take_matching(
        self, session_id: str, judged: Judgments, waiter: Waiter | None
    ) -> list[InboxEntry] | Parked:
        # Judge entries outside the lock, commit under it (see "Pending
        # lists change in place only at their ends"). While the list *judged*
        # last saw is still in place, unshifted, only its new tail needs judging, in this look or a
        # later one of the same wait_for; once every pending entry is judged,
        # commit or park in that same critical section, so nothing pushed in
        # between escapes either.
        while True:
            with self._lock:
                if waiter is not None:
                    if waiter.interrupted is Interrupt.CLEARED:
                        self._leave_locked(waiter)
                        return []
                    # Registered from the first look, since the predicate runs
                    # unlocked: a clear_session meanwhile must reach this wait.
                    self._register(waiter)
                session = self._sessions.get(session_id)
                current = None if session is None else session.pending
                drops = 0 if session is None else session.dropped
                earlier = None
                if current is not judged.source or drops != judged.drops:
                    # Replaced (requeue_front, another consumer's take),
                    # cleared, or its head dropped. Entries are immutable:
                    # what was judged keeps its verdict, carried over outside
                    # the lock.
                    earlier = judged.seen, judged.verdicts
                    judged.source, judged.seen, judged.verdicts = current, [], []
                    judged.drops = drops
                if current is not None and len(current) > len(judged.seen):
                    unjudged = current[len(judged.seen) :]
                elif any(judged.verdicts):
                    seen, verdicts = judged.seen, judged.verdicts
                    taken = list(itertools.compress(seen, verdicts))
                    kept = list(itertools.compress(seen, map(operator.not_, verdicts)))
                    assert session is not None  # it holds `current`
                    session.pending = kept or None
                    if waiter is not None:
                        self._leave_locked(waiter)
                    self._discard_if_empty(session_id, session)
                    return taken
                elif waiter is None:
                    return []
                elif self._closed or waiter.interrupted is not None:  # closed, or timed out
                    self._leave_locked(waiter)
                    return []
                else:
                    self._park(waiter)
                    return PARKED
            # Outside the lock. May raise: nothing is committed. Truth is
            # taken here too, so no user __bool__ runs under the lock.
            predicate = judged.predicate
            if earlier is not None and earlier[0]:
                known = _verdicts_by_identity(*earlier)
                fresh = [
                    known[id(entry)] if id(entry) in known else bool(predicate(entry))
                    for entry in unjudged
                ]
            else:
                # A comprehension, not map(): a StopIteration from the predicate
                # must propagate, not end the iteration and shorten the verdicts.
                fresh = [bool(predicate(entry)) for entry in unjudged]
            if judged.seen:
                judged.seen += unjudged
                judged.verdicts += fresh
            else:
                judged.seen, judged.verdicts = unjudged, fresh

    def _step_batch(self, stream: Batches, waiter: Waiter | None) -> list[InboxEntry] | Parked:
        with self._lock:
            if stream._cleared or stream._closed or (waiter and waiter.interrupted):
                # (batches have no timeout: the only interrupt is CLEARED)
                entries = None
            else:
                entries = self._take_all(stream.session_id)
                if entries is None and waiter is not None and not self._closed:
                    self._park(waiter)
                    return PARKED
            if waiter is not None:
                self._leave_locked(waiter)
            return entries or []

    # -- Parking (the Lot protocol of _waiters.py) ----------------------------------------------

    def _register(self, waiter: Waiter) -> None:
        # With the lock held: from now until it leaves, clear_session reaches it.
        waiter.registered = True
        session = self._sessions.get(waiter.session_id)
        if session is None:
            session = self._sessions[waiter.session_id] = Session()
        if session.waiters is None:
            session.waiters = {waiter: None}
        else:
            session.waiters[waiter] = None

    def _park(self, waiter: Waiter) -> None:
        # With the lock held: register (if not yet), arm, and mark parked.
        waiter.arm()
        waiter.parked = True
        self._register(waiter)

    def _leave_locked(self, waiter: Waiter) -> None:
        # With the lock held: the wait call is ending; nobody owes it a wake.
        # A registered waiter's record is still in place: records with
        # waiters are never discarded.
        if waiter.registered:
            waiter.parked = waiter.registered = False
            session = self._sessions[waiter.session_id]
            assert session.waiters is not None
            del session.waiters[waiter]
            if not session.waiters:
                session.waiters = None
                self._discard_if_empty(waiter.session_id, session)

    def _unpark_session(self, session: Session) -> list[Waiter]:
        # With the lock held: unpark the session's parked waiters, each owed
        # one wake, and forget unparked ones whose loop was closed since a
        # wake was sent to them: that wake will never run, and nothing else
        # would reach them. Forgetting the last one discards the record if it
        # holds nothing else (never one that holds entries).
        woken: list[Waiter] = []
        abandoned: list[Waiter] | None = None
        for waiter in session.waiters or ():
            if waiter.parked:
                waiter.parked = False
                woken.append(waiter)
            elif waiter.abandoned():
                if abandoned is None:
                    abandoned = []
                abandoned.append(waiter)
        if abandoned is not None:
            for waiter in abandoned:
                self._leave_locked(waiter)
        return woken

    def _take_all(self, session_id: str) -> list[InboxEntry] | None:
        # With the lock held. Handing out the session's own list is safe: a
        # list that has left its session is never touched again.
        session = self._sessions.get(session_id)
        if session is None or session.pending is None:
            return None
        entries, session.pending = session.pending, None
        self._discard_if_empty(session_id, session)
        return entries

    def _discard_if_empty(self, session_id: str, session: Session) -> None:
        # With the lock held. A dict never shrinks as keys go: once the last
        # record goes, let the table of a busier past go too.
        if session.is_empty() and self._sessions.get(session_id) is session:
            del self._sessions[session_id]
            if not self._sessions:
                self._sessions = {}

    def _leave(self, waiter: Waiter) -> None:
        # Read unlocked on purpose. Only the waiter's own thread registers it,
        # and an unregistered waiter is the only kind the garbage collector
        # can finalize (the registry pins the others): its coroutine's
        # cleanup lands here, possibly inside one of our own locked sections
        # on this very thread, so it must not take the lock.
        if waiter.registered:
            with self._lock:
                self._leave_locked(waiter)

    def _unpark(self, waiter: Waiter) -> None:
        # A trio wait being cancelled: see TrioWaiter._abort.
        with self._lock:
            waiter.parked = False

    def _interrupt(self, waiter: Waiter, reason: Interrupt) -> None:
        with self._lock:
            if waiter.interrupted is None:
                waiter.interrupted = reason
            parked, waiter.parked = waiter.parked, False
        if parked:
            waiter.wake()

    def _wake_session(self, session_id: str) -> None:
        """Make every parked waiter of *session_id* look again (a batches channel was closed)."""
        with self._lock:
            session = self._sessions.get(session_id)
            woken = [] if session is None else self._unpark_session(session)
        _wake_all(woken)

    def _forget_stream(self, stream: Batches) -> None:
        with self._lock:
            streams = self._streams.get(stream.session_id)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del self._streams[stream.session_id]

    def _async_waiter(self, session_id: str) -> TrioWaiter | AsyncioWaiter:
        library = sniffio.current_async_library()
        if library == "trio":
            return TrioWaiter(session_id, self)
        if library == "asyncio":
            return AsyncioWaiter(session_id, self)
        raise RuntimeError(f"harn_inbox waits under trio or asyncio, not {library}")

    # -- Telemetry around waits -----------------------------------------------------------------

    def _logged_wait_async(
        self,
        waiter: TrioWaiter | AsyncioWaiter,
        step: Callable[[Waiter | None], T | Parked],
        timeout: float | None,
        event: str = "inbox.wait",
    ) -> Awaitable[T]:
        # Without a logger, the waiter's own coroutine, not one wrapped in
        # another: a wake-up resumes one coroutine frame fewer.
        if self._logger is None:
            return waiter.run(step, timeout)
        return self._logged_wait(waiter, step, timeout, event)

    async def _logged_wait(
        self,
        waiter: TrioWaiter | AsyncioWaiter,
        step: Callable[[Waiter | None], T | Parked],
        timeout: float | None,
        event: str,
    ) -> T:
        started = self._clock.now_ms()
        result = await waiter.run(step, timeout)
        self._log_wait(event, waiter, result, started, timeout)
        return result

    def _emit(self, level: str, event: str, **fields: Any) -> None:
        # Telemetry comes after the fact (an entry accepted, entries taken):
        # a logger that raises must not turn that into an error and lose them.
        try:
            getattr(self._logger, level)(event, **fields)
        except Exception:
            fallback_logger.exception("harn_inbox: logging %s failed", event)

    def _log_wait(
        self, event: str, waiter: Waiter, result: object, started: int, timeout: float | None
    ) -> None:
        try:
            self._log_wait_unguarded(event, waiter, result, started, timeout)
        except Exception:  # clock.now_ms() too: the wait's result is already taken
            fallback_logger.exception("harn_inbox: logging %s failed", event)

    def _log_wait_unguarded(
        self, event: str, waiter: Waiter, result: object, started: int, timeout: float | None
    ) -> None:
        assert self._logger is not None
        if result:
            outcome = "pending"
        elif waiter.interrupted is not None:
            outcome = waiter.interrupted.value
        elif self._closed:
            outcome = "closed"
        else:
            outcome = "empty"
        fields: dict[str, Any] = {
            "session_id": waiter.session_id,
            "outcome": outcome,
            "timeout": timeout,
            "waited_ms": self._clock.now_ms() - started,
        }
        if isinstance(result, list):
            fields["taken"] = len(result)
        self._logger.debug(event, **fields)


@final
class Judgments:
    """What one ``drain_where`` or ``wait_for`` call has judged: source[:len(seen)].

    Valid while *source* is its session's list and the session's drop count
    is still *drops*.
    """

    __slots__ = ("drops", "predicate", "seen", "source", "verdicts")

    def __init__(self, predicate: Predicate) -> None:
        self.predicate = predicate
        self.source: list[InboxEntry] | None = None
        self.drops = 0
        self.seen: list[InboxEntry] = []
        self.verdicts: list[bool] = []


def _verdicts_by_identity(seen: list[InboxEntry], verdicts: list[bool]) -> dict[int, bool]:
    """The verdicts of *seen*, by the identity of each entry judged.

    Entries are immutable, so a verdict holds for as long as its entry is
    pending, wherever a change moved it (a requeue_front puts another entry
    ahead of it). The ids are safe keys: *seen* keeps every entry alive, so no
    other object can have one of them while the mapping is used.
    """
    return {id(entry): verdict for entry, verdict in zip(seen, verdicts, strict=True)}


def _acquire_contended(lock: threading.Lock) -> None:
    """Take *lock* from another thread that holds it: yield a few times before blocking.

    Under the GIL a thread that blocks on a held lock sleeps in the OS, and
    must be woken and win the GIL back before it can run; with many producer
    threads every push turns into that handoff, a lock convoy (8 threads
    pushed about 6x slower in all than 1). Nothing under the inbox's lock
    blocks, so its holder is always about to release it: yielding the GIL
    lets it finish, and the lock is usually free at the next look. Past a
    few looks (the holder is descheduled, or runs a slow user clock) we block.
    """
    for _ in range(_POLITE_LOOKS):
        _yield_thread(0)
        if lock.acquire(False):
            return
    lock.acquire()


def _wake_all(waiters: list[Waiter]) -> None:
    for waiter in waiters:
        waiter.wake()


def _loop_running_here() -> bool:
    if trio.lowlevel.in_trio_run():
        return True
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
