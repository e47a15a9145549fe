"""`SessionState` against `InboxModel`, directly: one session, no store, no threads.

A hypothesis state machine drives one `SessionState` and an `InboxModel` of
one session side by side, on a `ManualClock`, the way `LocalStore` drives a
session: it purges what has expired (``purge(now_ms)``) before every
operation on a session that has expiring entries, passes ``max_pending``,
``drop_oldest`` and the dedupe window in milliseconds, and gives a claim back
with the metas it took. A selective consumer reads and takes across steps, as
`harn_inbox._judging.Judge` does: read with a cursor, judge what it read, take
the chosen ones, while other steps change the session in between.

After every step the pending entries and the counters equal the model's. The
version rule is checked around each operation (see "The version" in
`harn_inbox._session`): a push never moves the version (what it appends, and
what it discards to make room or by coalescing, a reader copes with), nor
does an expiry; every other change to the pending entries moves it. And
whenever the version stayed, the pending entries are those of before, less
some, in their order, then the new ones: what a cursor relies on.

A run may start a few numbers short of the sequence's wrap (2**64-1 to 1).
Three defects this machine found there have regression tests at the end:
across the wrap, a read from a cursor repeated entries or missed new ones,
and a claim given back kept the older entry of a coalesce key.
"""

from __future__ import annotations

import json
import math
import operator
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from harn_inbox import Delivery, InboxEntry, InboxFull, ManualClock
from harn_inbox._entry import MAX_SEQUENCE
from harn_inbox._json import freeze
from harn_inbox._session import PushNote, PushOptions, SessionState
from harn_inbox.stores._snapshots import dump_session, load_session
from harn_inbox.testing import InboxModel

if TYPE_CHECKING:
    from collections.abc import Callable

    from hypothesis.stateful import MultipleResults

    from harn_inbox._session import Cursor, Meta
    from harn_inbox.testing._model import Claimed

#: The one session the machine drives.
SESSION = "s"
SOURCE = "test"

KINDS = st.sampled_from(["k", "tool_result"])
#: Contents a predicate can tell apart (see `PREDICATES`).
CONTENTS = st.sampled_from(["want", "want-2", "other", ""])
PAYLOADS = st.none() | st.integers(0, 3) | st.fixed_dictionaries({"handle": st.integers(0, 3)})
DELIVERIES = st.none() | st.sampled_from(list(Delivery))
#: Few keys, so that they meet.
KEYS = st.sampled_from([None, "x", "y"])
#: Seconds, as a user passes ``expires_in``: a few milliseconds, so that the clock reaches them.
EXPIRES_IN = st.none() | st.integers(0, 30).map(lambda ms: ms / 1000)
#: How many times a push rule pushes (the rules that take entries outnumber those that add).
TIMES = st.integers(1, 3)


def wanted(entry: InboxEntry) -> bool:
    return entry.content.startswith("want")


def even(entry: InboxEntry) -> bool:
    return entry.sequence % 2 == 0


def everything(entry: InboxEntry) -> bool:
    return True


def nothing(entry: InboxEntry) -> bool:
    return False


PREDICATES = st.sampled_from([wanted, even, everything, nothing])


def milliseconds(seconds: float) -> int:
    """*seconds* as whole milliseconds, rounded up: what `Inbox` hands its store."""
    return math.ceil(seconds * 1000)


def only_appended(before: list[InboxEntry], after: list[InboxEntry]) -> bool:
    """Whether *after* is *before* less some entries, in their order, then entries not in it.

    (By identity: what a cursor's holder may assume while the version stays.)
    """
    places = {id(entry): place for place, entry in enumerate(before)}
    last = -1
    kept = 0
    for entry in after:
        place = places.get(id(entry))
        if place is None:
            break
        if place <= last:
            return False
        last = place
        kept += 1
    return all(id(entry) not in places for entry in after[kept:])


@attrs.define
class Claim:
    """Entries a claim took from the session, their metas, and the model's side of it."""

    entries: list[InboxEntry]
    metas: list[Meta]
    modeled: Claimed


