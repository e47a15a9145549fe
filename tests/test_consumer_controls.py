"""Consumer controls: ``wait_for(limit=)``, ``claim`` (at-least-once hand-off) and ``wait_any``.

Every async behaviour runs on trio and asyncio (the ``backend`` fixture);
``wait_any`` runs in a task and in a thread (``wait_any_sync``) on each. A
wait is seen to park by `waiter_count`, timeouts run on a `ManualClock`, and
cancellation points are named and requested by the test, never found by timing.
"""

from __future__ import annotations

import functools
import threading
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from _support import requeued_beside_a_twin

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from _support import ThreadCall
    from conftest import Backend, TaskGroup, TaskHandle

    from harn_inbox import Claim, Inbox, InboxEntry, ManualClock


class Boom(Exception):
    """What a failing handler raises."""


def nudge(inbox: Inbox, content: str, session_id: str = "s", **options: Any) -> InboxEntry:
    return inbox.push(session_id, "tool_result", content, "worker", **options)


def matching(entry: InboxEntry) -> bool:
    return entry.content.startswith("m")


def is_parked(inbox: Inbox, session_id: str) -> bool:
    """Whether a wait on *session_id* is parked (white-box: the parking lot's map).

    A notify takes every waiter of its session out of this map before waking
    them, so a wait still in it after a change was not woken by that change.
    """
    return session_id in inbox._lot.parked


def release_with(claim_entered: Claim, error: BaseException) -> None:
    """Leave a claim entered by hand (``__enter__``) as a block raising *error* would."""
    claim_entered.__exit__(type(error), error, None)


# -- wait_for(limit=) ----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3, 10])
def test_wait_for_with_a_limit_takes_the_oldest_matches_and_leaves_the_rest_in_order(
    backend: Backend, inbox: Inbox, limit: int
) -> None:
    entries = [nudge(inbox, content) for content in ("m1", "x1", "m2", "m3", "x2")]
    matches = [entry for entry in entries if matching(entry)]

    taken = backend.run(lambda: inbox.wait_for("s", matching, limit=limit))
    assert taken == matches[:limit]
    assert inbox.snapshot("s") == [entry for entry in entries if entry not in taken]


def test_wait_for_with_limit_one_takes_a_single_match_for_unpacking(
    backend: Backend, inbox: Inbox
) -> None:
    first, second = nudge(inbox, "m1"), nudge(inbox, "m2")

    async def main() -> InboxEntry:
        [result] = await inbox.wait_for("s", matching, limit=1)
        return result

    assert backend.run(main) is first
    assert inbox.snapshot("s") == [second]


@pytest.mark.parametrize("limit", [1, 2])
def test_wait_for_with_a_limit_after_parking_takes_at_most_limit(
    backend: Backend, inbox: Inbox, limit: int
) -> None:
    pushed: list[InboxEntry] = []

    async def main() -> list[InboxEntry]:
        wait_for = functools.partial(inbox.wait_for, "s", matching, limit=limit)
        async with backend.parked(inbox, wait_for, session_id="s") as waiter:
            # All at once, with no checkpoint in between: the wait sees them all.
            pushed.extend(nudge(inbox, content) for content in ("m1", "x", "m2", "m3"))
        result: list[InboxEntry] = waiter.result
        return result

    taken = backend.run(main)
    matches = [entry for entry in pushed if matching(entry)]
    assert taken == matches[:limit]
    assert inbox.snapshot("s") == [entry for entry in pushed if entry not in taken]


# -- claim: taking, settling, restoring ----------------------------------------------------------


@pytest.mark.parametrize("predicate", [None, matching], ids=["all", "predicate"])
def test_claim_takes_the_entries_and_a_normal_exit_removes_them(
    inbox: Inbox, predicate: Callable[[InboxEntry], bool] | None
) -> None:
    entries = [nudge(inbox, content) for content in ("m1", "x1", "m2")]
    claimed = [entry for entry in entries if predicate is None or predicate(entry)]
    rest = [entry for entry in entries if entry not in claimed]
    with inbox.claim("s", predicate) as taken:
        assert taken == claimed
        assert inbox.snapshot("s") == rest  # held by the claim, not pending
    assert inbox.snapshot("s") == rest
    assert nudge(inbox, "next").sequence == 4


