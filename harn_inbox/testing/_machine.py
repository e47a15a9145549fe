"""The conformance machine: an inbox and `InboxModel` driven side by side by hypothesis.

`make_conformance_machine` subclasses `ConformanceMachine` with a `MachineConfig`
(the factory, the sessions, the bounds). The rules produce (push, requeue),
consume (drain, drain_where, clear) and wait; each records what it saw (see
`_records`), and the invariants judge it. Rules, invariants and the closing
check all work on one state (the inbox, the model, the waits parked), so they
stay one class.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, ClassVar

import attrs
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
)

from .._clock import ManualClock
from .._entry import InboxEntry
from .._errors import InboxClosed, InboxError
from ._hosts import TEARDOWN_SECONDS, Hosted
from ._model import InboxModel
from ._records import (
    Aborted,
    Cleared,
    Drained,
    Parked,
    Partitioned,
    Pushed,
    Pushes,
    Requeued,
)
from ._vocabulary import (
    CONTENT,
    KIND,
    PREDICATES,
    SOURCE,
    TIMEOUT_MS,
    FailingJudge,
    Judge,
    PredicateFailed,
)
from ._waits import launch_wait, look_after_close, wait_then_push_asyncio, wait_then_push_trio

if TYPE_CHECKING:
    from collections.abc import Callable

    from hypothesis.stateful import MultipleResults

    from .._protocol import InboxLike
    from ._hosts import Outcome
    from ._model import Overflow
    from ._records import Seen
    from ._vocabulary import Where

#: How many waits may be parked at once (each holds a thread or a task of a host loop).
_MAX_PARKED = 3
#: How often, and how patiently, to look at waiter_count() while a waiter parks.
_SPIN_LOOKS = 200
_POLL_LOOKS = 20_000
_POLL_SECONDS = 0.0005


def _last_is(kind: type) -> Callable[[ConformanceMachine], bool]:
    return lambda self: isinstance(self.last_seen, kind)


def _sessions(choose: Callable[[ConformanceMachine], Sequence[str]]) -> st.SearchStrategy[str]:
    """One of the sessions *choose* picks in the machine's current state."""
    return st.runner().flatmap(lambda machine: st.sampled_from(choose(machine)))


#: Any of the machine's sessions.
_ANY_SESSION = _sessions(lambda self: self.session_ids)


def _miscounted(session: str, count: int, parked: list[Parked]) -> AssertionError:
    """The failure of a waiter_count() of *count* where the waits *parked* are parked."""
    return AssertionError(
        f"waiter_count({session!r}) is {count}; parked on it: "
        f"{[waiter.call.description for waiter in parked]!r}"
    )


@attrs.frozen
class MachineConfig:
    """What `make_conformance_machine` was given: the factory, the sessions, the bounds."""

    factory: Callable[[], tuple[InboxLike, ManualClock]]
    session_ids: tuple[str, ...]
    max_pending: int | None
    overflow: Overflow


