"""The conformance kit: check `Inbox`, or an inbox of your own, against a reference model.

This module runs on hypothesis, an optional dependency: install the ``testing``
extra (``pip install 'harn-inbox[testing]'``) to import it.

The kit drives an inbox with random sequences of operations over several
sessions (pushes, drains, selective drains, requeues, clears, clock moves, and
waits parked in threads, under trio and under asyncio), checks every result
and every intermediate state against `InboxModel`, a plain reference model of
the contract, and ends each run by closing the inbox. When the inbox strays,
hypothesis shrinks the run to a minimal program of steps and reports it.

Hand the kit a *factory*: a callable of no arguments returning a new, empty
inbox and the `harn_inbox.ManualClock` it was built with. The kit moves that
clock to predict stamps and to end timed waits, so no verdict depends on the
wall clock. In a pytest suite::

    from harn_inbox import Inbox, ManualClock
    from harn_inbox.testing import run_conformance


    def make_inbox():
        clock = ManualClock(start_ms=1_000_000)
        return Inbox(clock=clock), clock


    def test_inbox_conforms():
        run_conformance(make_inbox)

The same works for any object with `Inbox`'s methods (see `InboxLike`): a
wrapper that adds persistence or metrics, or a new implementation.
"""

from __future__ import annotations

import asyncio
import atexit
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, final

try:
    from hypothesis import strategies as st
    from hypothesis.stateful import (
        Bundle,
        RuleBasedStateMachine,
        invariant,
        multiple,
        precondition,
        rule,
        run_state_machine_as_test,
    )
except ImportError as error:  # pragma: no cover
    raise ImportError(
        "harn_inbox.testing needs hypothesis; install it with the testing extra: "
        "pip install 'harn-inbox[testing]'"
    ) from error

import attrs
import trio

from ._clock import Clock, ManualClock, SystemClock
from ._entry import MAX_SEQUENCE, InboxEntry
from ._errors import InboxClosed, InboxError, InboxFull

if TYPE_CHECKING:
    import hypothesis
    from hypothesis.stateful import MultipleResults

__all__ = ["InboxLike", "InboxModel", "make_conformance_machine", "run_conformance"]

Overflow = Literal["reject", "drop_oldest"]


class InboxLike(Protocol):
    """The methods of `harn_inbox.Inbox` that the kit calls, with their signatures.

    `Inbox` satisfies it; so must an inbox of your own that you hand to
    `run_conformance`. Results typed as sequences may be any sequence; the
    kit compares their items.
    """

    def push(self, session_id: str, kind: str, content: str, source: str) -> InboxEntry: ...

    def requeue_front(self, entry: InboxEntry) -> None: ...

    def drain(self, session_id: str) -> Sequence[InboxEntry]: ...

    def drain_where(
        self, session_id: str, predicate: Callable[[InboxEntry], object]
    ) -> Sequence[InboxEntry]: ...

    def clear_session(self, session_id: str) -> int: ...

    def pending_count(self, session_id: str) -> int: ...

    def snapshot(self, session_id: str) -> Sequence[InboxEntry]: ...

    def sessions(self) -> Collection[str]: ...

    def waiter_count(self, session_id: str) -> int: ...

    def dropped(self, session_id: str) -> int: ...

    def wait_sync(self, session_id: str, timeout: float | None = None) -> bool: ...

    async def wait(self, session_id: str, timeout: float | None = None) -> bool: ...

    async def wait_for(
        self,
        session_id: str,
        predicate: Callable[[InboxEntry], object],
        timeout: float | None = None,
    ) -> Sequence[InboxEntry]: ...

    def close(self) -> None: ...


# -- The reference model --------------------------------------------------------------------------


def _check_bounds(max_pending: object, overflow: object) -> None:
    if max_pending is not None and (
        not isinstance(max_pending, int) or isinstance(max_pending, bool) or max_pending < 1
    ):
        raise ValueError(f"max_pending must be an int of at least 1 or None, not {max_pending!r}")
    if overflow not in ("reject", "drop_oldest"):
        raise ValueError(f"overflow must be 'reject' or 'drop_oldest', not {overflow!r}")


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
      accepted push (wrapping from 2**64-1 to 1), across drains, until
      `clear_session` restarts it;
    - ``ts_ms`` is the clock's ``now_ms()`` at the push;
    - with ``max_pending``, a push to a full session either raises `InboxFull`
      and stores nothing (``"reject"``) or discards the session's single
      oldest entry and counts it in `dropped` (``"drop_oldest"``);
      `requeue_front` may go beyond the bound;
    - after `close`, pushes raise `InboxClosed`; everything else still works.

    Args:
        clock: Where ``ts_ms`` comes from (only ``now_ms()`` is used).
        max_pending: The bound per session, or ``None`` for none.
        overflow: ``"reject"`` or ``"drop_oldest"``, as for `Inbox`.

    Raises:
        ValueError: ``max_pending`` is below 1, or ``overflow`` is not one of the two names.
    """

    clock: Clock = attrs.field(factory=SystemClock, kw_only=True)
    max_pending: int | None = attrs.field(default=None, kw_only=True)
    overflow: Overflow = attrs.field(default="reject", kw_only=True)
    _pending: dict[str, list[InboxEntry]] = attrs.field(init=False, factory=dict)
    _sequences: dict[str, int] = attrs.field(init=False, factory=dict)
    _dropped: dict[str, int] = attrs.field(init=False, factory=dict)
    _closed: bool = attrs.field(init=False, default=False)

    def __attrs_post_init__(self) -> None:
        _check_bounds(self.max_pending, self.overflow)

    def push(self, session_id: str, kind: str, content: str, source: str) -> InboxEntry:
        """Append an entry stamped with the next sequence and the clock's time; return it."""
        if self._closed:
            raise InboxClosed(f"push to session {session_id!r} after the inbox was closed")
        pending = self._pending.get(session_id, [])
        if self.max_pending is not None and len(pending) >= self.max_pending:
            if self.overflow == "reject":
                raise InboxFull(session_id, len(pending), self.max_pending)
            pending = pending[1:]
            self._dropped[session_id] = self._dropped.get(session_id, 0) + 1
        last = self._sequences.get(session_id, 0)
        sequence = 1 if last == MAX_SEQUENCE else last + 1
        entry = InboxEntry(sequence, session_id, kind, content, source, self.clock.now_ms())
        self._sequences[session_id] = sequence
        self._pending[session_id] = [*pending, entry]
        return entry

    def requeue_front(self, entry: InboxEntry) -> None:
        """Put *entry* first in its session; `ValueError` if its sequence is already pending."""
        pending = self._pending.get(entry.session_id, [])
        if any(queued.sequence == entry.sequence for queued in pending):
            raise ValueError(
                f"entry is already pending: session {entry.session_id!r} "
                f"holds sequence {entry.sequence}"
            )
        self._pending[entry.session_id] = [entry, *pending]

    def drain(self, session_id: str) -> list[InboxEntry]:
        """Take everything pending in *session_id*, oldest first."""
        return self._pending.pop(session_id, [])

    def drain_where(
        self, session_id: str, predicate: Callable[[InboxEntry], object]
    ) -> list[InboxEntry]:
        """Take the entries *predicate* holds true for, in order; keep the rest, in order.

        *predicate* is called once per pending entry, before anything changes,
        so if it raises, the exception propagates and nothing has changed.
        """
        pending = self._pending.get(session_id, [])
        verdicts = [bool(predicate(entry)) for entry in pending]
        taken = [entry for entry, verdict in zip(pending, verdicts, strict=True) if verdict]
        kept = [entry for entry, verdict in zip(pending, verdicts, strict=True) if not verdict]
        self._set_pending(session_id, kept)
        return taken

    def clear_session(self, session_id: str) -> int:
        """Drop *session_id*'s entries, sequence and dropped count; return how many entries."""
        self._sequences.pop(session_id, None)
        self._dropped.pop(session_id, None)
        return len(self._pending.pop(session_id, []))

    def pending_count(self, session_id: str) -> int:
        """How many entries *session_id* has pending."""
        return len(self._pending.get(session_id, []))

    def snapshot(self, session_id: str) -> list[InboxEntry]:
        """A copy of *session_id*'s pending entries, oldest first."""
        return list(self._pending.get(session_id, []))

    def sessions(self) -> list[str]:
        """The sessions with at least one entry pending."""
        return list(self._pending)

    def dropped(self, session_id: str) -> int:
        """How many entries ``"drop_oldest"`` discarded from *session_id* since it was cleared."""
        return self._dropped.get(session_id, 0)

    def close(self) -> None:
        """Refuse pushes from now on."""
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def _set_pending(self, session_id: str, entries: list[InboxEntry]) -> None:
        if entries:
            self._pending[session_id] = entries
        else:
            self._pending.pop(session_id, None)


