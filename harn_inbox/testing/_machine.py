"""The conformance machine: an inbox and `InboxModel` driven side by side by hypothesis.

`make_conformance_machine` subclasses `ConformanceMachine` with a `MachineConfig`
(the factory, the sessions, the inbox's settings, how to reopen it). The rules
produce (push, with and without keyword arguments, reserve, requeue), consume
(drain, drain_where, revoke, claims, clear), move the clock, wait, and reopen;
each records what it saw (see `_records`), and the invariants judge it. Rules,
invariants and the closing check all work on one state (the inbox, the model,
the waits parked, the claims held), so they stay one class.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from functools import partial
from itertools import permutations
from typing import TYPE_CHECKING, ClassVar, TypeVar

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
    ClockMoved,
    Holding,
    Parked,
    Partitioned,
    PushCall,
    Pushed,
    Pushes,
    Requeued,
    Returned,
    same,
)
from ._vocabulary import (
    CLAIM_PREDICATES,
    CONTENT,
    KEYWORDS,
    KIND,
    LIMIT,
    PREDICATES,
    SOURCE,
    TIMEOUT_MS,
    BlockFailed,
    FailingJudge,
    Judge,
    Keywords,
    PredicateFailed,
)
from ._waits import (
    claim_async,
    launch_wait,
    launch_wait_any,
    look_after_close,
    wait_then_push_asyncio,
    wait_then_push_trio,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from hypothesis.stateful import MultipleResults

    from .._protocol import InboxLike
    from ._hosts import Outcome
    from ._model import Overflow
    from ._records import Seen
    from ._vocabulary import Where

T = TypeVar("T")

#: How many waits may be parked at once (each holds a thread or a task of a host loop).
_MAX_PARKED = 3
#: How many claims the machine may hold open at once.
_MAX_CLAIMS = 2
#: How often, and how patiently, to look at waiter_count() while a waiter parks.
_SPIN_LOOKS = 200
_POLL_LOOKS = 20_000
_POLL_SECONDS = 0.0005
#: What statistics() reports besides the session id, all compared with the model.
_COUNTERS = (
    "pending",
    "waiters",
    "last_sequence",
    "dropped",
    "duplicates",
    "coalesced",
    "expired",
    "revoked",
    "reserved",
)


def _last_is(kind: type) -> Callable[[ConformanceMachine], bool]:
    return lambda self: isinstance(self.last_seen, kind)


def _looking(self: ConformanceMachine) -> bool:
    """Whether the invariants that look at the inbox's entries run after this step.

    Not right after the clock moved: looking would make the inbox remove what
    expired, so the next step's operation would never meet such entries (as a
    real program's does), and an operation that forgets to would go unseen.
    """
    return not isinstance(self.last_seen, ClockMoved)


def _from_state(choose: Callable[[ConformanceMachine], Sequence[T]]) -> st.SearchStrategy[T]:
    """One of the values *choose* picks in the machine's current state (sessions, say)."""
    return st.runner().flatmap(lambda machine: st.sampled_from(choose(machine)))


#: Any of the machine's sessions.
_ANY_SESSION = _from_state(lambda self: self.session_ids)
#: How many times a push rule pushes (the rules that take entries outnumber those that add).
_TIMES = st.integers(min_value=1, max_value=3)


def _miscounted(session: str, count: int, parked: list[Parked]) -> AssertionError:
    """The failure of a waiter_count() of *count* where the waits *parked* are parked."""
    return AssertionError(
        f"waiter_count({session!r}) is {count}; parked on it: "
        f"{[waiter.call.description for waiter in parked]!r}"
    )


@attrs.frozen
class MachineConfig:
    """What `make_conformance_machine` was given: the factory, the sessions, the settings."""

    factory: Callable[[], tuple[InboxLike, ManualClock]]
    session_ids: tuple[str, ...]
    max_pending: int | None
    overflow: Overflow
    dedupe_window: float = 600
    reopen: Callable[[InboxLike, ManualClock], InboxLike] | None = None