@pytest.mark.parametrize("session_id", ["s", "unknown"])
def test_claim_of_a_session_without_entries_gives_an_empty_list(
    inbox: Inbox, session_id: str
) -> None:
    nudge(inbox, "x")
    inbox.drain("s")
    with inbox.claim(session_id) as taken:
        assert taken == []
    with pytest.raises(Boom), inbox.claim(session_id):
        raise Boom
    assert inbox.snapshot(session_id) == []


@pytest.mark.parametrize("predicate", [None, matching], ids=["all", "predicate"])
def test_claim_raising_puts_its_entries_back_at_the_head_in_their_order(
    inbox: Inbox, predicate: Callable[[InboxEntry], bool] | None
) -> None:
    entries = [nudge(inbox, content) for content in ("m1", "x1", "m2")]
    claimed = [entry for entry in entries if predicate is None or predicate(entry)]
    rest = [entry for entry in entries if entry not in claimed]
    error = Boom()
    with pytest.raises(Boom) as raised, inbox.claim("s", predicate):  # noqa: PT012 (a claim's block)
        later = nudge(inbox, "pushed during the claim")
        raise error
    assert raised.value is error
    restored = inbox.snapshot("s")
    assert restored == [*claimed, *rest, later]
    assert all(back is held for back, held in zip(restored, [*claimed, *rest, later], strict=True))


def test_a_restored_entry_keeps_its_coalesce_key(inbox: Inbox) -> None:
    nudge(inbox, "progress 10%", coalesce_key="job")
    with pytest.raises(Boom), inbox.claim("s"):
        raise Boom
    newer = nudge(inbox, "progress 50%", coalesce_key="job")
    assert inbox.snapshot("s") == [newer]
    assert inbox.statistics("s").coalesced == 1


def test_a_restored_entry_loses_to_a_newer_entry_of_its_coalesce_key(inbox: Inbox) -> None:
    nudge(inbox, "progress 10%", coalesce_key="job")
    with pytest.raises(Boom), inbox.claim("s"):  # noqa: PT012 (a claim's block)
        newer = nudge(inbox, "progress 50%", coalesce_key="job")
        raise Boom
    assert inbox.snapshot("s") == [newer]
    assert inbox.statistics("s").coalesced == 1


@pytest.mark.parametrize("expires_while_claimed", [False, True], ids=["after", "during"])
def test_a_restored_entry_still_expires(
    inbox: Inbox, clock: ManualClock, expires_while_claimed: bool
) -> None:
    short_lived = nudge(inbox, "short-lived", expires_in=5)
    lasting = nudge(inbox, "lasting")
    with pytest.raises(Boom), inbox.claim("s"):  # noqa: PT012 (a claim's block)
        if expires_while_claimed:
            clock.advance(5)
        raise Boom
    if not expires_while_claimed:
        assert inbox.snapshot("s") == [short_lived, lasting]
        clock.advance(5)
    assert inbox.snapshot("s") == [lasting]
    assert inbox.statistics("s").expired == 1


@pytest.mark.parametrize(
    "restore_first", [False, True], ids=["push-then-restore", "restore-then-push"]
)
def test_a_claim_restored_across_clear_session_keeps_expiry_beside_a_new_entry(
    inbox: Inbox, clock: ManualClock, restore_first: bool
) -> None:
    # requeue_front's docstring: an entry of the session's earlier life goes
    # back as it was, even if its sequence equals one the restarted counter issued.
    earlier = nudge(inbox, "earlier life", expires_in=5)
    with pytest.raises(Boom), inbox.claim("s"):  # noqa: PT012 (a claim's block)
        inbox.clear_session("s")
        if not restore_first:
            later = nudge(inbox, "later life", expires_in=5)
        raise Boom
    if restore_first:
        later = nudge(inbox, "later life", expires_in=5)
    assert later.sequence == earlier.sequence
    assert inbox.snapshot("s") == [earlier, later]
    clock.advance(5)
    assert inbox.snapshot("s") == []
    assert inbox.statistics("s").expired == 2