# -- The machine's vocabulary: predicates, strategies, helper threads ------------------------------

_KINDS = ("tool_result", "progress", "")
_SOURCES = ("worker", "mcp")
_CONTENTS = ("", "ok", "dône ✓")

#: How many waits may be parked at once (each holds a thread or a task of a host loop).
_MAX_PARKED = 3
#: Real seconds a released wait may take to return before the kit calls it lost. Only a broken
#: inbox ever gets near this: a verdict never depends on it.
_SAFETY_SECONDS = 10.0
#: How often, and how patiently, to look at waiter_count() while a waiter parks.
_SPIN_LOOKS = 200
_POLL_LOOKS = 20_000
_POLL_SECONDS = 0.0005
#: Real seconds teardown gives each wait still parked to return once the inbox is closed.
_TEARDOWN_SECONDS = 1.0
#: Scheduler turns a waiter inside a loop may take to park.
_LOOP_TURNS = 10_000


@final
@attrs.frozen(repr=False)
class _Where:
    """A predicate over entries that prints as the lambda it is, for readable counterexamples."""

    expression: str
    test: Callable[[InboxEntry], object] = attrs.field(eq=False)

    def __call__(self, entry: InboxEntry) -> object:
        return self.test(entry)

    def __repr__(self) -> str:
        return f"lambda entry: {self.expression}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # hypothesis prints the steps of a counterexample with its own pretty
        # printer, which spells out attrs classes field by field unless told.
        printer.text(repr(self))


def _field_is(field: str, value: object) -> _Where:
    get = attrgetter(field)
    return _Where(f"entry.{field} == {value!r}", lambda entry: get(entry) == value)


def _negated(where: _Where) -> _Where:
    return _Where(f"not {where.expression}", lambda entry: not where.test(entry))


def _both(left: _Where, right: _Where) -> _Where:
    return _Where(
        f"{left.expression} and {right.expression}",
        lambda entry: left.test(entry) and right.test(entry),
    )


def _either(left: _Where, right: _Where) -> _Where:
    return _Where(
        f"{left.expression} or {right.expression}",
        lambda entry: left.test(entry) or right.test(entry),
    )


_ATOMS = (
    _Where("True", lambda entry: True),
    *(_field_is("kind", kind) for kind in _KINDS),
    *(_field_is("source", source) for source in _SOURCES),
    *(_field_is("content", content) for content in _CONTENTS),
    # Truthy, not bool: an inbox must go by truth value, not `is True`.
    _Where("entry.sequence % 2", lambda entry: entry.sequence % 2),
    _Where("entry.sequence % 2 == 0", lambda entry: entry.sequence % 2 == 0),
    _Where("entry.content", attrgetter("content")),
    _Where("False", lambda entry: False),
)
# Every predicate the kit uses, simplest first (hypothesis shrinks towards the front). One
# draw picks one: each draw costs a stateful step time, and a step's draws are most of it.
_PREDICATES = st.sampled_from(
    (
        *_ATOMS,
        *map(_negated, _ATOMS),
        *(_both(left, right) for left in _ATOMS for right in _ATOMS if left != right),
        *(_either(left, right) for left in _ATOMS for right in _ATOMS if left != right),
    )
)
_KIND = st.sampled_from(_KINDS)
_SOURCE = st.sampled_from(_SOURCES)
_CONTENT = st.sampled_from(_CONTENTS)
#: Wait timeouts in whole milliseconds of the ManualClock: None waits for ever, 0 just looks.
_TIMEOUT_MS = st.none() | st.integers(min_value=0, max_value=25)


@final
class _Judge:
    """Wraps a predicate and records the entries it was asked about."""

    def __init__(self, where: _Where) -> None:
        self.where = where
        self.judged: list[InboxEntry] = []

    def __call__(self, entry: InboxEntry) -> object:
        self.judged.append(entry)
        return self.where.test(entry)


class _PredicateFailed(Exception):
    """What the kit's failing predicate raises."""


@final
class _FailingJudge:
    """A predicate that answers like *where* until it meets *culprit*, then raises."""

    def __init__(self, where: _Where, culprit: InboxEntry) -> None:
        self.where = where
        self.culprit = culprit

    def __call__(self, entry: InboxEntry) -> object:
        if entry == self.culprit:
            raise _PredicateFailed(f"the kit's predicate fails on {entry!r}")
        return self.where.test(entry)