class SessionStateMachine(RuleBasedStateMachine):
    """One `SessionState` and one session of `InboxModel`, step by step."""

    drained = Bundle("drained")
    claims = Bundle("claims")

    def __init__(self) -> None:
        super().__init__()
        self.clock = ManualClock(start_ms=1_000_000)
        self.state = SessionState()
        self.model = InboxModel(clock=self.clock)
        self.max_pending: int | None = None
        self.drop_oldest = False
        self.dedupe_window_ms = 0
        #: The selective consumer's cursor, and every entry it read since it last started over.
        self.cursor: Cursor | None = None
        self.seen: list[InboxEntry] = []
        #: Whether the clock moved in the last step (the next step's operation must purge).
        self.clock_moved = False

    @initialize(
        max_pending=st.none() | st.integers(1, 4),
        drop_oldest=st.booleans(),
        dedupe_window=st.integers(0, 30).map(lambda ms: ms / 1000),
        near_wrap=st.booleans(),
    )
    def configure(
        self, max_pending: int | None, drop_oldest: bool, dedupe_window: float, near_wrap: bool
    ) -> None:
        self.max_pending = max_pending
        self.drop_oldest = drop_oldest
        self.dedupe_window_ms = milliseconds(dedupe_window)
        self.model = InboxModel(
            clock=self.clock,
            max_pending=max_pending,
            overflow="drop_oldest" if drop_oldest else "reject",
            dedupe_window=dedupe_window,
        )
        if near_wrap:
            # White-box: both counters a few short of 2**64-1, so that a run wraps to 1.
            self.state.last_sequence = MAX_SEQUENCE - 3
            self.model._session(SESSION).last_sequence = MAX_SEQUENCE - 3

    # -- Helpers ----------------------------------------------------------------------------------

    def purge(self) -> None:
        """What the store does first on a session with expiring entries; never moves the version."""
        if self.state.expires():
            version = self.state.version
            self.state.purge(self.clock.now_ms())
            assert self.state.version == version, "an expiry moved the version"

    def begin(self) -> tuple[int, list[InboxEntry]]:
        """Purge as the store would; return the version and the entries before an operation."""
        self.clock_moved = False
        self.purge()
        return self.state.version, self.state.entries()

    def check_version(self, version: int, before: list[InboxEntry], moved: bool | None) -> None:
        """The version rule, after an operation: *moved* says whether it must have moved.

        ``None``: either may be right; in any case an unmoved version means the
        pending entries changed only by appends and removals that keep the order.
        """
        after = self.state.entries()
        if moved is not None:
            assert (self.state.version != version) is moved, (
                f"version {'stayed' if moved else 'moved'} at {self.state.version}"
            )
        if self.state.version == version:
            assert only_appended(before, after), (before, after)

    def wraps(self) -> bool:
        """Whether the next sequence issued wraps to 1 (which moves the version)."""
        return self.state.last_sequence == MAX_SEQUENCE

    # -- Producing --------------------------------------------------------------------------------

    @rule(kind=KINDS, content=CONTENTS, times=TIMES)
    def push(self, kind: str, content: str, times: int) -> None:
        for _ in range(times):
            self.push_plain(kind, content)

    @rule(
        kind=KINDS,
        content=CONTENTS,
        payload=PAYLOADS,
        delivery=DELIVERIES,
        dedupe_key=KEYS,
        coalesce_key=KEYS,
        expires_in=EXPIRES_IN,
        times=TIMES,
    )
    def push_with(
        self,
        kind: str,
        content: str,
        payload: object,
        delivery: Delivery | None,
        dedupe_key: str | None,
        coalesce_key: str | None,
        expires_in: float | None,
        times: int,
    ) -> None:
        # Several pushes with the same keys: duplicates and coalescing meet.
        options = PushOptions(
            payload=freeze(payload, "payload"),
            delivery=delivery,
            dedupe_key=dedupe_key,
            coalesce_key=coalesce_key,
            expires_in_ms=None if expires_in is None else milliseconds(expires_in),
        )
        keywords = {
            "payload": payload,
            "delivery": delivery,
            "dedupe_key": dedupe_key,
            "coalesce_key": coalesce_key,
            "expires_in": expires_in,
        }
        for _ in range(times):
            self.push_with_options(kind, content, options, keywords)

    def push_plain(self, kind: str, content: str) -> None:
        version, before = self.begin()
        wraps = self.wraps()
        now = self.clock.now_ms()
        try:
            modeled = self.model.push(SESSION, kind, content, SOURCE)
        except InboxFull:
            try:
                self.state.push(
                    SESSION, kind, content, SOURCE, now, self.max_pending, self.drop_oldest
                )
            except InboxFull:
                pass
            else:
                raise AssertionError("the model refused the push; the session took it") from None
            assert self.state.entries() == before
            self.check_version(version, before, moved=False)
            return
        pushed = self.state.push(
            SESSION, kind, content, SOURCE, now, self.max_pending, self.drop_oldest
        )
        if type(pushed) is PushNote:
            assert pushed.dropped is before[0]
            assert pushed.dropped_total == self.state.dropped
            entry = pushed.entry
        else:
            assert type(pushed) is InboxEntry
            entry = pushed
        assert entry == modeled
        assert self.state.entries()[-1] is entry
        self.check_version(version, before, moved=wraps)

    def push_with_options(
        self, kind: str, content: str, options: PushOptions, keywords: dict[str, Any]
    ) -> None:
        version, before = self.begin()
        wraps = self.wraps()
        now = self.clock.now_ms()

        def push_state() -> InboxEntry | PushNote:
            return self.state.push_with(
                SESSION,
                kind,
                content,
                SOURCE,
                now,
                self.max_pending,
                self.drop_oldest,
                options,
                self.dedupe_window_ms,
            )

        try:
            modeled = self.model.push(SESSION, kind, content, SOURCE, **keywords)
        except InboxFull:
            try:
                push_state()
            except InboxFull:
                pass
            else:
                raise AssertionError("the model refused the push; the session took it") from None
            assert self.state.entries() == before
            self.check_version(version, before, moved=False)
            return
        pushed = push_state()
        after = self.state.entries()
        if type(pushed) is PushNote:
            entry = pushed.entry
            if pushed.duplicate:
                assert after == before, "a duplicate stored something"
                assert entry == modeled
                self.check_version(version, before, moved=False)
                return
            if pushed.dropped is not None:
                assert pushed.dropped in before
                assert pushed.dropped not in after
                assert pushed.dropped_total == self.state.dropped
            if pushed.coalesced is not None:
                assert pushed.coalesced in before
                assert pushed.coalesced not in after
        else:
            assert type(pushed) is InboxEntry
            entry = pushed
        assert entry == modeled
        assert after[-1] is entry
        self.check_version(version, before, moved=wraps)

    @rule()
    def reserve_sequence(self) -> None:
        version, before = self.begin()
        wraps = self.wraps()
        assert self.state.reserve_sequence() == self.model.reserve_sequence(SESSION)
        self.check_version(version, before, moved=wraps)

    @rule(entry=drained)
    def requeue_front(self, entry: InboxEntry) -> None:
        version, before = self.begin()
        try:
            self.model.requeue_front(entry)
        except ValueError:
            try:
                self.state.requeue_front(entry)
            except ValueError:
                pass
            else:
                raise AssertionError("the model refused the requeue; the session took it") from None
            self.check_version(version, before, moved=False)
            return
        self.state.requeue_front(entry)
        assert self.state.entries()[0] is entry
        self.check_version(version, before, moved=True)

    # -- Consuming --------------------------------------------------------------------------------

    @rule(target=drained)
    def drain(self) -> MultipleResults[InboxEntry]:
        version, before = self.begin()
        entries = self.state.drain()
        assert entries == self.model.drain(SESSION)
        assert entries == before
        self.check_version(version, before, moved=bool(entries))
        return multiple(*entries)

    @rule(sequence_back=st.integers(0, 6))
    def revoke(self, sequence_back: int) -> None:
        # A sequence at most six before the last issued: pending, taken or never pushed.
        version, before = self.begin()
        sequence = (self.state.last_sequence - sequence_back - 1) % MAX_SEQUENCE + 1
        revoked = self.state.revoke(sequence)
        assert revoked == self.model.revoke(SESSION, sequence)
        assert revoked is None or revoked in before
        self.check_version(version, before, moved=revoked is not None)

    @rule()
    def read(self) -> None:
        # A selective consumer reads what it has not judged yet (Judge.look's first step).
        version, before = self.begin()
        cursor, entries, restarted = self.state.read(self.cursor)
        self.check_version(version, before, moved=False)
        assert restarted is (self.cursor is None or self.cursor.version != version)
        pending = self.state.entries()
        if restarted:
            assert entries == pending
            self.seen = entries
        else:
            # Nothing was put ahead of what it judged, and the new entries are the tail.
            still = {id(entry) for entry in pending}
            assert [entry for entry in self.seen if id(entry) in still] + entries == pending
            self.seen += entries
        self.cursor = cursor

    def judged(self, predicate: Callable[[InboxEntry], bool]) -> tuple[Cursor, list[InboxEntry]]:
        """The cursor and what *predicate* accepts of what the consumer read (outside any lock)."""
        assert self.cursor is not None
        cursor, self.cursor = self.cursor, None  # a take ends a look, or it reads again
        return cursor, [entry for entry in self.seen if predicate(entry)]

    @precondition(lambda self: self.cursor is not None)
    @rule(predicate=PREDICATES)
    def take(self, predicate: Callable[[InboxEntry], bool]) -> None:
        cursor, chosen = self.judged(predicate)
        version, before = self.begin()
        taken = self.state.take(cursor, chosen)
        if taken is None:
            assert version != cursor.version
            self.check_version(version, before, moved=False)
            return
        assert version == cursor.version
        # The model takes what the consumer chose of what is pending now.
        assert taken == self.model.take_matching(SESSION, lambda entry: entry in chosen)
        self.check_version(version, before, moved=bool(taken))

    @precondition(lambda self: self.cursor is not None)
    @rule(target=claims, predicate=PREDICATES)
    def claim_judged(self, predicate: Callable[[InboxEntry], bool]) -> MultipleResults[Claim]:
        # `async with inbox.claim(sid, predicate)`: a take that keeps the metas.
        cursor, chosen = self.judged(predicate)
        version, before = self.begin()
        metas: list[Meta] = []
        taken = self.state.take(cursor, chosen, metas)
        if taken is None:
            assert version != cursor.version
            self.check_version(version, before, moved=False)
            return multiple()
        modeled = self.model.claim(SESSION, lambda entry: entry in chosen)
        assert taken == modeled.entries
        assert len(metas) == len(taken)
        self.check_version(version, before, moved=bool(taken))
        return multiple(Claim(taken, metas, modeled)) if taken else multiple()

    @rule(target=claims)
    def claim_all(self) -> MultipleResults[Claim]:
        # `async with inbox.claim(sid)`: a drain that keeps the metas.
        version, before = self.begin()
        metas: list[Meta] = []
        taken = self.state.drain(metas)
        modeled = self.model.claim(SESSION)
        assert taken == modeled.entries
        assert len(metas) == len(taken)
        self.check_version(version, before, moved=bool(taken))
        return multiple(Claim(taken, metas, modeled)) if taken else multiple()

    @rule(claim=consumes(claims))
    def restore(self, claim: Claim) -> None:
        # The claim's block raised: its entries go back first, with what they carried.
        version, before = self.begin()
        restored = self.state.restore(claim.entries, claim.metas)
        assert restored == self.model.release(claim.modeled)
        self.check_version(version, before, moved=None)
        if restored:
            assert self.state.version != version

    # -- Time -------------------------------------------------------------------------------------

    @rule(ms=st.integers(0, 12))
    def advance_clock(self, ms: int) -> None:
        self.clock.set(self.clock.now_ms() + ms)
        self.clock_moved = True

    @precondition(lambda self: bool(self.model.deadlines_ms()))
    @rule(nth=st.integers(0, 2), early=st.booleans())
    def advance_clock_to_deadline(self, nth: int, early: bool) -> None:
        # To when an entry expires or a dedupe window closes, or 1 ms short of it.
        deadlines = self.model.deadlines_ms()
        self.clock.set(deadlines[min(nth, len(deadlines) - 1)] - early)
        self.clock_moved = True

    # -- A snapshot -------------------------------------------------------------------------------

    @rule()
    def reload(self) -> None:
        # What a Redis replica does when another process compacted the log past
        # it: the session is made again from its snapshot, as JSON, in the same
        # object. Nothing changes: not the version (the cursor reads on), not
        # where each entry sits, not the entries themselves (a reader holds them).
        before = self.state.entries()
        dumped = dump_session(self.state)
        load_session(json.loads(json.dumps(dumped)), self.state)
        assert dump_session(self.state) == dumped
        assert all(map(operator.is_, self.state.entries(), before))

    # -- After every step -------------------------------------------------------------------------

    @precondition(lambda self: not self.clock_moved)
    @invariant()
    def as_the_model(self) -> None:
        # Not right after the clock moved: purging here would leave the next
        # operation nothing expired to purge, and one that forgot to would pass.
        self.purge()
        assert self.state.entries() == self.model.snapshot(SESSION)
        statistics = self.model.statistics(SESSION)
        for name, count in self.state.counters().items():
            assert count == getattr(statistics, name), name
        assert self.state.pending_count() == statistics.pending


