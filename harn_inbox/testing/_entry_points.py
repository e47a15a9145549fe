"""The public entry points: `make_conformance_machine` and `run_conformance`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypothesis.stateful import run_state_machine_as_test

# Imported under the names they had when the kit was one module, so that the class statement in
# make_conformance_machine reads as it did: hypothesis keys its example database on that text,
# and with derandomize=True seeds each run from it.
from ._machine import ConformanceMachine as _InboxConformance
from ._machine import MachineConfig as _Config
from ._model import check_bounds

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    import hypothesis
    from hypothesis.stateful import RuleBasedStateMachine

    from .._clock import ManualClock
    from .._protocol import InboxLike
    from ._model import Overflow


def make_conformance_machine(
    factory: Callable[[], tuple[InboxLike, ManualClock]],
    *,
    sessions: Sequence[str] = ("a", "b", ""),
    max_pending: int | None = None,
    overflow: Overflow = "reject",
    dedupe_window: float = 600,
    reopen: Callable[[InboxLike, ManualClock], InboxLike] | None = None,
) -> type[RuleBasedStateMachine]:
    """Build the conformance state machine for the inboxes *factory* makes.

    The result is an ordinary hypothesis ``RuleBasedStateMachine`` class: run
    it with `run_conformance`, with ``hypothesis.stateful.run_state_machine_as_test``,
    or collect its ``.TestCase`` (``TestMyInbox = machine.TestCase``). Each run
    calls *factory* once and drives the inbox from the test's thread. Waits
    run elsewhere, so that their wake-ups cross threads: ``wait_sync`` and
    ``wait_any_sync`` in a thread of their own, ``wait``, ``wait_for`` and
    ``wait_any`` as tasks of a trio run and of an asyncio loop that the kit
    keeps in daemon threads (one of each per process, started on first use and
    stopped at exit).

    Steps:

    - producing: ``push``; ``push_with_keywords`` (a JSON payload, a
      delivery, a dedupe key, a coalesce key, an expiry: one push or several
      with the same ones); ``push_inside_waiting_loop`` (a wait woken from its
      own loop); ``reserve_sequence``; ``requeue_front`` of an entry taken
      earlier;
    - consuming: ``drain``; ``drain_where`` with generated predicates;
      ``drain_where_raises`` (a predicate that raises part-way); ``revoke``;
      ``claim`` (a block held open across steps, at most one per session and
      two in all) and ``end_claim`` (the block ends normally, or raises);
      ``claim_in_loop`` (``async with inbox.claim(...)`` under trio or asyncio,
      raising or not); ``clear_session``; ``mutate_snapshot``;
    - time and waiting: ``advance_clock`` (a few ms) and
      ``advance_clock_to_deadline`` (to when an entry expires or a dedupe
      window closes, or 1 ms short); ``start_wait``, ``start_wait_for`` (with
      a ``limit`` or not) and ``start_wait_any``: they return at once when
      they should, else park until a push (or requeue, or failed claim) to
      their sessions, a clear (of all of them, for ``wait_any``), their
      timeout on the clock, or the close. At most three waits are parked at a
      time.
    - restarting: ``reopen``, if *reopen* is given, when no wait is parked and
      no claim held.

    After every step: each result matches `InboxModel` (sequences gapless
    from 1 across pushes and reservations, ``ts_ms`` read from the clock at
    the push, payloads as pushed down to their JSON types, a duplicate
    returning the first push's entry and storing nothing, drain in FIFO
    order, drain_where taking exactly the matching entries in order and
    keeping the rest in order, asking its predicate at most once per entry, a
    raising predicate changing nothing, a requeued entry first, revoke and
    claims taking what the model says, a failed claim's entries back first
    with their coalesce key and expiry, wait_for taking its first ``limit``
    matches, no expired entry ever returned); ``snapshot``,
    ``pending_count``, ``dropped``, ``sessions()`` and every counter of
    ``statistics()`` agree with the model; and every wait the model calls
    parked is still parked (a push to another session, a drain or a clock
    move short of its timeout never ends it).

    At the end of each run the machine closes the inbox and checks that parked
    waits return empty-handed, pushes and ``reserve_sequence`` raise
    `InboxClosed`, claims still held can give their entries back, waits return
    at once, ``drain`` still returns what was queued and ``requeue_front``
    still works.

    Timeouts, expiries and dedupe windows are whole milliseconds on the
    `ManualClock`, so no verdict depends on the wall clock. Real time only
    bounds how long the kit waits for a thread to park or return (10 s; only
    a broken inbox, one that loses a wake-up, gets there).

    Args:
        factory: Called once per run, with no arguments; returns a new, empty
            inbox and the `ManualClock` it reads. The kit advances that clock.
        sessions: The session ids to use; ``""`` is a good one to keep.
        max_pending: The ``max_pending`` the factory's inboxes were built with.
        overflow: The ``overflow`` the factory's inboxes were built with.
        dedupe_window: The ``dedupe_window`` the factory's inboxes were built with.
        reopen: For a store whose state survives a restart: called with the
            inbox in use (to release it) and the clock, it returns a new inbox
            on the same state. The model says a reopen changes nothing: the
            same entries pending in the same order with their payloads, the
            same sequence counters (the next push continues), dedupe keys
            (within their window) and counters.

    Raises:
        TypeError: *factory* or *reopen* is not callable, or *sessions* holds
            a non-str.
        ValueError: *sessions* is empty or repeats an id, or ``max_pending``,
            ``overflow`` or ``dedupe_window`` is invalid.
    """
    if not callable(factory):
        raise TypeError(f"factory must be callable, not {type(factory).__name__}")
    if reopen is not None and not callable(reopen):
        raise TypeError(f"reopen must be callable or None, not {type(reopen).__name__}")
    if isinstance(sessions, str):
        raise TypeError("sessions must be a sequence of str, not a str")
    session_ids = tuple(sessions)
    for session in session_ids:
        if not isinstance(session, str):
            raise TypeError(f"sessions must hold str, not {type(session).__name__}")
    if not session_ids or len(set(session_ids)) != len(session_ids):
        raise ValueError(f"sessions must be one or more distinct ids, not {session_ids!r}")
    check_bounds(max_pending, overflow, dedupe_window)

    class InboxConformance(_InboxConformance):
        config = _Config(factory, session_ids, max_pending, overflow, dedupe_window, reopen)

    InboxConformance.__doc__ = (
        f"Conformance of the inboxes of {factory!r} (max_pending={max_pending!r}, "
        f"overflow={overflow!r}, dedupe_window={dedupe_window!r}, reopen={reopen!r}) "
        f"to harn_inbox.testing.InboxModel."
    )
    return InboxConformance


def run_conformance(
    factory: Callable[[], tuple[InboxLike, ManualClock]],
    *,
    sessions: Sequence[str] = ("a", "b", ""),
    max_pending: int | None = None,
    overflow: Overflow = "reject",
    dedupe_window: float = 600,
    reopen: Callable[[InboxLike, ManualClock], InboxLike] | None = None,
    settings: hypothesis.settings | None = None,
) -> None:
    """Check the inboxes *factory* makes against the model; raise on the first mismatch.

    Call it from a test function. It returns quietly when the inbox conforms;
    otherwise it raises the failure (an ``AssertionError`` saying which
    promise broke, or whatever the inbox raised) after hypothesis has shrunk
    it, and prints the minimal program of steps that reproduces it. What it
    checks: see `make_conformance_machine`.

    Args:
        factory, sessions, max_pending, overflow, dedupe_window, reopen: As for
            `make_conformance_machine`.
        settings: hypothesis settings for the run. By default, the loaded
            profile with no deadline and no health checks, as for a
            ``RuleBasedStateMachine.TestCase``. ``max_examples`` (runs) and
            ``stateful_step_count`` (steps per run) set its length; a step
            costs about 1 ms, mostly hypothesis' own choosing. Settings of
            your own are used as given (a deadline there bounds each run's
            setup and closing, not its steps).

    Raises:
        AssertionError: The inbox broke a promise of the contract.
    """
    machine = make_conformance_machine(
        factory,
        sessions=sessions,
        max_pending=max_pending,
        overflow=overflow,
        dedupe_window=dedupe_window,
        reopen=reopen,
    )
    run_state_machine_as_test(machine, settings=settings)
