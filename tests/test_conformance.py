"""The conformance kit run against `Inbox` as the README shows it, and against broken inboxes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import hypothesis
import pytest

from harn_inbox import Inbox, InboxEntry, ManualClock
from harn_inbox.stores import MemoryStore, SqliteStore
from harn_inbox.testing import InboxModel, make_conformance_machine, run_conformance
from harn_inbox.testing._vocabulary import CLAIM_PREDICATES, KEYWORDS, PREDICATES

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

    from harn_inbox import InboxLike

#: The dedupe window of the bounded inboxes: short, so that small clock moves close it.
SHORT_WINDOW = 0.0205


def conformance_settings(share: float = 1.0) -> hypothesis.settings:
    """The loaded profile, with runs of 20 steps unless it sets its own number.

    A step of the kit costs about 1-2 ms on this machine, most of it
    hypothesis choosing the rule and its arguments, so hypothesis' default of
    50 steps per run would take the ci profile's 1000 runs per configuration
    to over a minute each; ``thorough`` sets its own 100. Configurations that
    only repeat what another checks take a *share* of the profile's runs.
    """
    loaded = hypothesis.settings()
    steps = loaded.stateful_step_count
    if steps == hypothesis.settings.get_profile("default").stateful_step_count:
        steps = 20
    return hypothesis.settings(
        stateful_step_count=steps, max_examples=max(1, int(loaded.max_examples * share))
    )


def inbox_factory(**settings: Any) -> Callable[[], tuple[Inbox, ManualClock]]:
    """A factory of new inboxes built with *settings*, each with its own `ManualClock`."""

    def make_inbox() -> tuple[Inbox, ManualClock]:
        clock = ManualClock(start_ms=1_000_000)
        return Inbox(clock=clock, **settings), clock

    return make_inbox


make_inbox = inbox_factory()


def test_the_vocabulary_strategies_print_short() -> None:
    # hypothesis keeps, for every test case whose rule draw it retried, an
    # event naming the rule strategy by its repr, which includes these:
    # spelled out, the predicates made long runs grow by some 0.4 MB a case.
    for strategy in (PREDICATES, CLAIM_PREDICATES, KEYWORDS):
        assert len(repr(strategy)) < 200


def test_inbox_conforms() -> None:
    run_conformance(make_inbox, settings=conformance_settings())


@pytest.mark.parametrize("overflow", ["reject", "drop_oldest"])
def test_bounded_inbox_conforms(overflow: Any) -> None:
    run_conformance(
        inbox_factory(max_pending=2, overflow=overflow, dedupe_window=SHORT_WINDOW),
        max_pending=2,
        overflow=overflow,
        dedupe_window=SHORT_WINDOW,
        settings=conformance_settings(),
    )


def test_inbox_over_an_explicit_memory_store_conforms() -> None:
    def make_inbox() -> tuple[Inbox, ManualClock]:
        clock = ManualClock(start_ms=1_000_000)
        return Inbox(store=MemoryStore(), clock=clock), clock

    run_conformance(make_inbox, settings=conformance_settings(0.25))


class SqliteInboxes:
    """Inboxes over a new SQLite file each run, and reopened on the same file.

    Each store is closed when the next run makes its own (and at the end), so
    the file descriptors of a thousand runs do not pile up.
    """

    def __init__(self, directory: Path, **settings: Any) -> None:
        self.directory = directory
        self.settings = settings
        self.stores: list[SqliteStore] = []
        self.runs = 0

    def make(self) -> tuple[Inbox, ManualClock]:
        self.close()
        self.runs += 1
        clock = ManualClock(start_ms=1_000_000)
        return self.open(self.directory / f"run-{self.runs}.sqlite", clock), clock

    def open(self, path: Path, clock: ManualClock) -> Inbox:
        store = SqliteStore(path)
        self.stores.append(store)
        return Inbox(store=store, clock=clock, **self.settings)

    def reopen(self, inbox: InboxLike, clock: ManualClock) -> Inbox:
        """What a restart does: close the inbox and its file, open the file again."""
        inbox.close()
        store = self.stores.pop()
        store.close()
        return self.open(store.path, clock)

    def close(self) -> None:
        while self.stores:
            self.stores.pop().close()


@pytest.fixture
def sqlite_inboxes(tmp_path: Path) -> Iterator[Callable[..., SqliteInboxes]]:
    made: list[SqliteInboxes] = []

    def make(**settings: Any) -> SqliteInboxes:
        made.append(SqliteInboxes(tmp_path, **settings))
        return made[-1]

    yield make
    for inboxes in made:
        inboxes.close()


def test_inbox_over_a_sqlite_store_conforms_across_restarts(
    sqlite_inboxes: Callable[..., SqliteInboxes],
) -> None:
    inboxes = sqlite_inboxes()
    run_conformance(inboxes.make, reopen=inboxes.reopen, settings=conformance_settings(0.5))


@pytest.mark.parametrize("overflow", ["reject", "drop_oldest"])
def test_bounded_inbox_over_a_sqlite_store_conforms_across_restarts(
    sqlite_inboxes: Callable[..., SqliteInboxes], overflow: Any
) -> None:
    bounds = {"max_pending": 2, "overflow": overflow, "dedupe_window": SHORT_WINDOW}
    inboxes = sqlite_inboxes(**bounds)
    run_conformance(
        inboxes.make, reopen=inboxes.reopen, **bounds, settings=conformance_settings(0.25)
    )


def test_kit_passes_a_reopen_that_changes_nothing() -> None:
    def same_inbox(inbox: InboxLike, clock: ManualClock) -> InboxLike:
        return inbox

    run_conformance(make_inbox, reopen=same_inbox, settings=conformance_settings(0.25))


# The machine itself, for suites that collect unittest classes (a short run: the above is long).
TestInboxConformanceMachine = make_conformance_machine(make_inbox).TestCase
TestInboxConformanceMachine.settings = hypothesis.settings(max_examples=20, stateful_step_count=20)


# -- What the kit does not generate, checked against the model directly ------------------------


def hold_claim(target: Inbox | InboxModel, session_id: str) -> Callable[[], object]:
    """Enter a claim on *target*'s *session_id*; return what ends its block by raising."""
    if isinstance(target, InboxModel):
        claimed = target.claim(session_id)
        return lambda: target.release(claimed)
    claim = target.claim(session_id)
    claim.__enter__()
    return lambda: claim.__exit__(RuntimeError, RuntimeError("the block failed"), None)