def test_a_claim_is_entered_once(inbox: Inbox) -> None:
    nudge(inbox, "x")
    claim = inbox.claim("s")
    with claim as taken:
        assert len(taken) == 1
    nudge(inbox, "y")
    with pytest.raises(RuntimeError, match="entered once"), claim:
        pass
    assert [entry.content for entry in inbox.snapshot("s")] == ["y"]


def test_a_claim_raising_puts_back_two_equal_entries_it_took(inbox: Inbox) -> None:
    # Entries equal as values but distinct: one requeued from before a clear,
    # one pushed since (same sequence, same clock reading). Each goes back;
    # only an entry already pending before the claim ended stays out.
    old, new = requeued_beside_a_twin(inbox, "s")
    assert new == old
    with pytest.raises(Boom), inbox.claim("s") as taken:  # noqa: PT012 (a claim's block)
        assert taken == [old, new]
        raise Boom
    restored = inbox.snapshot("s")
    assert restored == [old, new]
    assert restored[0] is old
    assert restored[1] is new


def test_a_claim_raising_after_close_puts_its_entries_back(inbox: Inbox) -> None:
    entries = [nudge(inbox, content) for content in ("a", "b")]
    with pytest.raises(Boom), inbox.claim("s"):  # noqa: PT012 (a claim's block)
        inbox.close()
        raise Boom
    assert inbox.drain("s") == entries


def test_a_claim_whose_predicate_raises_takes_nothing(inbox: Inbox) -> None:
    entries = [nudge(inbox, content) for content in ("m1", "x1")]

    def broken(entry: InboxEntry) -> bool:
        raise Boom

    with pytest.raises(Boom), inbox.claim("s", broken):
        pytest.fail("the block ran")
    assert inbox.snapshot("s") == entries


# -- claim: async with, wakes, concurrency -------------------------------------------------------


def test_async_with_claim_settles_on_a_normal_exit_and_restores_on_an_error(
    backend: Backend, inbox: Inbox
) -> None:
    first, second = nudge(inbox, "m1"), nudge(inbox, "x1")

    async def main() -> None:
        with pytest.raises(Boom):  # noqa: PT012 (a claim's block)
            async with inbox.claim("s") as taken:
                assert taken == [first, second]
                await backend.checkpoint()
                raise Boom
        assert inbox.snapshot("s") == [first, second]
        async with inbox.claim("s", matching) as taken:
            assert taken == [first]
            await backend.checkpoint()
        assert inbox.snapshot("s") == [second]

    backend.run(main)