def test_session_state_behaves_as_the_model() -> None:
    run_state_machine_as_test(
        SessionStateMachine,
        settings=settings(max_examples=500, stateful_step_count=40, deadline=None),
    )


@pytest.mark.parametrize("removal", ["expiry", "coalesce"])
def test_a_read_after_the_sequence_wrapped_returns_only_what_was_appended(removal: str) -> None:
    # Entries 2**64-2 and 2**64-1 are pending, then the counter wraps and
    # entry 1 is pushed (the version moves). A consumer reads all three. Entry
    # 1 leaves without a new version (it expires, or a coalescing push
    # replaces it with entry 2). Reading on from the cursor should return what
    # was appended since: nothing, or entry 2. It also returns 2**64-2 and
    # 2**64-1 again (its tail is "the keys above the cursor's last", and
    # after the wrap older keys are above it), so a wait_for judges them twice.
    state = SessionState()
    state.last_sequence = MAX_SEQUENCE - 2
    state.push(SESSION, "k", "a", SOURCE, 0, None, False)
    state.push(SESSION, "k", "b", SOURCE, 0, None, False)
    if removal == "expiry":
        state.push_with(SESSION, "k", "c", SOURCE, 0, None, False, PushOptions(expires_in_ms=1), 0)
    else:
        state.push_with(SESSION, "k", "c", SOURCE, 0, None, False, PushOptions(coalesce_key="x"), 0)
    cursor, entries, restarted = state.read(None)
    assert [entry.content for entry in entries] == ["a", "b", "c"]
    if removal == "expiry":
        assert [entry.content for entry in state.purge(1)] == ["c"]
        appended = []
    else:
        state.push_with(SESSION, "k", "d", SOURCE, 0, None, False, PushOptions(coalesce_key="x"), 0)
        appended = ["d"]
    cursor, tail, restarted = state.read(cursor)
    assert not restarted
    assert [entry.content for entry in tail] == appended  # a and b came again