@final
class _Outcome:
    """What a call running elsewhere (a helper thread, a host loop) returned or raised."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._done = threading.Event()
        self._value: object = None
        self._error: BaseException | None = None

    def set(self, value: object) -> None:
        self._value = value
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def outcome(self) -> str:
        """What it returned or raised, for messages (only once done)."""
        if self._error is not None:
            return f"raised {self._error!r}"
        return f"returned {self._value!r}"

    def pause(self, seconds: float) -> None:
        """Sleep up to *seconds*, less if the call returns meanwhile."""
        self._done.wait(seconds)

    def result(self, seconds: float = _SAFETY_SECONDS) -> object:
        """What the call returned (re-raising what it raised), once it has returned."""
        if not self._done.wait(seconds):
            raise AssertionError(
                f"{self.description} had not returned {seconds:g} s (real time) after what "
                f"should have ended it: a lost wake-up?"
            )
        if self._error is not None:
            raise self._error
        return self._value


def _in_thread(description: str, function: Callable[[], object]) -> _Outcome:
    """Run *function* in a new daemon thread."""
    outcome = _Outcome(description)

    def run() -> None:
        try:
            value = function()
        except BaseException as error:  # handed to whoever asks for the result
            outcome.fail(error)
        else:
            outcome.set(value)

    threading.Thread(target=run, name=f"harn_inbox.testing: {description}", daemon=True).start()
    return outcome


_AsyncFunction = Callable[[], Awaitable[object]]


async def _settle(outcome: _Outcome, async_function: _AsyncFunction) -> None:
    try:
        value = await async_function()
    except Exception as error:
        outcome.fail(error)
    except BaseException as error:  # cancelled when the host stops: let it unwind
        outcome.fail(error)
        raise
    else:
        outcome.set(value)


_Cancel = Callable[[], None]


@final
class _TrioHost:
    """A trio run in a daemon thread where the kit's trio waits run as tasks.

    One per process, started on first use and stopped at exit: a trio run per
    wait, or per run of the machine, would cost more than the steps it serves.
    """

    def __init__(self) -> None:
        started = threading.Event()
        self._handle: tuple[trio.lowlevel.TrioToken, trio.Nursery] | None = None
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="harn_inbox.testing: trio host", daemon=True
        )
        self._thread.start()
        if not started.wait(_SAFETY_SECONDS):
            raise AssertionError("the conformance kit's trio host did not start")

    def _run(self, started: threading.Event) -> None:
        async def main() -> None:
            async with trio.open_nursery() as nursery:
                self._handle = (trio.lowlevel.current_trio_token(), nursery)
                started.set()
                await trio.sleep_forever()

        try:
            trio.run(main)
        except BaseException:  # a task's error is in its outcome already
            pass

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, description: str, async_function: _AsyncFunction) -> tuple[_Outcome, _Cancel]:
        assert self._handle is not None  # set before __init__ returns
        token, nursery = self._handle
        outcome = _Outcome(description)
        scope = trio.CancelScope()

        async def task() -> None:
            with scope:
                await _settle(outcome, async_function)

        def cancel() -> None:
            if not outcome.done:
                try:
                    token.run_sync_soon(scope.cancel)
                except trio.RunFinishedError:
                    pass

        token.run_sync_soon(nursery.start_soon, task)
        return outcome, cancel

    def stop(self) -> None:
        """Cancel whatever still runs and end the run."""
        assert self._handle is not None
        token, nursery = self._handle
        try:
            token.run_sync_soon(nursery.cancel_scope.cancel)
        except trio.RunFinishedError:
            pass
        self._thread.join(_TEARDOWN_SECONDS)


@final
class _AsyncioHost:
    """An asyncio loop in a daemon thread where the kit's asyncio waits run as tasks.

    One per process, like `_TrioHost`.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="harn_inbox.testing: asyncio host", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, description: str, async_function: _AsyncFunction) -> tuple[_Outcome, _Cancel]:
        outcome = _Outcome(description)
        tasks: list[asyncio.Task[None]] = []

        def spawn() -> None:
            tasks.append(self._loop.create_task(_settle(outcome, async_function)))

        def cancel() -> None:
            if not outcome.done:
                self._loop.call_soon_threadsafe(lambda: [task.cancel() for task in tasks])

        self._loop.call_soon_threadsafe(spawn)
        return outcome, cancel

    def stop(self) -> None:
        """Cancel whatever still runs, stop the loop and close it."""

        async def shutdown() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        self._loop.call_soon_threadsafe(self._loop.create_task, shutdown())
        self._thread.join(_TEARDOWN_SECONDS)
        if not self._thread.is_alive():
            self._loop.close()


_hosts_lock = threading.Lock()
_hosts: dict[str, _TrioHost | _AsyncioHost] = {}


def _host(framework: str) -> _TrioHost | _AsyncioHost:
    """The process's host loop for *framework*, started (again, if it died) on demand."""
    with _hosts_lock:
        host = _hosts.get(framework)
        if host is None or not host.alive:
            host = _hosts[framework] = _TrioHost() if framework == "trio" else _AsyncioHost()
            atexit.register(host.stop)
        return host


@final
class _Hosted:
    """One machine's calls in the host loops, to cancel those a broken inbox never ended."""

    def __init__(self) -> None:
        self._cancels: list[_Cancel] = []

    def run(self, framework: str, description: str, async_function: _AsyncFunction) -> _Outcome:
        outcome, cancel = _host(framework).submit(
            f"{description} under {framework}", async_function
        )
        self._cancels.append(cancel)
        return outcome

    def cancel(self) -> None:
        for cancel in self._cancels:
            cancel()
        self._cancels = []


def _start_wait(
    hosts: _Hosted,
    inbox: InboxLike,
    framework: str,
    session: str,
    timeout_ms: int | None,
    predicate: _Where | None = None,
) -> _Outcome:
    """Start ``wait_sync`` in a thread, or ``wait`` / ``wait_for`` as a task of a host loop."""
    timeout = None if timeout_ms is None else timeout_ms / 1000
    if predicate is not None:
        return hosts.run(
            framework,
            f"await inbox.wait_for({session!r}, {predicate!r}, timeout={timeout!r})",
            partial(inbox.wait_for, session, predicate, timeout),
        )
    if framework == "thread":
        return _in_thread(
            f"inbox.wait_sync({session!r}, timeout={timeout!r}) in a thread",
            partial(inbox.wait_sync, session, timeout),
        )
    return hosts.run(
        framework,
        f"await inbox.wait({session!r}, timeout={timeout!r})",
        partial(inbox.wait, session, timeout),
    )