def test_an_async_claim_is_entered_once(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        claim = inbox.claim("s")
        async with claim:
            pass
        with pytest.raises(RuntimeError, match="entered once"):
            async with claim:
                pass

    backend.run(main)


WAITS: dict[str, Callable[[Inbox], Awaitable[object]]] = {
    "wait": lambda inbox: inbox.wait("s"),
    "wait_for": lambda inbox: inbox.wait_for("s", matching),
    "wait_any": lambda inbox: inbox.wait_any(["other", "s"]),
}


@pytest.mark.parametrize("wait", WAITS)
def test_claim_raising_wakes_the_waiters_of_its_session(
    backend: Backend, inbox: Inbox, wait: str
) -> None:
    claimed = nudge(inbox, "m1")

    async def main() -> object:
        async with backend.task_group() as group:
            with pytest.raises(Boom), inbox.claim("s"):  # noqa: PT012 (a claim's block)
                waiter = group.start_soon(WAITS[wait], inbox)
                await backend.wait_parked(inbox, "s")
                raise Boom
        return waiter.result

    assert backend.run(main) == {"wait": True, "wait_for": [claimed], "wait_any": "s"}[wait]


def test_claim_raising_in_one_task_while_another_pushes_keeps_fifo_order(
    backend: Backend, inbox: Inbox
) -> None:
    claimed = [nudge(inbox, content) for content in ("c1", "c2")]
    pushed: list[InboxEntry] = []

    async def main() -> None:
        entered, pushed_all = backend.event(), backend.event()

        async def failing_handler() -> None:
            with pytest.raises(Boom):  # noqa: PT012 (a claim's block)
                async with inbox.claim("s") as taken:
                    assert taken == claimed
                    entered.set()
                    await pushed_all.wait()
                    raise Boom

        async def producer() -> None:
            await entered.wait()
            for content in ("p1", "p2", "p3"):
                pushed.append(nudge(inbox, content))
                await backend.checkpoint()
            pushed_all.set()

        async with backend.task_group() as group:
            group.start_soon(failing_handler)
            group.start_soon(producer)

    backend.run(main)
    assert inbox.snapshot("s") == [*claimed, *pushed]


def test_claims_raising_while_a_thread_pushes_keep_sequence_order(
    backend: Backend, inbox: Inbox, run_in_thread: Callable[..., ThreadCall]
) -> None:
    # Each claim takes everything; what it restores is older than whatever the
    # thread pushed meanwhile, so however the two interleave, the session ends
    # up in sequence order with nothing lost and nothing twice.
    pushes = 300
    done = threading.Event()

    def producer() -> None:
        for index in range(pushes):
            nudge(inbox, f"p{index}")
        done.set()

    async def main() -> None:
        rounds = 0
        run_in_thread(producer)
        while not done.is_set() or rounds < 10:
            with pytest.raises(Boom):  # noqa: PT012 (a claim's block)
                async with inbox.claim("s"):
                    await backend.checkpoint()
                    raise Boom
            rounds += 1

    backend.run_in_real_time(main)
    assert [entry.sequence for entry in inbox.snapshot("s")] == list(range(1, pushes + 1))


# -- claim: cancellation at every point ----------------------------------------------------------

#: Where the consumer below is cancelled: by the test just after starting it
#: ("before_start"), by itself just before a named step, or by the test while
#: it is parked inside the block ("parked_in_block"); "never" is the control.
CANCEL_POINTS = [
    "before_start",
    "before_enter",
    "in_block",
    "parked_in_block",
    "before_exit",
    "after_exit",
    "never",
]


async def consume(
    backend: Backend,
    inbox: Inbox,
    predicate: Callable[[InboxEntry], bool] | None,
    point: str,
    cancel: Callable[[], None],
    handled: list[InboxEntry],
) -> None:
    """Handle a claim's entries, recording them in *handled* as the block's last act."""
    if point == "before_enter":
        cancel()
    async with inbox.claim("s", predicate) as entries:
        if point == "in_block":
            cancel()
        await backend.checkpoint()
        if point == "parked_in_block":
            await inbox.wait("elsewhere")
        handled.extend(entries)
        if point == "before_exit":
            cancel()
    if point == "after_exit":
        cancel()
    await backend.checkpoint()


@pytest.mark.parametrize("point", CANCEL_POINTS)
@pytest.mark.parametrize("predicate", [None, matching], ids=["all", "predicate"])
def test_cancelling_async_with_claim_loses_nothing_and_delivers_nothing_twice(
    backend: Backend,
    inbox: Inbox,
    point: str,
    predicate: Callable[[InboxEntry], bool] | None,
) -> None:
    entries = [nudge(inbox, content) for content in ("m1", "x1", "m2", "x2")]
    claimable = [entry for entry in entries if predicate is None or predicate(entry)]
    handled: list[InboxEntry] = []

    async def main() -> TaskHandle:
        async with backend.task_group() as group:
            handles: list[TaskHandle] = []
            handle = group.start_soon(
                consume, backend, inbox, predicate, point, lambda: handles[0].cancel(), handled
            )
            handles.append(handle)
            if point == "before_start":
                handle.cancel()
            if point == "parked_in_block":
                await backend.wait_parked(inbox, "elsewhere")
                handle.cancel()
        return handle

    handle = backend.run(main)
    assert isinstance(handle.raised, backend.cancelled) == (point != "never")
    pending = inbox.snapshot("s")
    # Nothing lost, nothing twice: each entry is handled or pending, exactly once.
    assert sorted([*handled, *pending], key=lambda entry: entry.sequence) == entries
    rest = [entry for entry in entries if entry not in claimable]
    restored = [*claimable, *rest]
    if point in ("before_exit", "after_exit", "never"):
        assert (handled, pending) == (claimable, rest)
    elif point == "before_start" or (point == "before_enter" and backend.name == "trio"):
        assert (handled, pending) == ([], entries)  # never taken: trio checks before taking
    else:  # taken, then given back where the cancellation struck
        assert (handled, pending) == ([], restored)


# -- wait_any ------------------------------------------------------------------------------------


@attrs.frozen
class AnyWaiter:
    """``wait_any`` in a task of *backend*, or ``wait_any_sync`` in a worker thread of it."""

    backend: Backend
    in_thread: bool

    def run(self, main: Callable[[], Awaitable[Any]]) -> Any:
        # A thread's wait keeps real time (see Backend.run_in_real_time); timeouts use ManualClock.
        return (self.backend.run_in_real_time if self.in_thread else self.backend.run)(main)

    @asynccontextmanager
    async def task_group(self, inbox: Inbox) -> AsyncIterator[TaskGroup]:
        async with self.backend.task_group() as group:
            try:
                yield group
            except BaseException:
                inbox.close()  # a thread still waiting must not hold a failed test's group open
                raise

    def start(
        self, group: TaskGroup, inbox: Inbox, session_ids: list[str], timeout: float | None = None
    ) -> TaskHandle:
        if self.in_thread:
            return group.start_soon(
                self.backend.to_thread, inbox.wait_any_sync, session_ids, timeout
            )
        return group.start_soon(inbox.wait_any, session_ids, timeout)

    async def parked(self, inbox: Inbox, session_id: str) -> None:
        if self.in_thread:
            await self.backend.wait_thread_parked(inbox, session_id)
        else:
            await self.backend.wait_parked(inbox, session_id)

    async def still_waiting(self, inbox: Inbox, handle: TaskHandle, *session_ids: str) -> None:
        """Check that the wait stays parked on *session_ids* after others had a chance to run."""
        for _ in range(3):
            await (self.backend.to_thread(lambda: None) if self.in_thread else self.backend.turns())
        assert not handle.finished
        assert all(is_parked(inbox, session_id) for session_id in session_ids)


@pytest.fixture(params=["task", "thread"])
def any_waiter(request: pytest.FixtureRequest, backend: Backend) -> AnyWaiter:
    return AnyWaiter(backend, in_thread=request.param == "thread")


def wait_any_around(
    any_waiter: AnyWaiter,
    inbox: Inbox,
    session_ids: list[str],
    meanwhile: Callable[[TaskHandle], Awaitable[object]],
    timeout: float | None = None,
) -> object:
    """Start a wait_any on *session_ids*, see it park on the first, run *meanwhile*; its result."""

    async def main() -> object:
        async with any_waiter.task_group(inbox) as group:
            handle = any_waiter.start(group, inbox, session_ids, timeout)
            await any_waiter.parked(inbox, session_ids[0])
            await meanwhile(handle)
        return handle.result

    return any_waiter.run(main)


@pytest.mark.parametrize(
    ("session_ids", "found"),
    [(["a", "b", "c"], "b"), (["a", "c", "b"], "c"), (["c", "b"], "c"), (["b"], "b")],
)
def test_wait_any_returns_at_once_the_first_session_in_the_order_given_with_entries(
    any_waiter: AnyWaiter, inbox: Inbox, session_ids: list[str], found: str
) -> None:
    nudge(inbox, "x", session_id="b")
    nudge(inbox, "y", session_id="c")

    async def main() -> object:
        async with any_waiter.task_group(inbox) as group:
            handle = any_waiter.start(group, inbox, session_ids)
        return handle.result

    assert any_waiter.run(main) == found
    assert inbox.pending_count("b") == inbox.pending_count("c") == 1  # it takes nothing


def give_b_an_entry_by_push(inbox: Inbox) -> Callable[[], object]:
    return lambda: nudge(inbox, "x", session_id="b")


def give_b_an_entry_by_requeue(inbox: Inbox) -> Callable[[], object]:
    nudge(inbox, "x", session_id="b")
    (entry,) = inbox.drain("b")
    return lambda: inbox.requeue_front(entry)


def give_b_an_entry_by_a_failed_claim(inbox: Inbox) -> Callable[[], object]:
    nudge(inbox, "x", session_id="b")
    claim = inbox.claim("b")
    claim.__enter__()
    return lambda: release_with(claim, Boom())


@pytest.mark.parametrize(
    "prepare",
    [give_b_an_entry_by_push, give_b_an_entry_by_requeue, give_b_an_entry_by_a_failed_claim],
    ids=["push", "requeue_front", "claim-raising"],
)
def test_wait_any_parks_until_one_of_its_sessions_gets_an_entry(
    any_waiter: AnyWaiter, inbox: Inbox, prepare: Callable[[Inbox], Callable[[], object]]
) -> None:
    give_entry = prepare(inbox)

    async def meanwhile(handle: TaskHandle) -> None:
        await any_waiter.still_waiting(inbox, handle, "a", "b")
        give_entry()

    assert wait_any_around(any_waiter, inbox, ["a", "b"], meanwhile) == "b"
    assert inbox.pending_count("b") == 1


def test_wait_any_is_woken_only_by_its_own_sessions(any_waiter: AnyWaiter, inbox: Inbox) -> None:
    async def meanwhile(handle: TaskHandle) -> None:
        for elsewhere in ("c", "", "ab"):
            nudge(inbox, "not for it", session_id=elsewhere)
            assert is_parked(inbox, "a"), f"a push to {elsewhere!r} woke it"
        await any_waiter.still_waiting(inbox, handle, "a", "b")
        nudge(inbox, "for it", session_id="a")

    assert wait_any_around(any_waiter, inbox, ["a", "b"], meanwhile) == "a"


def test_wait_any_returns_none_on_timeout(
    any_waiter: AnyWaiter, inbox: Inbox, clock: ManualClock
) -> None:
    async def meanwhile(handle: TaskHandle) -> None:
        clock.advance(4.999)
        await any_waiter.still_waiting(inbox, handle, "a", "b")
        clock.advance(0.001)

    assert wait_any_around(any_waiter, inbox, ["a", "b"], meanwhile, timeout=5) is None
    assert inbox.waiter_count("a") == inbox.waiter_count("b") == 0


def test_wait_any_returns_none_on_close(any_waiter: AnyWaiter, inbox: Inbox) -> None:
    async def meanwhile(handle: TaskHandle) -> None:
        inbox.close()

    assert wait_any_around(any_waiter, inbox, ["a", "b"], meanwhile) is None


def test_wait_any_returns_none_once_every_one_of_its_sessions_was_cleared(
    any_waiter: AnyWaiter, inbox: Inbox
) -> None:
    async def meanwhile(handle: TaskHandle) -> None:
        inbox.clear_session("a")
        await any_waiter.still_waiting(inbox, handle, "b")
        inbox.clear_session("b")

    assert wait_any_around(any_waiter, inbox, ["a", "b"], meanwhile) is None


def test_wait_any_keeps_waiting_when_one_of_two_sessions_is_cleared(
    any_waiter: AnyWaiter, inbox: Inbox
) -> None:
    async def meanwhile(handle: TaskHandle) -> None:
        inbox.clear_session("a")
        await any_waiter.still_waiting(inbox, handle, "b")
        nudge(inbox, "x", session_id="b")

    assert wait_any_around(any_waiter, inbox, ["a", "b"], meanwhile) == "b"


def test_wait_any_takes_duplicate_session_ids(any_waiter: AnyWaiter, inbox: Inbox) -> None:
    async def meanwhile(handle: TaskHandle) -> None:
        assert inbox.waiter_count("a") == 1
        await any_waiter.still_waiting(inbox, handle, "a", "b")
        nudge(inbox, "x", session_id="b")

    assert wait_any_around(any_waiter, inbox, ["a", "b", "a", "b"], meanwhile) == "b"
    assert inbox.waiter_count("a") == 0