def test_a_read_after_the_sequence_wrapped_returns_an_entry_appended_since() -> None:
    # The counter wraps on a reserved number (the version moves); the
    # consumer then reads, its cursor's last key being 2**64-1's predecessor.
    # Entry 2 is appended: a read from the cursor should return it, but its
    # tail stops at the first key not above the cursor's, which 2 is not, so a
    # parked wait_for would never judge it.
    state = SessionState()
    state.last_sequence = MAX_SEQUENCE - 2
    state.push(SESSION, "k", "a", SOURCE, 0, None, False)
    state.reserve_sequence()
    state.reserve_sequence()  # wraps to 1
    cursor, entries, restarted = state.read(None)
    assert [entry.content for entry in entries] == ["a"]
    state.push(SESSION, "k", "b", SOURCE, 0, None, False)
    cursor, tail, restarted = state.read(cursor)
    assert not restarted
    assert [entry.content for entry in tail] == ["b"]  # it was missed


def test_a_claim_given_back_across_the_wrap_keeps_the_newer_entry_of_its_coalesce_key() -> None:
    # Entry 2**64-1 (key "x") is claimed; a push with key "x" wraps to entry 1.
    # The claim fails: the model keeps entry 1, the newer push (latest wins),
    # and counts the claimed one as coalesced; SessionState compares sequences,
    # takes 1 for the older, and puts the claimed entry back in its place.
    clock = ManualClock()
    model = InboxModel(clock=clock)
    model._session(SESSION).last_sequence = MAX_SEQUENCE - 1
    state = SessionState()
    state.last_sequence = MAX_SEQUENCE - 1
    keyed = PushOptions(coalesce_key="x")
    state.push_with(SESSION, "k", "old", SOURCE, 0, None, False, keyed, 0)
    model.push(SESSION, "k", "old", SOURCE, coalesce_key="x")
    metas: list[Meta] = []
    claimed, modeled = state.drain(metas), model.claim(SESSION)
    state.push_with(SESSION, "k", "new", SOURCE, 0, None, False, keyed, 0)
    model.push(SESSION, "k", "new", SOURCE, coalesce_key="x")
    assert model.release(modeled) == 0
    assert [entry.content for entry in model.snapshot(SESSION)] == ["new"]
    assert state.restore(claimed, metas) == 0  # it was put back
    assert [entry.content for entry in state.entries()] == ["new"]


def test_a_snapshot_keeps_entries_of_two_lives_sharing_a_sequence_in_their_order() -> None:
    # Entries of earlier lives put back beside one another share sequence 1:
    # `front` keys all but one as strays. A session made from the snapshot
    # holds them in the same order, finds them as the first did, and gives up
    # its head the same way.
    state = SessionState()
    state.push_with(SESSION, "k", "new", SOURCE, 0, None, False, PushOptions(expires_in_ms=5), 0)
    for content in ("older", "oldest"):
        state.requeue_front(
            InboxEntry(
                sequence=1, session_id=SESSION, kind="k", content=content, source=SOURCE, ts_ms=0
            )
        )
    assert state.strays == 1
    made = SessionState()
    load_session(json.loads(json.dumps(dump_session(state))), made)
    assert made.entries() == state.entries()
    assert made.strays == 1
    assert made._with_sequence(1) == state._with_sequence(1)
    assert [entry.content for entry in made.purge(5)] == ["new"]
    assert made._pop_head() == state._pop_head()
    assert made.strays == state.strays == 0