def _returned_at_once(session: str, result: object) -> str:
    return (
        f"await inbox.wait({session!r}) returned {result!r} at once, though {session!r} had "
        f"nothing pending"
    )


async def _wait_then_push_trio(
    inbox: InboxLike, session: str, parked: int, push: Callable[[], InboxEntry]
) -> tuple[object, InboxEntry]:
    """In one trio run: park ``wait`` on *session*, then push from that run's own thread."""
    results: list[object] = []

    async def waiter() -> None:
        results.append(await inbox.wait(session))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        for _ in range(_LOOP_TURNS):
            if results:
                raise AssertionError(_returned_at_once(session, results[0]))
            if inbox.waiter_count(session) == parked:
                break
            await trio.lowlevel.checkpoint()
        else:
            raise AssertionError(f"await inbox.wait({session!r}) never parked under trio")
        entry = push()
    return results[0], entry


async def _wait_then_push_asyncio(
    inbox: InboxLike, session: str, parked: int, push: Callable[[], InboxEntry]
) -> tuple[object, InboxEntry]:
    """In one asyncio run: park ``wait`` on *session*, then push from that loop's own thread."""

    async def waiter() -> bool:
        return await inbox.wait(session)

    task = asyncio.get_running_loop().create_task(waiter())
    for _ in range(_LOOP_TURNS):
        if task.done():
            raise AssertionError(_returned_at_once(session, await task))
        if inbox.waiter_count(session) == parked:
            break
        await asyncio.sleep(0)
    else:
        task.cancel()
        raise AssertionError(f"await inbox.wait({session!r}) never parked under asyncio")
    entry = push()
    return await task, entry


async def _look_after_close(inbox: InboxLike, sessions: Sequence[str]) -> list[object]:
    """``wait`` (and, under trio, ``wait_sync`` in a worker thread) on each session, untimed."""
    looks: list[object] = []
    for session in sessions:
        if trio.lowlevel.in_trio_run():
            looks.append(
                await trio.to_thread.run_sync(
                    inbox.wait_sync, session, None, abandon_on_cancel=True
                )
            )
        looks.append(await inbox.wait(session))
    return looks


# -- What the machine saw: each rule records one, the invariants judge it --------------------------


@attrs.define(eq=False)
class _Parked:
    """A wait the model says is parked: who, on which session, and how long it has waited."""

    call: _Outcome
    session: str
    predicate: _Where | None  # None for wait / wait_sync
    timeout_ms: int | None
    elapsed_ms: int = 0


@attrs.frozen
class _Pushed:
    call: str
    clock_ms: int
    returned: InboxEntry | InboxError
    expected: InboxEntry | InboxError


@attrs.frozen
class _Pushes:
    pushes: list[_Pushed]


@attrs.frozen
class _Drained:
    session: str
    returned: list[InboxEntry]
    expected: list[InboxEntry]


@attrs.frozen
class _Partitioned:
    session: str
    predicate: _Where
    before: list[InboxEntry]
    taken: list[InboxEntry]
    kept: list[InboxEntry]
    judged: list[InboxEntry]


@attrs.frozen
class _Aborted:
    session: str
    predicate: _Where
    culprit: InboxEntry
    before: list[InboxEntry]
    outcome: list[InboxEntry] | _PredicateFailed
    after: list[InboxEntry]


@attrs.frozen
class _Requeued:
    entry: InboxEntry
    expected: ValueError | None
    raised: ValueError | None
    after: list[InboxEntry] | None  # None: a parked wait_for took it at once


@attrs.frozen
class _Cleared:
    session: str
    returned: int
    expected: int


_Seen = _Pushes | _Drained | _Partitioned | _Aborted | _Requeued | _Cleared | None


def _last_is(kind: type) -> Callable[[_InboxConformance], bool]:
    return lambda self: isinstance(self.last_seen, kind)


def _sessions(choose: Callable[[_InboxConformance], Sequence[str]]) -> st.SearchStrategy[str]:
    """One of the sessions *choose* picks in the machine's current state."""
    return st.runner().flatmap(lambda machine: st.sampled_from(choose(machine)))


@attrs.frozen
class _Config:
    factory: Callable[[], tuple[InboxLike, ManualClock]]
    session_ids: tuple[str, ...]
    max_pending: int | None
    overflow: Overflow


# -- The machine -----------------------------------------------------------------------------------