class ConformanceMachine(RuleBasedStateMachine):
    """Drive an inbox and `InboxModel` side by side; see `make_conformance_machine`.

    Between steps every parked wait is parked for good (the kit has waited for
    its registration, or joined it once it was due to return), so the
    invariants look at a quiet inbox.
    """

    config: ClassVar[MachineConfig]

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
        self.session_ids: tuple[str, ...] = config.session_ids
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
        self.parked: list[Parked] = []
        self.hosts = Hosted()
        self.issued: dict[str, list[int]] = {session: [] for session in self.session_ids}
        self.last_seen: Seen = None

    # -- Producing ------------------------------------------------------------------------------

    @rule(
        session=_ANY_SESSION,
        kind=KIND,
        content=CONTENT,
        source=SOURCE,
        times=st.integers(min_value=1, max_value=3),
    )
    def push(self, session: str, kind: str, content: str, source: str, times: int) -> None:
        """Push *times* times from the machine's thread; parked waits of that session must wake.

        (Several pushes a step: hypothesis picks each rule about equally often,
        and the rules that take entries outnumber those that add them.)
        """
        self.last_seen = Pushes([])
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
        kind=KIND,
        content=CONTENT,
        source=SOURCE,
    )
    def push_inside_waiting_loop(
        self, framework: str, session: str, kind: str, content: str, source: str
    ) -> None:
        """Park ``wait`` in a trio or asyncio run and push from inside that same run."""
        parked = len(self._parked_on(session)) + 1
        push = partial(self.inbox.push, session, kind, content, source)
        run = wait_then_push_trio if framework == "trio" else wait_then_push_asyncio
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
        self.last_seen = Pushes([])
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
        assert isinstance(self.last_seen, Pushes)
        self.last_seen.pushes.append(
            Pushed(
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
        self.last_seen = Requeued(entry, expected, raised, after)
        if expected is None and raised is None:
            self._wake(session)
        else:
            self._await_parked(session)

    # -- Consuming ------------------------------------------------------------------------------

    @rule(target=drained, session=_ANY_SESSION)
    def drain(self, session: str) -> MultipleResults[InboxEntry]:
        """Drain a session; what it returns may be requeued later."""
        expected = self.model.drain(session)
        returned = list(self.inbox.drain(session))
        self.last_seen = Drained(session, returned, expected)
        return multiple(*returned)

    @rule(
        target=drained,
        session=_ANY_SESSION,
        predicate=PREDICATES,
    )
    def drain_where(self, session: str, predicate: Where) -> MultipleResults[InboxEntry]:
        """Take the entries a generated predicate holds true for; count how often it is asked."""
        before = self.model.snapshot(session)
        judge = Judge(predicate)
        taken = list(self.inbox.drain_where(session, judge))
        self.model.drain_where(session, predicate)
        kept = list(self.inbox.snapshot(session))
        self.last_seen = Partitioned(session, predicate, before, taken, kept, judge.judged)
        return multiple(*taken)

    @precondition(lambda self: bool(self.model.sessions()))
    @rule(
        session=_sessions(lambda self: self._sessions_pending()),
        predicate=PREDICATES,
        culprit=st.integers(min_value=0, max_value=7),
    )
    def drain_where_raises(self, session: str, predicate: Where, culprit: int) -> None:
        """A predicate that raises on the *culprit*-th pending entry (modulo their number)."""
        before = self.model.snapshot(session)
        judge = FailingJudge(predicate, before[culprit % len(before)])
        outcome: list[InboxEntry] | PredicateFailed
        try:
            outcome = list(self.inbox.drain_where(session, judge))
        except PredicateFailed as error:
            outcome = error
        after = list(self.inbox.snapshot(session))
        self.last_seen = Aborted(session, predicate, judge.culprit, before, outcome, after)

    @rule(session=_ANY_SESSION)
    def clear_session(self, session: str) -> None:
        """Clear a session; its parked waits must return False (``wait_for``: ``[]``)."""
        expected = self.model.clear_session(session)
        returned = self.inbox.clear_session(session)
        self.issued[session] = []
        self.last_seen = Cleared(session, returned, expected)
        self._release(self._parked_on(session), f"clear_session({session!r})")

    @rule(session=_ANY_SESSION)
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
        timeout_ms=TIMEOUT_MS,
    )
    def start_wait(self, framework: str, session: str, timeout_ms: int | None) -> None:
        """Start ``wait_sync`` / ``wait``: it returns at once if entries are pending, else parks."""
        call = launch_wait(self.hosts, self.inbox, framework, session, timeout_ms)
        pending = self.model.pending_count(session)
        if pending or timeout_ms == 0:
            result = call.result()
            if result is not bool(pending):
                raise AssertionError(
                    f"{call.description} returned {result!r} with {pending} entries pending; "
                    f"it must return {bool(pending)} at once"
                )
        else:
            self.parked.append(Parked(call, session, None, timeout_ms))
        self.last_seen = None
        self._await_parked(session)

    @precondition(
        lambda self: len(self.parked) < _MAX_PARKED and bool(self._sessions_to_park_wait_for())
    )
    @rule(
        target=drained,
        framework=st.sampled_from(("trio", "asyncio")),
        session=_sessions(lambda self: self._sessions_to_park_wait_for()),
        predicate=PREDICATES,
        timeout_ms=TIMEOUT_MS,
    )
    def start_wait_for(
        self, framework: str, session: str, predicate: Where, timeout_ms: int | None
    ) -> MultipleResults[InboxEntry]:
        """Start ``wait_for``: it takes matching entries at once if there are any, else parks."""
        call = launch_wait(self.hosts, self.inbox, framework, session, timeout_ms, predicate)
        self.last_seen = None
        if timeout_ms == 0 or any(map(predicate, self.model.snapshot(session))):
            expected = self.model.drain_where(session, predicate)
            taken = self._taken(call, expected, "with matching entries pending")
            self._await_parked(session)
            return multiple(*taken)
        self.parked.append(Parked(call, session, predicate, timeout_ms))
        self._await_parked(session)
        return multiple()

    # -- Invariants, named so that the specific ones run first --------------------------------

    @precondition(_last_is(Cleared))
    @invariant()
    def clear_session_counts_what_it_dropped(self) -> None:
        seen = self.last_seen
        assert isinstance(seen, Cleared)
        if seen.returned != seen.expected:
            raise AssertionError(
                f"clear_session({seen.session!r}) returned {seen.returned!r}; "
                f"it dropped {seen.expected} pending entries"
            )

    @precondition(_last_is(Drained))
    @invariant()
    def drain_takes_all_in_order(self) -> None:
        seen = self.last_seen
        assert isinstance(seen, Drained)
        if seen.returned != seen.expected:
            raise AssertionError(
                f"drain({seen.session!r}) returned {seen.returned!r}; it must return every "
                f"pending entry, oldest first: {seen.expected!r}"
            )

    @precondition(_last_is(Partitioned))
    @invariant()
    def drain_where_partitions(self) -> None:
        seen = self.last_seen
        assert isinstance(seen, Partitioned)
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

    @precondition(_last_is(Requeued))
    @invariant()
    def entry_requeued_at_head(self) -> None:
        seen = self.last_seen
        assert isinstance(seen, Requeued)
        call = f"requeue_front({seen.entry!r})"
        if seen.expected is not None:
            if seen.raised is None:
                raise AssertionError(
                    f"{call} must raise ValueError: an equal entry (all six fields) is "
                    f"already pending in session {seen.entry.session_id!r}"
                )
        elif seen.raised is not None:
            raise AssertionError(
                f"{call} raised {seen.raised!r}, but no equal entry (all six fields) "
                f"is pending in session {seen.entry.session_id!r}"
            )
        elif seen.after is not None and seen.after[:1] != [seen.entry]:
            raise AssertionError(
                f"after {call}, the session holds {seen.after!r}; the requeued entry must "
                f"come first, unchanged"
            )

    @precondition(_last_is(Aborted))
    @invariant()
    def failing_predicate_changes_nothing(self) -> None:
        seen = self.last_seen
        assert isinstance(seen, Aborted)
        call = f"drain_where({seen.session!r}, {seen.predicate!r} raising on {seen.culprit!r})"
        if not isinstance(seen.outcome, PredicateFailed):
            raise AssertionError(
                f"{call} returned {seen.outcome!r}; the predicate's exception must propagate"
            )
        if seen.after != seen.before:
            raise AssertionError(
                f"after {call} raised, the session holds {seen.after!r}; a raising predicate "
                f"must leave it as it was: {seen.before!r}"
            )

    @precondition(_last_is(Pushes))
    @invariant()
    def push_stamps_entries(self) -> None:
        assert isinstance(self.last_seen, Pushes)
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
            expected = self._parked_on(session)
            if count != len(expected):
                raise _miscounted(session, count, expected)

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
                waiter.call.pause(TEARDOWN_SECONDS)
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
                partial(look_after_close, inbox, self.session_ids),
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

    def _parked_on(self, session: str) -> list[Parked]:
        return [waiter for waiter in self.parked if waiter.session == session]

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

    def _taken(self, call: Outcome, expected: list[InboxEntry], why: str) -> list[InboxEntry]:
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

    def _release(self, released: list[Parked], why: str) -> None:
        """*released* must return empty-handed (False, or [] for wait_for) because of *why*."""
        for waiter in released:
            self.parked.remove(waiter)
            self._expect_empty_result(waiter, why)
        for session in {waiter.session for waiter in released}:
            self._await_parked(session)

    def _expect_empty_result(self, waiter: Parked, why: str) -> None:
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
        parked = self._parked_on(session)
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
        raise _miscounted(session, self.inbox.waiter_count(session), parked)