class ConformanceMachine(RuleBasedStateMachine):
    """Drive an inbox and `InboxModel` side by side; see `make_conformance_machine`.

    Between steps every parked wait is parked for good (the kit has waited for
    its registration, or joined it once it was due to return), so the
    invariants look at a quiet inbox.
    """

    config: ClassVar[MachineConfig]

    drained = Bundle("drained")
    pushes = Bundle("pushes")

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
            clock=clock,
            max_pending=config.max_pending,
            overflow=config.overflow,
            dedupe_window=config.dedupe_window,
        )
        for session in self.session_ids:
            if inbox.pending_count(session) or inbox.waiter_count(session):
                raise ValueError(
                    f"the conformance factory must return a new, empty inbox; session "
                    f"{session!r} has {inbox.pending_count(session)} entries pending and "
                    f"{inbox.waiter_count(session)} waiters"
                )
        self.parked: list[Parked] = []
        self.claims: list[Holding] = []
        self.hosts = Hosted()
        #: The sequences each session issued (pushes, reservations) since it was last cleared.
        self.issued: dict[str, list[int]] = {session: [] for session in self.session_ids}
        self.last_seen: Seen = None

    # -- Producing ------------------------------------------------------------------------------

    @rule(session=_ANY_SESSION, kind=KIND, content=CONTENT, source=SOURCE, times=_TIMES)
    def push(self, session: str, kind: str, content: str, source: str, times: int) -> None:
        """Push *times* times from the machine's thread; parked waits of that session must wake.

        (Several pushes a step: hypothesis picks each rule about equally often,
        and the rules that take entries outnumber those that add them.)
        """
        self._pushes(session, kind, content, source, Keywords(), times)

    @rule(
        target=pushes,
        session=_ANY_SESSION,
        kind=KIND,
        content=CONTENT,
        source=SOURCE,
        keywords=KEYWORDS,
        times=_TIMES,
    )
    def push_with_keywords(
        self, session: str, kind: str, content: str, source: str, keywords: Keywords, times: int
    ) -> PushCall:
        """Push with a payload, a delivery, a dedupe key, a coalesce key or an expiry.

        The same keywords *times* times: the second push of a dedupe key is a
        duplicate, of a coalesce key replaces the first.
        """
        self._pushes(session, kind, content, source, keywords, times)
        return PushCall(session, kind, content, source, keywords)

    @rule(call=pushes)
    def retry_push(self, call: PushCall) -> None:
        """Push again what a `push_with_keywords` pushed, as a producer retrying does.

        Later, perhaps: past the dedupe window, after the entry was taken.
        """
        self._pushes(call.session, call.kind, call.content, call.source, call.keywords, 1)

    @precondition(lambda self: bool(self._sessions_to_park_wait(empty=True)))
    @rule(
        framework=st.sampled_from(("trio", "asyncio")),
        session=_from_state(lambda self: self._sessions_to_park_wait(empty=True)),
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
        self._push(session, kind, content, source, Keywords(), lambda: entry)

    def _pushes(
        self, session: str, kind: str, content: str, source: str, keywords: Keywords, times: int
    ) -> None:
        self.last_seen = Pushes([])
        push = partial(keywords.push, self.inbox.push, session, kind, content, source)
        for _ in range(times):
            self._push(session, kind, content, source, keywords, push)

    def _push(
        self,
        session: str,
        kind: str,
        content: str,
        source: str,
        keywords: Keywords,
        attempt: Callable[[], InboxEntry],
    ) -> None:
        clock_ms = self.clock.now_ms()
        duplicates = self.model.statistics(session).duplicates
        expected: InboxEntry | InboxError
        returned: InboxEntry | InboxError
        try:
            expected = keywords.push(self.model.push, session, kind, content, source)
        except InboxError as error:
            expected = error
        duplicate = self.model.statistics(session).duplicates > duplicates
        try:
            returned = attempt()
        except InboxError as error:  # InboxFull, InboxClosed: the invariant judges it
            returned = error
        assert isinstance(self.last_seen, Pushes)
        given = f", {keywords!r}" if repr(keywords) else ""
        self.last_seen.pushes.append(
            Pushed(
                f"push({session!r}, {kind!r}, {content!r}, {source!r}{given})",
                clock_ms,
                returned,
                expected,
                duplicate,
            )
        )
        stored = isinstance(expected, InboxEntry) and not duplicate
        if stored and isinstance(returned, InboxEntry):
            self.issued[session].append(returned.sequence)
            self._wake(session)
        else:
            self._await_parked(session)  # refused or a duplicate: nobody may have woken for good

    @rule(session=_ANY_SESSION)
    def reserve_sequence(self, session: str) -> None:
        """Reserve a sequence number: it is issued like a push's, and nothing is queued."""
        expected = self.model.reserve_sequence(session)
        returned = self.inbox.reserve_sequence(session)
        self.issued[session].append(returned)
        self.last_seen = Returned(
            f"reserve_sequence({session!r})",
            returned,
            expected,
            "it must issue the session's next sequence number",
        )

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
            waiter.predicate is not None
            and session in waiter.sessions
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
        self.last_seen = Returned(
            f"drain({session!r})", returned, expected, "it must take every pending entry, in order"
        )
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
        session=_from_state(lambda self: self._sessions_pending()),
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

    @rule(session=_ANY_SESSION, sequence=st.integers(min_value=1, max_value=6))
    def revoke(self, session: str, sequence: int) -> None:
        """Revoke a pending entry by its sequence (or one that is not pending: None)."""
        expected = self.model.revoke(session, sequence)
        returned = self.inbox.revoke(session, sequence)
        self.last_seen = Returned(
            f"revoke({session!r}, {sequence})",
            returned,
            expected,
            "it must remove and return the pending entry of that sequence, or None",
        )

    @precondition(lambda self: len(self.claims) < _MAX_CLAIMS and bool(self._sessions_unclaimed()))
    @rule(
        target=drained,
        session=_from_state(lambda self: self._sessions_unclaimed()),
        predicate=CLAIM_PREDICATES,
    )
    def claim(self, session: str, predicate: Where | None) -> MultipleResults[InboxEntry]:
        """Enter a claim's block and hold it open across steps (see `end_claim`).

        Its entries are taken meanwhile; they may be requeued by hand.
        """
        description = f"with inbox.claim({session!r}, {predicate!r}) as entries"
        claim = self.inbox.claim(session, predicate)
        returned = list(claim.__enter__())
        claimed = self.model.claim(session, predicate)
        self.claims.append(Holding(description, claim, claimed))
        self.last_seen = Returned(
            description,
            returned,
            claimed.entries,
            "it must take the pending entries (that match), in order",
        )
        return multiple(*returned)

    @precondition(lambda self: bool(self.claims))
    @rule(newest=st.booleans(), fails=st.booleans())
    def end_claim(self, newest: bool, fails: bool) -> None:
        """Leave the oldest (or newest) open claim's block: normally, or by raising.

        Raising gives the entries back at the head of their session (and wakes
        its waits); ending normally lets them go.
        """
        holding = self.claims.pop(-1 if newest else 0)
        session = holding.claimed.session_id
        self.last_seen = None
        if not fails:
            holding.claim.__exit__(None, None, None)
            return
        if self._raise_in_block(holding):
            self._wake(session)
        else:
            self._await_parked(session)

    @rule(
        framework=st.sampled_from(("trio", "asyncio")),
        session=_ANY_SESSION,
        predicate=CLAIM_PREDICATES,
        fails=st.booleans(),
    )
    def claim_in_loop(
        self, framework: str, session: str, predicate: Where | None, fails: bool
    ) -> None:
        """``async with inbox.claim(...)`` in a trio or asyncio run, its block raising or not."""
        claimed = self.model.claim(session, predicate)
        call = self.hosts.run(
            framework,
            f"async with inbox.claim({session!r}, {predicate!r}) as entries: "
            + ("raise" if fails else "pass"),
            partial(claim_async, self.inbox, session, predicate, fails),
        )
        self.last_seen = Returned(
            call.description,
            call.result(),
            claimed.entries,
            "it must take the pending entries (that match), in order",
        )
        if fails and self.model.release(claimed):
            self._wake(session)
        else:
            self._await_parked(session)

    @rule(session=_ANY_SESSION)
    def clear_session(self, session: str) -> None:
        """Clear a session; its parked waits must return empty-handed.

        (A ``wait_any`` only once every one of its sessions was cleared.)
        """
        expected = self.model.clear_session(session)
        returned = self.inbox.clear_session(session)
        self.issued[session] = []
        self.last_seen = Returned(
            f"clear_session({session!r})",
            returned,
            expected,
            "it must return how many entries were pending",
        )
        ended = []
        for waiter in self._parked_on(session):
            waiter.cleared.add(session)
            if waiter.cleared.issuperset(waiter.sessions):
                ended.append(waiter)
        self._release(ended, f"clear_session({session!r})")

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
        self._advance_clock(ms)

    @precondition(lambda self: bool(self.model.deadlines_ms()))
    @rule(nth=st.integers(min_value=0, max_value=2), early=st.booleans())
    def advance_clock_to_deadline(self, nth: int, early: bool) -> None:
        """Move the clock to when an entry expires or a dedupe window closes (or 1 ms short).

        To the *nth* such moment to come (modulo their number): a dedupe
        window of the default 600 s closes long after every expiry the kit
        draws.
        """
        deadlines = self.model.deadlines_ms()
        self._advance_clock(deadlines[nth % len(deadlines)] - early - self.clock.now_ms())

    def _advance_clock(self, ms: int) -> None:
        self.clock.advance(ms / 1000)
        due = []
        for waiter in self.parked:
            waiter.elapsed_ms += ms
            if waiter.timeout_ms is not None and waiter.elapsed_ms >= waiter.timeout_ms:
                due.append(waiter)
        self.last_seen = ClockMoved(ms)
        self._release(due, f"its timeout passed on the clock (advance({ms / 1000!r}))")

    @precondition(
        lambda self: len(self.parked) < _MAX_PARKED and bool(self._sessions_to_park_wait())
    )
    @rule(
        framework=st.sampled_from(("thread", "trio", "asyncio")),
        session=_from_state(lambda self: self._sessions_to_park_wait()),
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
            self.parked.append(Parked(call, (session,), timeout_ms))
        self.last_seen = None
        self._await_parked(session)

    @precondition(
        lambda self: len(self.parked) < _MAX_PARKED and bool(self._sessions_to_park_wait_for())
    )
    @rule(
        target=drained,
        framework=st.sampled_from(("trio", "asyncio")),
        session=_from_state(lambda self: self._sessions_to_park_wait_for()),
        predicate=PREDICATES,
        timeout_ms=TIMEOUT_MS,
        limit=LIMIT,
    )
    def start_wait_for(
        self,
        framework: str,
        session: str,
        predicate: Where,
        timeout_ms: int | None,
        limit: int | None,
    ) -> MultipleResults[InboxEntry]:
        """Start ``wait_for``: it takes matching entries at once if there are any, else parks."""
        call = launch_wait(self.hosts, self.inbox, framework, session, timeout_ms, predicate, limit)
        self.last_seen = None
        if timeout_ms == 0 or any(map(predicate, self.model.snapshot(session))):
            expected = self.model.take_matching(session, predicate, limit)
            taken = self._taken(call, expected, "with matching entries pending")
            self._await_parked(session)
            return multiple(*taken)
        self.parked.append(Parked(call, (session,), timeout_ms, predicate, limit))
        self._await_parked(session)
        return multiple()

    @precondition(
        lambda self: len(self.parked) < _MAX_PARKED and bool(self._sessions_to_park_wait())
    )
    @rule(
        framework=st.sampled_from(("thread", "trio", "asyncio")),
        sessions=_from_state(lambda self: self._orders_to_park_wait_any()),
        timeout_ms=TIMEOUT_MS,
    )
    def start_wait_any(
        self, framework: str, sessions: tuple[str, ...], timeout_ms: int | None
    ) -> None:
        """Start ``wait_any_sync`` / ``wait_any``: the first session with entries, else park.

        Parked, only a push (or requeue, or failed claim) to one of its
        sessions ends it, a clear of all of them, its timeout, or the close.
        """
        call = launch_wait_any(self.hosts, self.inbox, framework, sessions, timeout_ms)
        found = self._first_pending(sessions)
        if found is not None or timeout_ms == 0:
            result = call.result()
            if result != found:
                raise AssertionError(
                    f"{call.description} returned {result!r}; it must return {found!r} at once, "
                    f"the first of its sessions with entries pending"
                )
        else:
            self.parked.append(Parked(call, sessions, timeout_ms, any=True))
        self.last_seen = None
        for session in sessions:
            self._await_parked(session)

    # -- Restarting -----------------------------------------------------------------------------

    @precondition(
        lambda self: self.config.reopen is not None and not self.parked and not self.claims
    )
    @rule()
    def reopen(self) -> None:
        """Reopen the inbox on the same state, as after a restart: nothing may change.

        The same entries pending, in order, with their payloads; the same
        sequence counters (the next push continues), dedupe keys and counters.
        """
        assert self.config.reopen is not None
        self.inbox = self.config.reopen(self.inbox, self.clock)
        self.last_seen = None

    # -- Invariants, named so that the specific ones run first --------------------------------

    @precondition(_last_is(Returned))
    @invariant()
    def call_returns_what_the_model_says(self) -> None:
        seen = self.last_seen
        assert isinstance(seen, Returned)
        if not same(seen.returned, seen.expected):
            raise AssertionError(
                f"{seen.call} returned {seen.returned!r}; {seen.promise}: {seen.expected!r}"
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
        if not same(seen.taken, matching):
            raise AssertionError(
                f"{call} took {seen.taken!r} from {seen.before!r}; it must take exactly "
                f"the matching entries, in their order: {matching!r}"
            )
        if not same(seen.kept, others):
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
                    f"{call} must raise ValueError: an equal entry (all fields) is "
                    f"already pending in session {seen.entry.session_id!r}"
                )
        elif seen.raised is not None:
            raise AssertionError(
                f"{call} raised {seen.raised!r}, but no equal entry (all fields) "
                f"is pending in session {seen.entry.session_id!r}"
            )
        elif seen.after is not None and not same(seen.after[:1], [seen.entry]):
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
        if not same(seen.after, seen.before):
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
            if seen.duplicate:
                if not same(returned, expected):
                    raise AssertionError(
                        f"{seen.call} returned {returned!r}; its dedupe key was pushed within "
                        f"the dedupe window, so it must store nothing and return the first "
                        f"push's entry: {expected!r}"
                    )
                continue
            if returned.sequence != expected.sequence:
                raise AssertionError(
                    f"{seen.call} gave sequence {returned.sequence}, not {expected.sequence}: "
                    f"a session's sequences start at 1 and go up by one per push or "
                    f"reservation, drained or not, until clear_session"
                )
            if returned.ts_ms != seen.clock_ms:
                raise AssertionError(
                    f"{seen.call} stamped ts_ms={returned.ts_ms}, but the inbox's clock read "
                    f"{seen.clock_ms} at the push"
                )
            if not same(returned, expected):
                raise AssertionError(f"{seen.call} returned {returned!r}, not {expected!r}")

    @invariant()
    def sequences_are_gapless(self) -> None:
        for session, issued in self.issued.items():
            if issued != list(range(1, len(issued) + 1)):
                raise AssertionError(
                    f"session {session!r} was given the sequences {issued!r} since it was "
                    f"last cleared (pushes and reservations); they must run 1, 2, 3, ... "
                    f"without gaps"
                )

    @precondition(_looking)
    @invariant()
    def sessions_match_model(self) -> None:
        listed = list(self.inbox.sessions())
        expected = self.model.sessions()
        if sorted(listed) != sorted(expected):
            raise AssertionError(
                f"sessions() is {listed!r}; the sessions with entries pending are {expected!r}"
            )

    @precondition(_looking)
    @invariant()
    def state_matches_model(self) -> None:
        for session in self.session_ids:
            held = list(self.inbox.snapshot(session))
            expected = self.model.snapshot(session)
            if not same(held, expected):
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
            self._check_statistics(session)

    def _check_statistics(self, session: str) -> None:
        reported = self.inbox.statistics(session)
        promised = attrs.evolve(
            self.model.statistics(session), waiters=len(self._parked_on(session))
        )
        wrong = {
            name: getattr(promised, name)
            for name in _COUNTERS
            if getattr(reported, name) != getattr(promised, name)
        }
        if wrong or reported.session_id != session:
            raise AssertionError(
                f"statistics({session!r}) is {reported!r}; the model counts "
                + ", ".join(f"{name}={value!r}" for name, value in wrong.items())
                + (f" (and session_id={session!r})" if reported.session_id != session else "")
            )

    @invariant()
    def waiters_match_model(self) -> None:
        for waiter in self.parked:
            if waiter.call.done:
                raise AssertionError(
                    f"{waiter.call.description} {waiter.call.outcome()}, but nothing that "
                    f"ends it happened: no push to its sessions, no clear, no timeout"
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
            self.claims = []
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
            self._expect_closed(f"push({session!r}, ...)", partial(inbox.push, session, "", "", ""))
            self._expect_closed(
                f"push({session!r}, ..., dedupe_key='late')",
                partial(inbox.push, session, "", "", "", dedupe_key="late"),
            )
            self._expect_closed(
                f"reserve_sequence({session!r})", partial(inbox.reserve_sequence, session)
            )
        # Claims still held end by raising: their entries go back even now.
        for holding in self.claims:
            self._raise_in_block(holding)
        self.claims = []
        pending = [bool(self.model.pending_count(session)) for session in self.session_ids]
        first = self._first_pending(self.session_ids)
        for framework, calls in (("trio", 2), ("asyncio", 1)):
            look = self.hosts.run(
                framework,
                "wait_sync() and wait() on each session, then wait_any_sync() and wait_any() "
                "on all, after close(), with no timeout",
                partial(look_after_close, inbox, self.session_ids),
            )
            promised = [flag for flag in [*pending, first] for _ in range(calls)]
            if (looked := look.result()) != promised:
                raise AssertionError(
                    f"{look.description} returned {looked!r} for {list(self.session_ids)!r}; "
                    f"each must return at once, True (or the first session) only if entries "
                    f"are pending: {promised!r}"
                )
        for session in self.session_ids:
            drained = list(inbox.drain(session))
            expected = self.model.drain(session)
            if not same(drained, expected):
                raise AssertionError(
                    f"after close(), drain({session!r}) returned {drained!r}; what was queued "
                    f"must still be there: {expected!r}"
                )
            if drained:
                inbox.requeue_front(drained[0])
                again = list(inbox.drain(session))
                if not same(again, drained[:1]):
                    raise AssertionError(
                        f"after close(), requeue_front({drained[0]!r}) then drain({session!r}) "
                        f"gave {again!r}; requeue_front must still work"
                    )

    def _expect_closed(self, call: str, attempt: Callable[[], object]) -> None:
        try:
            attempt()
        except InboxClosed:
            return
        raise AssertionError(f"{call} after close() must raise InboxClosed")

    # -- Helpers -----------------------------------------------------------------------------------

    # These return tuples: hypothesis caches sampled_from() of a tuple, not of a list.

    def _parked_on(self, session: str) -> list[Parked]:
        return [waiter for waiter in self.parked if session in waiter.sessions]

    def _first_pending(self, sessions: Sequence[str]) -> str | None:
        return next((session for session in sessions if self.model.pending_count(session)), None)

    def _sessions_pending(self) -> tuple[str, ...]:
        return tuple(s for s in self.session_ids if self.model.pending_count(s))

    def _sessions_unclaimed(self) -> tuple[str, ...]:
        # At most one claim held open per session: see InboxModel.release on why.
        return tuple(
            s for s in self.session_ids if not any(h.claimed.session_id == s for h in self.claims)
        )

    def _sessions_to_park_wait(self, *, empty: bool = False) -> tuple[str, ...]:
        # A wait that takes nothing (wait, wait_any) never shares a session with a wait_for:
        # when a push matches, which of the two looks first (and so what the other sees) is
        # a race.
        return tuple(
            s
            for s in self.session_ids
            if not any(w.predicate is not None and s in w.sessions for w in self.parked)
            and not (empty and self.model.pending_count(s))
        )

    def _orders_to_park_wait_any(self) -> tuple[tuple[str, ...], ...]:
        # Every order of every non-empty choice of those sessions: order decides the result.
        sessions = self._sessions_to_park_wait()
        return tuple(
            order for size in range(1, len(sessions) + 1) for order in permutations(sessions, size)
        )

    def _sessions_to_park_wait_for(self) -> tuple[str, ...]:
        # At most one wait_for per session, alone, for the same reason.
        return tuple(s for s in self.session_ids if not any(s in w.sessions for w in self.parked))

    def _raise_in_block(self, holding: Holding) -> int:
        """Leave *holding*'s block by raising, as the model does; return how many went back."""
        error = BlockFailed(f"the kit's block of {holding.description} fails")
        leave: Callable[..., object] = holding.claim.__exit__  # typed None, but who knows
        if leave(BlockFailed, error, None):
            raise AssertionError(f"{holding.description} swallowed the exception of its block")
        return self.model.release(holding.claimed)

    def _taken(self, call: Outcome, expected: list[InboxEntry], why: str) -> list[InboxEntry]:
        result = call.result()
        if not same(result, expected):
            raise AssertionError(
                f"{call.description} returned {result!r} {why}; it must take exactly the "
                f"(first limit) matching entries, in order: {expected!r}"
            )
        return expected

    def _wake(self, session: str) -> None:
        """*session* just gained entries: settle the waits parked on it as the model says."""
        still = []
        for waiter in self.parked:
            if session not in waiter.sessions:
                still.append(waiter)
            elif waiter.predicate is not None:
                if any(map(waiter.predicate, self.model.snapshot(session))):
                    expected = self.model.take_matching(session, waiter.predicate, waiter.limit)
                    self._taken(waiter.call, expected, "once a matching entry was pushed")
                else:
                    still.append(waiter)  # woken, perhaps, but it must park again
            elif (found := self._first_pending(waiter.sessions)) is not None:
                promised = found if waiter.any else True
                result = waiter.call.result()
                if result != promised or type(result) is not type(promised):
                    raise AssertionError(
                        f"{waiter.call.description} returned {result!r} after a push to "
                        f"{session!r}; it must return {promised!r}"
                    )
            else:
                still.append(waiter)  # what woke it has expired already: it must park again
        woken = [waiter for waiter in self.parked if waiter not in still]
        self.parked = still
        for touched in {session, *(s for waiter in woken for s in waiter.sessions)}:
            self._await_parked(touched)

    def _release(self, released: list[Parked], why: str) -> None:
        """*released* must return empty-handed (False, [] or None) because of *why*."""
        for waiter in released:
            self.parked.remove(waiter)
            self._expect_empty_result(waiter, why)
        for session in {session for waiter in released for session in waiter.sessions}:
            self._await_parked(session)

    def _expect_empty_result(self, waiter: Parked, why: str) -> None:
        result = waiter.call.result()
        ok, promised = waiter.empty_handed(result)
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