class _InboxConformance(RuleBasedStateMachine):
    """Drive an inbox and `InboxModel` side by side; see `make_conformance_machine`.

    Between steps every parked wait is parked for good (the kit has waited for
    its registration, or joined it once it was due to return), so the
    invariants look at a quiet inbox.
    """

    config: ClassVar[_Config]

    drained = Bundle("drained")

    def __init__(self) -> None:
        super().__init__()
        config = self.config
        inbox, clock = config.factory()
        if not isinstance(clock, ManualClock):
            raise TypeError(
                "the conformance factory must return (inbox, clock) with the ManualClock the "
                f"inbox was built with, not a {type(clock).__name__} for clock"
            )
        self.inbox: InboxLike = inbox
        self.clock = clock
        self.session_ids = config.session_ids
        self.model = InboxModel(
            clock=clock, max_pending=config.max_pending, overflow=config.overflow
        )
        for session in self.session_ids:
            if inbox.pending_count(session) or inbox.waiter_count(session):
                raise ValueError(
                    f"the conformance factory must return a new, empty inbox; session "
                    f"{session!r} has {inbox.pending_count(session)} entries pending and "
                    f"{inbox.waiter_count(session)} waiters"
                )
        self.parked: list[_Parked] = []
        self.hosts = _Hosted()
        self.issued: dict[str, list[int]] = {session: [] for session in self.session_ids}
        self.last_seen: _Seen = None

    # -- Producing ------------------------------------------------------------------------------

    @rule(
        session=_sessions(lambda self: self.session_ids),
        kind=_KIND,
        content=_CONTENT,
        source=_SOURCE,
        times=st.integers(min_value=1, max_value=3),
    )
    def push(self, session: str, kind: str, content: str, source: str, times: int) -> None:
        """Push *times* times from the machine's thread; parked waits of that session must wake.

        (Several pushes a step: hypothesis picks each rule about equally often,
        and the rules that take entries outnumber those that add them.)
        """
        self.last_seen = _Pushes([])
        for _ in range(times):
            self._push(
                session,
                kind,
                content,
                source,
                partial(self.inbox.push, session, kind, content, source),
            )

    @precondition(lambda self: bool(self._sessions_to_park_wait(empty=True)))
    @rule(
        framework=st.sampled_from(("trio", "asyncio")),
        session=_sessions(lambda self: self._sessions_to_park_wait(empty=True)),
        kind=_KIND,
        content=_CONTENT,
        source=_SOURCE,
    )
    def push_inside_waiting_loop(
        self, framework: str, session: str, kind: str, content: str, source: str
    ) -> None:
        """Park ``wait`` in a trio or asyncio run and push from inside that same run."""
        parked = sum(1 for waiter in self.parked if waiter.session == session) + 1
        push = partial(self.inbox.push, session, kind, content, source)
        run = _wait_then_push_trio if framework == "trio" else _wait_then_push_asyncio
        call = self.hosts.run(
            framework,
            f"await inbox.wait({session!r}), woken by a push from its own loop",
            partial(run, self.inbox, session, parked, push),
        )
        outcome = call.result()
        assert isinstance(outcome, tuple)
        result, entry = outcome
        if result is not True:
            raise AssertionError(f"{call.description} returned {result!r}; it must return True")
        self.last_seen = _Pushes([])
        self._push(session, kind, content, source, lambda: entry)

    def _push(
        self,
        session: str,
        kind: str,
        content: str,
        source: str,
        attempt: Callable[[], InboxEntry],
    ) -> None:
        clock_ms = self.clock.now_ms()
        expected: InboxEntry | InboxError
        returned: InboxEntry | InboxError
        try:
            expected = self.model.push(session, kind, content, source)
        except InboxError as error:
            expected = error
        try:
            returned = attempt()
        except InboxError as error:  # InboxFull, InboxClosed: the invariant judges it
            returned = error
        assert isinstance(self.last_seen, _Pushes)
        self.last_seen.pushes.append(
            _Pushed(
                f"push({session!r}, {kind!r}, {content!r}, {source!r})",
                clock_ms,
                returned,
                expected,
            )
        )
        if isinstance(returned, InboxEntry):
            self.issued[session].append(returned.sequence)
            if isinstance(expected, InboxEntry):
                self._wake(session)
        else:
            self._await_parked(session)  # refused: nobody may have woken for good

    @rule(entry=drained)
    def requeue_front(self, entry: InboxEntry) -> None:
        """Put a drained entry back; its session's parked waits must wake."""
        expected: ValueError | None = None
        raised: ValueError | None = None
        try:
            self.model.requeue_front(entry)
        except ValueError as error:
            expected = error
        try:
            self.inbox.requeue_front(entry)
        except ValueError as error:
            raised = error
        # A parked wait_for that matches takes the entry as soon as it is in: then
        # where it landed shows in what that wait returns (see _wake), not here.
        session = entry.session_id
        taker = any(
            waiter.session == session
            and waiter.predicate is not None
            and any(map(waiter.predicate, self.model.snapshot(session)))
            for waiter in self.parked
        )
        after = None if taker else list(self.inbox.snapshot(session))
        self.last_seen = _Requeued(entry, expected, raised, after)
        if expected is None and raised is None:
            self._wake(session)
        else:
            self._await_parked(session)

    # -- Consuming ------------------------------------------------------------------------------

    @rule(target=drained, session=_sessions(lambda self: self.session_ids))
    def drain(self, session: str) -> MultipleResults[InboxEntry]:
        """Drain a session; what it returns may be requeued later."""
        expected = self.model.drain(session)
        returned = list(self.inbox.drain(session))
        self.last_seen = _Drained(session, returned, expected)
        return multiple(*returned)

    @rule(
        target=drained,
        session=_sessions(lambda self: self.session_ids),
        predicate=_PREDICATES,
    )
    def drain_where(self, session: str, predicate: _Where) -> MultipleResults[InboxEntry]:
        """Take the entries a generated predicate holds true for; count how often it is asked."""
        before = self.model.snapshot(session)
        judge = _Judge(predicate)
        taken = list(self.inbox.drain_where(session, judge))
        self.model.drain_where(session, predicate)
        kept = list(self.inbox.snapshot(session))
        self.last_seen = _Partitioned(session, predicate, before, taken, kept, judge.judged)
        return multiple(*taken)

    @precondition(lambda self: bool(self.model.sessions()))
    @rule(
        session=_sessions(lambda self: self._sessions_pending()),
        predicate=_PREDICATES,
        culprit=st.integers(min_value=0, max_value=7),
    )
    def drain_where_raises(self, session: str, predicate: _Where, culprit: int) -> None:
        """A predicate that raises on the *culprit*-th pending entry (modulo their number)."""
        before = self.model.snapshot(session)
        judge = _FailingJudge(predicate, before[culprit % len(before)])
        outcome: list[InboxEntry] | _PredicateFailed
        try:
            outcome = list(self.inbox.drain_where(session, judge))
        except _PredicateFailed as error:
            outcome = error
        after = list(self.inbox.snapshot(session))
        self.last_seen = _Aborted(session, predicate, judge.culprit, before, outcome, after)

    @rule(session=_sessions(lambda self: self.session_ids))
    def clear_session(self, session: str) -> None:
        """Clear a session; its parked waits must return False (``wait_for``: ``[]``)."""
        expected = self.model.clear_session(session)
        returned = self.inbox.clear_session(session)
        self.issued[session] = []
        self.last_seen = _Cleared(session, returned, expected)
        self._release(
            [waiter for waiter in self.parked if waiter.session == session],
            f"clear_session({session!r})",
        )

    @rule(session=_sessions(lambda self: self.session_ids))
    def mutate_snapshot(self, session: str) -> None:
        """Take a snapshot and scribble on it: the inbox must not notice (the invariants look)."""
        copy = self.inbox.snapshot(session)
        if isinstance(copy, list):
            copy.clear()
        self.last_seen = None

    # -- Time and waiting -----------------------------------------------------------------------

    @rule(ms=st.integers(min_value=0, max_value=25))
    def advance_clock(self, ms: int) -> None:
        """Move the ManualClock; exactly the waits whose timeout has passed must return."""
        self.clock.advance(ms / 1000)
        due = []
        for waiter in self.parked:
            waiter.elapsed_ms += ms
            if waiter.timeout_ms is not None and waiter.elapsed_ms >= waiter.timeout_ms:
                due.append(waiter)
        self.last_seen = None
        self._release(due, f"its timeout passed on the clock (advance({ms / 1000!r}))")

    @precondition(
        lambda self: len(self.parked) < _MAX_PARKED and bool(self._sessions_to_park_wait())
    )
    @rule(
        framework=st.sampled_from(("thread", "trio", "asyncio")),
        session=_sessions(lambda self: self._sessions_to_park_wait()),
        timeout_ms=_TIMEOUT_MS,
    )
    def start_wait(self, framework: str, session: str, timeout_ms: int | None) -> None:
        """Start ``wait_sync`` / ``wait``: it returns at once if entries are pending, else parks."""
        call = _start_wait(self.hosts, self.inbox, framework, session, timeout_ms)
        pending = self.model.pending_count(session)
        if pending or timeout_ms == 0:
            result = call.result()
            if result is not bool(pending):
                raise AssertionError(
                    f"{call.description} returned {result!r} with {pending} entries pending; "
                    f"it must return {bool(pending)} at once"
                )
        else:
            self.parked.append(_Parked(call, session, None, timeout_ms))
        self.last_seen = None
        self._await_parked(session)

    @precondition(
        lambda self: len(self.parked) < _MAX_PARKED and bool(self._sessions_to_park_wait_for())
    )
    @rule(
        target=drained,
        framework=st.sampled_from(("trio", "asyncio")),
        session=_sessions(lambda self: self._sessions_to_park_wait_for()),
        predicate=_PREDICATES,
        timeout_ms=_TIMEOUT_MS,
    )
    def start_wait_for(
        self, framework: str, session: str, predicate: _Where, timeout_ms: int | None
    ) -> MultipleResults[InboxEntry]:
        """Start ``wait_for``: it takes matching entries at once if there are any, else parks."""
        call = _start_wait(self.hosts, self.inbox, framework, session, timeout_ms, predicate)
        self.last_seen = None
        if timeout_ms == 0 or any(map(predicate, self.model.snapshot(session))):
            expected = self.model.drain_where(session, predicate)
            taken = self._taken(call, expected, "with matching entries pending")
            self._await_parked(session)
            return multiple(*taken)
        self.parked.append(_Parked(call, session, predicate, timeout_ms))
        self._await_parked(session)
        return multiple()

    # -- Invariants, named so that the specific ones run first --------------------------------

    @precondition(_last_is(_Cleared))
    @invariant()
    def clear_session_counts_what_it_dropped(self) -> None:
        seen = self.last_seen
        assert isinstance(seen, _Cleared)
        if seen.returned != seen.expected:
            raise AssertionError(
                f"clear_session({seen.session!r}) returned {seen.returned!r}; "
                f"it dropped {seen.expected} pending entries"
            )

    @precondition(_last_is(_Drained))
    @invariant()
    def drain_takes_all_in_order(self) -> None:
        seen = self.last_seen
        assert isinstance(seen, _Drained)
        if seen.returned != seen.expected:
            raise AssertionError(
                f"drain({seen.session!r}) returned {seen.returned!r}; it must return every "
                f"pending entry, oldest first: {seen.expected!r}"
            )

    @precondition(_last_is(_Partitioned))
    @invariant()
    def drain_where_partitions(self) -> None:
        seen = self.last_seen
        assert isinstance(seen, _Partitioned)
        call = f"drain_where({seen.session!r}, {seen.predicate!r})"
        twice = Counter(seen.judged) - Counter(seen.before)
        if twice:
            raise AssertionError(
                f"{call} asked its predicate about {sorted(twice, key=repr)!r} more than once "
                f"per pending entry: {seen.judged!r}"
            )
        matching = [entry for entry in seen.before if seen.predicate(entry)]
        others = [entry for entry in seen.before if not seen.predicate(entry)]
        if seen.taken != matching:
            raise AssertionError(
                f"{call} took {seen.taken!r} from {seen.before!r}; it must take exactly "
                f"the matching entries, in their order: {matching!r}"
            )
        if seen.kept != others:
            raise AssertionError(
                f"after {call}, the session holds {seen.kept!r}; the entries that did not "
                f"match must stay, in their order: {others!r}"
            )

    @precondition(_last_is(_Requeued))
    @invariant()
    def entry_requeued_at_head(self) -> None:
        seen = self.last_seen
        assert isinstance(seen, _Requeued)
        call = f"requeue_front({seen.entry!r})"
        if seen.expected is not None:
            if seen.raised is None:
                raise AssertionError(
                    f"{call} must raise ValueError: sequence {seen.entry.sequence} is "
                    f"already pending in session {seen.entry.session_id!r}"
                )
        elif seen.raised is not None:
            raise AssertionError(
                f"{call} raised {seen.raised!r}, but no entry with sequence "
                f"{seen.entry.sequence} is pending in session {seen.entry.session_id!r}"
            )
        elif seen.after is not None and seen.after[:1] != [seen.entry]:
            raise AssertionError(
                f"after {call}, the session holds {seen.after!r}; the requeued entry must "
                f"come first, unchanged"
            )

    @precondition(_last_is(_Aborted))
    @invariant()
    def failing_predicate_changes_nothing(self) -> None:
        seen = self.last_seen
        assert isinstance(seen, _Aborted)
        call = f"drain_where({seen.session!r}, {seen.predicate!r} raising on {seen.culprit!r})"
        if not isinstance(seen.outcome, _PredicateFailed):
            raise AssertionError(
                f"{call} returned {seen.outcome!r}; the predicate's exception must propagate"
            )
        if seen.after != seen.before:
            raise AssertionError(
                f"after {call} raised, the session holds {seen.after!r}; a raising predicate "
                f"must leave it as it was: {seen.before!r}"
            )

    @precondition(_last_is(_Pushes))
    @invariant()
    def push_stamps_entries(self) -> None:
        assert isinstance(self.last_seen, _Pushes)
        for seen in self.last_seen.pushes:
            returned, expected = seen.returned, seen.expected
            if isinstance(expected, InboxError):
                if not isinstance(returned, type(expected)):
                    raise AssertionError(
                        f"{seen.call} must raise {type(expected).__name__} ({expected}), "
                        f"not give {returned!r}"
                    )
                continue
            if isinstance(returned, InboxError):
                raise AssertionError(f"{seen.call} raised {returned!r}; it must accept the entry")
            if returned.sequence != expected.sequence:
                raise AssertionError(
                    f"{seen.call} gave sequence {returned.sequence}, not {expected.sequence}: "
                    f"a session's sequences start at 1 and go up by one per push, drained or "
                    f"not, until clear_session"
                )
            if returned.ts_ms != seen.clock_ms:
                raise AssertionError(
                    f"{seen.call} stamped ts_ms={returned.ts_ms}, but the inbox's clock read "
                    f"{seen.clock_ms} at the push"
                )
            if returned != expected:
                raise AssertionError(f"{seen.call} returned {returned!r}, not {expected!r}")

    @invariant()
    def sequences_are_gapless(self) -> None:
        for session, issued in self.issued.items():
            if issued != list(range(1, len(issued) + 1)):
                raise AssertionError(
                    f"session {session!r} was given the sequences {issued!r} since it was "
                    f"last cleared; they must run 1, 2, 3, ... without gaps"
                )

    @invariant()
    def sessions_match_model(self) -> None:
        listed = list(self.inbox.sessions())
        expected = self.model.sessions()
        if sorted(listed) != sorted(expected):
            raise AssertionError(
                f"sessions() is {listed!r}; the sessions with entries pending are {expected!r}"
            )

    @invariant()
    def state_matches_model(self) -> None:
        for session in self.session_ids:
            held = list(self.inbox.snapshot(session))
            expected = self.model.snapshot(session)
            if held != expected:
                raise AssertionError(
                    f"session {session!r} holds {held!r}; the model holds {expected!r}"
                )
            count = self.inbox.pending_count(session)
            if count != len(expected):
                raise AssertionError(
                    f"pending_count({session!r}) is {count}; {len(expected)} entries are pending"
                )
            dropped = self.inbox.dropped(session)
            if dropped != self.model.dropped(session):
                raise AssertionError(
                    f"dropped({session!r}) is {dropped}; drop_oldest discarded "
                    f"{self.model.dropped(session)} entries since the session was last cleared"
                )

    @invariant()
    def waiters_match_model(self) -> None:
        for waiter in self.parked:
            if waiter.call.done:
                raise AssertionError(
                    f"{waiter.call.description} {waiter.call.outcome()}, but nothing that "
                    f"ends it happened: no push to its session, no clear, no timeout"
                )
        for session in self.session_ids:
            count = self.inbox.waiter_count(session)
            expected = [waiter for waiter in self.parked if waiter.session == session]
            if count != len(expected):
                raise AssertionError(
                    f"waiter_count({session!r}) is {count}; parked on it: "
                    f"{[waiter.call.description for waiter in expected]!r}"
                )

    # -- The end of a run: close ------------------------------------------------------------------

    def teardown(self) -> None:
        """End the run by closing the inbox, and check what closing promises.

        Unless a step failed already: teardown() runs in hypothesis' ``finally:``,
        and a second failure would only bury the report of the first.
        """
        try:
            if sys.exc_info()[1] is None:  # no exception in flight: the run went well
                self._check_close()
        finally:
            try:
                self.inbox.close()
            except Exception:  # cleanup only: the verdict is in already
                pass
            for waiter in self.parked:
                waiter.call.pause(_TEARDOWN_SECONDS)
            self.parked = []
            self.hosts.cancel()

    def _check_close(self) -> None:
        inbox = self.inbox
        inbox.close()
        inbox.close()  # idempotent
        self.model.close()
        released, self.parked = self.parked, []
        for waiter in released:
            self._expect_empty_result(waiter, "close()")
        for session in self.session_ids:
            count = inbox.waiter_count(session)
            if count:
                raise AssertionError(f"after close(), waiter_count({session!r}) is {count}")
            try:
                inbox.push(session, "late", "", "harn_inbox.testing")
            except InboxClosed:
                pass
            else:
                raise AssertionError(f"push({session!r}, ...) after close() must raise InboxClosed")
        pending = [bool(self.model.pending_count(session)) for session in self.session_ids]
        for framework, calls in (("trio", 2), ("asyncio", 1)):
            look = self.hosts.run(
                framework,
                "wait_sync() and wait() on each session after close(), with no timeout",
                partial(_look_after_close, inbox, self.session_ids),
            )
            promised = [flag for flag in pending for _ in range(calls)]
            if (looked := look.result()) != promised:
                raise AssertionError(
                    f"{look.description} returned {looked!r} for {list(self.session_ids)!r}; "
                    f"each must return at once, True only if entries are pending: {promised!r}"
                )
        for session in self.session_ids:
            drained = list(inbox.drain(session))
            expected = self.model.drain(session)
            if drained != expected:
                raise AssertionError(
                    f"after close(), drain({session!r}) returned {drained!r}; what was queued "
                    f"must still be there: {expected!r}"
                )
            if drained:
                inbox.requeue_front(drained[0])
                again = list(inbox.drain(session))
                if again != drained[:1]:
                    raise AssertionError(
                        f"after close(), requeue_front({drained[0]!r}) then drain({session!r}) "
                        f"gave {again!r}; requeue_front must still work"
                    )

    # -- Helpers -----------------------------------------------------------------------------------

    # These return tuples: hypothesis caches sampled_from() of a tuple, not of a list.

    def _sessions_pending(self) -> tuple[str, ...]:
        return tuple(s for s in self.session_ids if self.model.pending_count(s))

    def _sessions_to_park_wait(self, *, empty: bool = False) -> tuple[str, ...]:
        # A plain wait never shares a session with a wait_for: when a push matches,
        # which of the two looks first (and so what the plain one sees) is a race.
        return tuple(
            s
            for s in self.session_ids
            if not any(w.session == s and w.predicate is not None for w in self.parked)
            and not (empty and self.model.pending_count(s))
        )

    def _sessions_to_park_wait_for(self) -> tuple[str, ...]:
        # At most one wait_for per session, alone, for the same reason.
        return tuple(s for s in self.session_ids if not any(w.session == s for w in self.parked))

    def _taken(self, call: _Outcome, expected: list[InboxEntry], why: str) -> list[InboxEntry]:
        result = call.result()
        taken = list(result) if isinstance(result, Sequence) else result
        if taken != expected:
            raise AssertionError(
                f"{call.description} returned {result!r} {why}; it must take exactly the "
                f"matching entries, in order: {expected!r}"
            )
        return expected

    def _wake(self, session: str) -> None:
        """*session* just gained entries: settle its parked waits as the model says."""
        still = []
        for waiter in self.parked:
            if waiter.session != session:
                still.append(waiter)
            elif waiter.predicate is None:
                result = waiter.call.result()
                if result is not True:
                    raise AssertionError(
                        f"{waiter.call.description} returned {result!r} after a push to its "
                        f"session; it must return True"
                    )
            elif any(map(waiter.predicate, self.model.snapshot(session))):
                expected = self.model.drain_where(session, waiter.predicate)
                self._taken(waiter.call, expected, "once a matching entry was pushed")
            else:
                still.append(waiter)  # woken, perhaps, but it must park again
        self.parked = still
        self._await_parked(session)

    def _release(self, released: list[_Parked], why: str) -> None:
        """*released* must return empty-handed (False, or [] for wait_for) because of *why*."""
        for waiter in released:
            self.parked.remove(waiter)
            self._expect_empty_result(waiter, why)
        for session in {waiter.session for waiter in released}:
            self._await_parked(session)

    def _expect_empty_result(self, waiter: _Parked, why: str) -> None:
        result = waiter.call.result()
        if waiter.predicate is None:
            ok, promised = result is False, "False"
        else:
            ok, promised = isinstance(result, Sequence) and not result, "[]"
        if not ok:
            raise AssertionError(
                f"{waiter.call.description} returned {result!r} after {why}; "
                f"it must return {promised}"
            )

    def _await_parked(self, session: str) -> None:
        """Wait until *session*'s waiter_count() is what the model says; fail if one returns."""
        parked = [waiter for waiter in self.parked if waiter.session == session]
        for look in range(_SPIN_LOOKS + _POLL_LOOKS):
            if self.inbox.waiter_count(session) == len(parked):
                return
            for waiter in parked:
                if waiter.call.done:
                    raise AssertionError(
                        f"{waiter.call.description} {waiter.call.outcome()}, though nothing it "
                        f"waits for has happened"
                    )
            if look < _SPIN_LOOKS:
                time.sleep(0)  # let the waiter's thread run
            elif parked:
                parked[0].call.pause(_POLL_SECONDS)
            else:
                time.sleep(_POLL_SECONDS)
        raise AssertionError(
            f"waiter_count({session!r}) is {self.inbox.waiter_count(session)}; parked on it: "
            f"{[waiter.call.description for waiter in parked]!r}"
        )