def claims_given_back_out_of_order(target: Inbox | InboxModel) -> list[InboxEntry]:
    """Push A and claim it; push B with A's coalesce key and claim it; give back A, then B."""
    give_back = []
    for content in ("A", "B"):
        target.push("s", "progress", content, "tool", coalesce_key="progress")
        give_back.append(hold_claim(target, "s"))
    for end_block in give_back:
        end_block()
    return list(target.snapshot("s"))


def test_claims_given_back_out_of_order_keep_the_newest_entry_of_a_coalesce_key() -> None:
    clock = ManualClock(start_ms=1_000_000)
    kept = claims_given_back_out_of_order(Inbox(clock=clock))
    assert [entry.content for entry in kept] == ["B"]
    assert kept == claims_given_back_out_of_order(InboxModel(clock=clock))


def claim_given_back_after_a_clear(target: Inbox | InboxModel) -> list[InboxEntry]:
    """Push A and claim it; clear the session; push C with A's coalesce key; give back A."""
    target.push("s", "progress", "A", "tool")
    target.push("s", "progress", "B", "tool", coalesce_key="progress")
    end_block = hold_claim(target, "s")
    target.clear_session("s")
    target.push("s", "progress", "C", "tool", coalesce_key="progress")
    end_block()
    return list(target.snapshot("s"))


def test_a_claim_given_back_after_a_clear_is_older_than_the_new_life() -> None:
    # B (sequence 2 of the old life) is older than C (sequence 1 of the new one).
    clock = ManualClock(start_ms=1_000_000)
    kept = claim_given_back_after_a_clear(Inbox(clock=clock))
    assert [entry.content for entry in kept] == ["A", "C"]
    assert kept == claim_given_back_after_a_clear(InboxModel(clock=clock))


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

    def push(self, session_id: str, *fields: str, **keywords: Any) -> InboxEntry:
        entry = self.inbox.push(session_id, *fields, **keywords)
        if entry.sequence == 2:
            self.inbox.drain_where(session_id, lambda queued: queued == entry)
            entry = self.inbox.push(session_id, *fields, **keywords)
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


