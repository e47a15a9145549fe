"""The conformance kit run against `Inbox` as the README shows it, and against broken inboxes."""

from __future__ import annotations

from typing import Any

import hypothesis
import pytest

from harn_inbox import Inbox, InboxEntry, ManualClock
from harn_inbox.testing import make_conformance_machine, run_conformance
from harn_inbox.testing._vocabulary import PREDICATES


def conformance_settings() -> hypothesis.settings:
    """The loaded profile, with runs of 10 steps unless the profile sets its own number.

    A step of the kit costs about 0.7 ms, most of it hypothesis choosing the
    rule and its arguments, so hypothesis' default of 50 steps per run would
    take the ci profile's 1000 runs per configuration to half a minute each.
    ``thorough`` sets its own 100.
    """
    steps = hypothesis.settings().stateful_step_count  # the loaded profile's
    if steps == hypothesis.settings.get_profile("default").stateful_step_count:
        steps = 10
    return hypothesis.settings(stateful_step_count=steps)


def make_inbox() -> tuple[Inbox, ManualClock]:
    clock = ManualClock(start_ms=1_000_000)
    return Inbox(clock=clock), clock


def make_bounded_rejecting_inbox() -> tuple[Inbox, ManualClock]:
    clock = ManualClock(start_ms=1_000_000)
    return Inbox(clock=clock, max_pending=2, overflow="reject"), clock


def make_bounded_dropping_inbox() -> tuple[Inbox, ManualClock]:
    clock = ManualClock(start_ms=1_000_000)
    return Inbox(clock=clock, max_pending=2, overflow="drop_oldest"), clock


def test_the_predicates_strategy_prints_short() -> None:
    # hypothesis keeps, for every test case whose rule draw it retried, an
    # event naming the rule strategy by its repr, which includes this one's:
    # spelled out, the predicates made long runs grow by some 0.4 MB a case.
    assert len(repr(PREDICATES)) < 200


def test_inbox_conforms() -> None:
    run_conformance(make_inbox, settings=conformance_settings())


def test_bounded_inbox_that_rejects_conforms() -> None:
    run_conformance(
        make_bounded_rejecting_inbox,
        max_pending=2,
        overflow="reject",
        settings=conformance_settings(),
    )


def test_bounded_inbox_that_drops_oldest_conforms() -> None:
    run_conformance(
        make_bounded_dropping_inbox,
        max_pending=2,
        overflow="drop_oldest",
        settings=conformance_settings(),
    )


# The machine itself, for suites that collect unittest classes (a short run: the above is long).
TestInboxConformanceMachine = make_conformance_machine(make_inbox).TestCase
TestInboxConformanceMachine.settings = hypothesis.settings(max_examples=20, stateful_step_count=10)


# -- The kit catches broken inboxes --------------------------------------------------------------


class Wrapper:
    """Everything delegated to a real `Inbox`, for subclasses to break one method of."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inbox, name)


class KeepsInReverse(Wrapper):
    """drain_where puts the entries it keeps back in reverse order."""

    def drain_where(self, session_id: str, predicate: Any) -> list[InboxEntry]:
        taken = self.inbox.drain_where(session_id, predicate)
        for entry in self.inbox.drain(session_id):
            self.inbox.requeue_front(entry)  # each in front of the previous: reversed
        return taken


class SkipsSequenceTwo(Wrapper):
    """push burns sequence 2: the second entry of a session comes out as 3."""

    def push(self, session_id: str, kind: str, content: str, source: str) -> InboxEntry:
        entry = self.inbox.push(session_id, kind, content, source)
        if entry.sequence == 2:
            self.inbox.drain_where(session_id, lambda queued: queued == entry)
            entry = self.inbox.push(session_id, kind, content, source)
        return entry


class LosesEntriesOnClose(Wrapper):
    """close drops whatever was still queued."""

    def close(self) -> None:
        self.inbox.close()
        for session_id in self.inbox.sessions():
            self.inbox.drain(session_id)


class WaitsWithoutParking(Wrapper):
    """wait looks once and returns: it never waits for a push."""

    async def wait(self, session_id: str, timeout: float | None = None) -> bool:
        return self.inbox.pending_count(session_id) > 0


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        (KeepsInReverse, "the entries that did not match must stay, in their order"),
        # Its push takes entry 2 back out: a wait_for parked for it either wins
        # that race (then push returns 3) or loses the entry it was owed.
        (SkipsSequenceTwo, "sequence[ =]3|a lost wake-up"),
        (LosesEntriesOnClose, "True only if entries are pending|what was queued must still be"),
        (WaitsWithoutParking, "returned False at once|returned False, though nothing it waits"),
    ],
)
def test_kit_catches_broken_inbox(broken: type[Wrapper], complaint: str) -> None:
    def make_broken_inbox() -> tuple[Any, ManualClock]:
        inbox, clock = make_inbox()
        return broken(inbox), clock

    with pytest.raises(AssertionError, match=complaint):
        run_conformance(
            make_broken_inbox,
            settings=hypothesis.settings(
                conformance_settings(),
                max_examples=1000,  # it stops at the first failure, well before
                database=None,
                derandomize=True,
                report_multiple_bugs=False,
                phases=[hypothesis.Phase.generate],  # no shrinking: finding it is the point
            ),
        )