# -- The public entry points -----------------------------------------------------------------------


def make_conformance_machine(
    factory: Callable[[], tuple[InboxLike, ManualClock]],
    *,
    sessions: Sequence[str] = ("a", "b", ""),
    max_pending: int | None = None,
    overflow: Overflow = "reject",
) -> type[RuleBasedStateMachine]:
    """Build the conformance state machine for the inboxes *factory* makes.

    The result is an ordinary hypothesis ``RuleBasedStateMachine`` class: run
    it with `run_conformance`, with ``hypothesis.stateful.run_state_machine_as_test``,
    or collect its ``.TestCase`` (``TestMyInbox = machine.TestCase``). Each run
    calls *factory* once and drives the inbox from the test's thread. Waits
    run elsewhere, so that their wake-ups cross threads: ``wait_sync`` in a
    thread of its own, ``wait`` and ``wait_for`` as tasks of a trio run and of
    an asyncio loop that the kit keeps in daemon threads (one of each per
    process, started on first use and stopped at exit).

    Steps: ``push``; ``push_inside_waiting_loop`` (a wait woken from its own
    loop); ``drain``; ``drain_where`` with generated predicates;
    ``drain_where_raises`` (a predicate that raises part-way); ``requeue_front``
    of an entry drained earlier; ``clear_session``; ``mutate_snapshot``;
    ``advance_clock``; ``start_wait`` and ``start_wait_for`` (they return at
    once when they should, else park until a push or requeue to their
    session, a clear, their timeout on the clock, or the close). At most
    three waits are parked at a time.

    After every step: each result matches `InboxModel` (sequences gapless from
    1, ``ts_ms`` read from the clock at the push, drain in FIFO order,
    drain_where taking exactly the matching entries in order and keeping the
    rest in order, asking its predicate at most once per entry, a raising
    predicate changing nothing, a requeued entry first); ``snapshot``,
    ``pending_count``, ``dropped`` and ``sessions()`` agree with the model; and
    every wait the model calls parked is still parked (a push to another
    session, a drain or a clock move short of its timeout never ends it).

    At the end of each run the machine closes the inbox and checks that parked
    waits return empty-handed, pushes raise `InboxClosed`, waits return at once,
    ``drain`` still returns what was queued and ``requeue_front`` still works.

    Timeouts are whole milliseconds on the `ManualClock`, so whether a wait
    has timed out never depends on the wall clock. Real time only bounds how
    long the kit waits for a thread to park or return (10 s; only a broken
    inbox, one that loses a wake-up, gets there).

    Args:
        factory: Called once per run, with no arguments; returns a new, empty
            inbox and the `ManualClock` it reads. The kit advances that clock.
        sessions: The session ids to use; ``""`` is a good one to keep.
        max_pending: The ``max_pending`` the factory's inboxes were built with.
        overflow: The ``overflow`` the factory's inboxes were built with.

    Raises:
        TypeError: *factory* is not callable, or *sessions* holds a non-str.
        ValueError: *sessions* is empty or repeats an id, or ``max_pending``
            or ``overflow`` is invalid.
    """
    if not callable(factory):
        raise TypeError(f"factory must be callable, not {type(factory).__name__}")
    if isinstance(sessions, str):
        raise TypeError("sessions must be a sequence of str, not a str")
    session_ids = tuple(sessions)
    for session in session_ids:
        if not isinstance(session, str):
            raise TypeError(f"sessions must hold str, not {type(session).__name__}")
    if not session_ids or len(set(session_ids)) != len(session_ids):
        raise ValueError(f"sessions must be one or more distinct ids, not {session_ids!r}")
    _check_bounds(max_pending, overflow)

    class InboxConformance(_InboxConformance):
        config = _Config(factory, session_ids, max_pending, overflow)

    InboxConformance.__doc__ = (
        f"Conformance of the inboxes of {factory!r} (max_pending={max_pending!r}, "
        f"overflow={overflow!r}) to harn_inbox.testing.InboxModel."
    )
    return InboxConformance