class DedupesForever(Wrapper):
    """push remembers dedupe keys until the session is cleared, whatever the window."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__(inbox)
        self.first: dict[tuple[str, str], InboxEntry] = {}

    def push(self, session_id: str, *fields: str, **keywords: Any) -> InboxEntry:
        key = (session_id, keywords.get("dedupe_key"))
        if key in self.first:
            self.inbox.push(session_id, *fields, **keywords)  # counted, if a duplicate
            return self.first[key]  # type: ignore[index]
        entry = self.inbox.push(session_id, *fields, **keywords)
        if key[1] is not None:
            self.first[key] = entry  # type: ignore[index]
        return entry

    def clear_session(self, session_id: str) -> int:
        self.first = {key: entry for key, entry in self.first.items() if key[0] != session_id}
        return self.inbox.clear_session(session_id)


class CoalescesNothing(Wrapper):
    """push ignores coalesce_key: the entry it should replace stays pending."""

    def push(self, session_id: str, *fields: str, **keywords: Any) -> InboxEntry:
        keywords.pop("coalesce_key", None)
        return self.inbox.push(session_id, *fields, **keywords)


class NeverExpires(Wrapper):
    """push ignores expires_in: expired entries are still drained, waited for, snapshot."""

    def push(self, session_id: str, *fields: str, **keywords: Any) -> InboxEntry:
        keywords.pop("expires_in", None)
        return self.inbox.push(session_id, *fields, **keywords)


class LosingClaim:
    """A claim whose block's exception lets the entries go, as a normal end would."""

    def __init__(self, claim: Any) -> None:
        self.claim = claim

    def __enter__(self) -> Any:
        return self.claim.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self.claim.__exit__(None, None, None)

    async def __aenter__(self) -> Any:
        return await self.claim.__aenter__()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.claim.__aexit__(None, None, None)


class ClaimLosesEntriesOnError(Wrapper):
    """claim's entries are gone even when the block raises."""

    def claim(self, session_id: str, predicate: Any = None) -> LosingClaim:
        return LosingClaim(self.inbox.claim(session_id, predicate))


class WaitForIgnoresLimit(Wrapper):
    """wait_for takes every match, whatever its limit."""

    async def wait_for(self, session_id: str, predicate: Any, timeout: Any = None, **_: Any) -> Any:
        return await self.inbox.wait_for(session_id, predicate, timeout)


class WaitAnyAnswersTheLast(Wrapper):
    """wait_any names the last of its sessions with entries pending, not the first."""

    def _last(self, session_ids: Iterable[str], found: str | None) -> str | None:
        pending = [sid for sid in session_ids if self.inbox.pending_count(sid)]
        return pending[-1] if found is not None and pending else found

    async def wait_any(self, session_ids: Any, timeout: Any = None) -> str | None:
        return self._last(session_ids, await self.inbox.wait_any(session_ids, timeout))

    def wait_any_sync(self, session_ids: Any, timeout: Any = None) -> str | None:
        return self._last(session_ids, self.inbox.wait_any_sync(session_ids, timeout))


#: What the kit says when an inbox holds other entries or counts than the model.
STATE_DIFFERS = r"holds .*; the model holds|sessions\(\) is|statistics\(.*the model counts"


@pytest.mark.parametrize(
    ("broken", "complaint"),
    [
        (KeepsInReverse, "the entries that did not match must stay, in their order"),
        # Its push takes entry 2 back out: a wait_for parked for it either wins
        # that race (then push returns 3) or loses the entry it was owed.
        (SkipsSequenceTwo, "sequence[ =]3|a lost wake-up"),
        (LosesEntriesOnClose, "True .*only if entries are pending|what was queued must still be"),
        (WaitsWithoutParking, "returned False at once|returned False, though nothing it waits"),
        (DedupesForever, r"push\(.*dedupe_key"),
        (CoalescesNothing, STATE_DIFFERS),
        (NeverExpires, STATE_DIFFERS),
        (ClaimLosesEntriesOnError, rf"{STATE_DIFFERS}|what was queued must still be"),
        (WaitForIgnoresLimit, r"limit=\d.*it must take exactly the \(first limit\)"),
        (WaitAnyAnswersTheLast, r"wait_any.*it must return '.*' at once"),
    ],
)
def test_kit_catches_broken_inbox(broken: type[Wrapper], complaint: str) -> None:
    def make_broken_inbox() -> tuple[Any, ManualClock]:
        inbox, clock = make_inbox()
        return broken(inbox), clock

    with pytest.raises(AssertionError, match=complaint):
        run_conformance(make_broken_inbox, settings=finding_settings())


def test_kit_catches_a_reopen_that_loses_the_state() -> None:
    def fresh_inbox(inbox: InboxLike, clock: ManualClock) -> InboxLike:
        inbox.close()
        return Inbox(clock=clock)

    with pytest.raises(AssertionError, match=rf"{STATE_DIFFERS}|gave sequence 1, not"):
        run_conformance(make_inbox, reopen=fresh_inbox, settings=finding_settings())


def finding_settings() -> hypothesis.settings:
    """Settings to find a known fault fast, and the same way every time."""
    return hypothesis.settings(
        conformance_settings(),
        max_examples=1000,  # it stops at the first failure, well before
        database=None,
        derandomize=True,
        report_multiple_bugs=False,
        phases=[hypothesis.Phase.generate],  # no shrinking: finding it is the point
    )