def run_conformance(
    factory: Callable[[], tuple[InboxLike, ManualClock]],
    *,
    sessions: Sequence[str] = ("a", "b", ""),
    max_pending: int | None = None,
    overflow: Overflow = "reject",
    settings: hypothesis.settings | None = None,
) -> None:
    """Check the inboxes *factory* makes against the model; raise on the first mismatch.

    Call it from a test function. It returns quietly when the inbox conforms;
    otherwise it raises the failure (an ``AssertionError`` saying which
    promise broke, or whatever the inbox raised) after hypothesis has shrunk
    it, and prints the minimal program of steps that reproduces it.

    Args:
        factory, sessions, max_pending, overflow: As for `make_conformance_machine`.
        settings: hypothesis settings for the run. By default, the loaded
            profile with no deadline and no health checks, as for a
            ``RuleBasedStateMachine.TestCase``. ``max_examples`` (runs) and
            ``stateful_step_count`` (steps per run) set its length; a step
            costs about 0.7 ms, mostly hypothesis' own choosing. Settings of
            your own are used as given (a deadline there bounds each run's
            setup and closing, not its steps).

    Raises:
        AssertionError: The inbox broke a promise of the contract.
    """
    machine = make_conformance_machine(
        factory, sessions=sessions, max_pending=max_pending, overflow=overflow
    )
    run_state_machine_as_test(machine, settings=settings)
