"""Faults around the inbox: whatever goes wrong outside it, it keeps working and loses nothing.

Predicates that raise part-way, consumers cancelled mid-wait (and right after
a wake), event loops that stop or finish while threads keep pushing, producer
threads that die, clocks set backwards by a user, clocks that misbehave, and
blocking calls made where they would stall a loop.
"""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from typing import TYPE_CHECKING, Any

import pytest
import trio
from _polling import HANG_GUARD_SECONDS, spin_until

from harn_inbox import Inbox, InboxEntry, ManualClock

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from conftest import Backend, TaskHandle


class PredicateFailed(Exception):
    """What the faulty predicates of these tests raise."""


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(HANG_GUARD_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"


def _push_many(inbox: Inbox, session_id: str, count: int, kind: str = "k") -> list[InboxEntry]:
    return [inbox.push(session_id, kind, f"#{n}", "test") for n in range(count)]


def _raising_after(
    count: int, verdict: Callable[[InboxEntry], bool] = lambda entry: True
) -> Callable[[InboxEntry], bool]:
    """A predicate that answers *verdict* for *count* entries, then raises."""
    calls = 0

    def predicate(entry: InboxEntry) -> bool:
        nonlocal calls
        calls += 1
        if calls > count:
            raise PredicateFailed(f"failed on {entry.sequence}")
        return verdict(entry)

    return predicate


def _state(inbox: Inbox, *session_ids: str) -> Any:
    return (
        sorted(inbox.sessions()),
        [inbox.snapshot(sid) for sid in session_ids],
        [inbox.waiter_count(sid) for sid in session_ids],
    )


async def _catching(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Await fn(*args); return a PredicateFailed instead of raising it (so no group fails)."""
    try:
        return await fn(*args)
    except PredicateFailed as error:
        return error


# -- Predicates that raise part-way ----------------------------------------------------------------


@pytest.mark.parametrize("fails_at", [0, 1, 3, 4])
def test_drain_where_with_a_predicate_raising_part_way_changes_nothing(
    inbox: Inbox, fails_at: int
) -> None:
    entries = _push_many(inbox, "s", 5)
    _push_many(inbox, "other", 2)
    before = _state(inbox, "s", "other")
    with pytest.raises(PredicateFailed):
        inbox.drain_where("s", _raising_after(fails_at))
    assert _state(inbox, "s", "other") == before
    assert inbox.drain_where("s", lambda entry: entry.sequence % 2 == 0) == entries[1::2]
    assert inbox.snapshot("s") == entries[0::2]


def test_drain_where_with_a_predicate_that_pushes_then_raises_keeps_both_entries(
    inbox: Inbox,
) -> None:
    first, second = _push_many(inbox, "s", 2)
    pushed: list[InboxEntry] = []

    def predicate(entry: InboxEntry) -> bool:
        if not pushed:
            pushed.append(inbox.push("s", "k", "pushed by the predicate", "predicate"))
            return True
        raise PredicateFailed("on the second entry")

    with pytest.raises(PredicateFailed):
        inbox.drain_where("s", predicate)
    assert inbox.snapshot("s") == [first, second, *pushed]


def test_a_predicate_may_call_the_inbox_without_deadlocking(inbox: Inbox) -> None:
    entries = _push_many(inbox, "s", 4)
    result: list[list[InboxEntry]] = []

    def predicate(entry: InboxEntry) -> bool:
        inbox.push("side", "k", f"seen {entry.sequence}", "predicate")
        inbox.drain("elsewhere")
        return inbox.pending_count("s") >= 0 and entry.sequence > 2

    thread = threading.Thread(
        target=lambda: result.append(inbox.drain_where("s", predicate)), daemon=True
    )
    thread.start()
    _join_all([thread])
    assert result == [entries[2:]]
    assert inbox.snapshot("s") == entries[:2]
    assert inbox.pending_count("side") == 4


@pytest.mark.parametrize("fails_at", [0, 2])
def test_wait_for_with_a_predicate_raising_on_the_first_look_takes_nothing(
    backend: Backend, inbox: Inbox, clock: ManualClock, fails_at: int
) -> None:
    _push_many(inbox, "s", 4)
    before = _state(inbox, "s")

    async def main() -> None:
        with pytest.raises(PredicateFailed):
            await inbox.wait_for("s", _raising_after(fails_at), 30)
        with pytest.raises(PredicateFailed):
            await inbox.wait_for("s", _raising_after(fails_at))

    backend.run(main)
    assert _state(inbox, "s") == before
    assert "timers=0" in repr(clock)


def test_wait_for_with_a_predicate_raising_after_a_wake_takes_nothing(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    [old] = _push_many(inbox, "s", 1, kind="old")

    def predicate(entry: InboxEntry) -> bool:
        if entry.kind == "poison":
            raise PredicateFailed("poison")
        return False

    async def main() -> TaskHandle:
        async with backend.task_group() as group:
            handle = group.start_soon(_catching, inbox.wait_for, "s", predicate, 30)
            await backend.wait_parked(inbox, "s")
            await backend.to_thread(inbox.push, "s", "poison", "from a thread", "thread")
        return handle

    handle = backend.run(main)
    assert isinstance(handle.result, PredicateFailed)
    assert [entry.kind for entry in inbox.snapshot("s")] == ["old", "poison"]
    assert inbox.snapshot("s")[0] is old
    assert inbox.waiter_count("s") == 0
    assert "timers=0" in repr(clock)


# -- Consumers cancelled mid-wait ------------------------------------------------------------------


def _receive(inbox: Inbox, session_id: str) -> Callable[[], Awaitable[list[InboxEntry]]]:
    return inbox.batches(session_id).receive


WAITS: dict[str, Callable[[Inbox], Callable[[], Awaitable[Any]]]] = {
    "wait": lambda inbox: lambda: inbox.wait("s"),
    "timed wait": lambda inbox: lambda: inbox.wait("s", 30),
    "wait_for": lambda inbox: lambda: inbox.wait_for("s", lambda entry: True),
    "timed wait_for": lambda inbox: lambda: inbox.wait_for("s", lambda entry: True, 30),
    "batches": lambda inbox: _receive(inbox, "s"),
}


@pytest.mark.parametrize("how", list(WAITS))
def test_a_consumer_cancelled_mid_wait_loses_nothing_and_leaves_no_waiter(
    backend: Backend, inbox: Inbox, clock: ManualClock, how: str
) -> None:
    waiting = WAITS[how](inbox)

    async def main() -> TaskHandle:
        async with backend.task_group() as group:
            handle = group.start_soon(waiting)
            await backend.wait_parked(inbox, "s")
            handle.cancel()
        return handle

    handle = backend.run(main)
    assert isinstance(handle.raised, backend.cancelled)
    assert inbox.waiter_count("s") == 0
    assert "timers=0" in repr(clock)
    entry = inbox.push("s", "k", "after the cancel", "test")
    assert inbox.drain("s") == [entry]


@pytest.mark.parametrize("how", ["wait_for", "batches"])
def test_a_consumer_cancelled_right_after_its_wake_takes_an_entry_exactly_once(
    backend: Backend, inbox: Inbox, how: str
) -> None:
    rounds = 30

    async def one_round(push_from_thread: bool) -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(WAITS[how](inbox))
            await backend.wait_parked(inbox, "s")
            if push_from_thread:
                entry = await backend.to_thread(inbox.push, "s", "k", "c", "thread")
            else:
                entry = inbox.push("s", "k", "c", "task")
            handle.cancel()
        took = handle.result if handle.raised is None else []
        assert isinstance(handle.raised, (type(None), backend.cancelled))
        left = inbox.drain("s")
        assert took + left == [entry], "delivered once, or still queued: never lost, never twice"
        assert inbox.waiter_count("s") == 0

    async def main() -> None:
        for n in range(rounds):
            await one_round(push_from_thread=n % 2 == 1)

    backend.run(main)


def test_trio_deadline_cancelling_a_wait_leaves_no_waiter(inbox: Inbox) -> None:
    async def main() -> None:
        with trio.move_on_after(5) as scope:
            await inbox.wait_for("s", lambda entry: True)
        assert scope.cancelled_caught
        assert inbox.waiter_count("s") == 0

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    entry = inbox.push("s", "k", "c", "test")
    assert inbox.drain("s") == [entry]


# -- Loops that stop, close or finish while threads keep pushing -----------------------------------


def _never(entry: InboxEntry) -> bool:
    return False


def test_asyncio_loop_closed_under_a_parked_waiter_while_a_thread_keeps_pushing(
    inbox: Inbox,
) -> None:
    before_close, after_close = 20_000, 2_000
    loop = asyncio.new_event_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda loop, context: reported.append(context))
    loop_outcome: list[BaseException] = []
    loop_closed = threading.Event()
    producer_errors: list[BaseException] = []
    # A waiter that matches nothing: every push wakes it and it parks again.
    task = loop.create_task(inbox.wait_for("s", _never))

    def run_loop() -> None:
        try:
            loop.run_until_complete(task)
        except RuntimeError as error:  # "Event loop stopped before Future completed."
            loop_outcome.append(error)
        finally:
            loop.close()
            loop_closed.set()

    def produce() -> None:
        try:
            for n in range(before_close):
                inbox.push("s", "k", f"#{n}", "thread")
            loop_closed.wait(HANG_GUARD_SECONDS)
            for n in range(before_close, before_close + after_close):
                inbox.push("s", "k", f"#{n}", "thread")
        except BaseException as error:
            producer_errors.append(error)

    loop_thread = threading.Thread(target=run_loop, daemon=True)
    loop_thread.start()
    spin_until(lambda: inbox.waiter_count("s") == 1, "the asyncio waiter parked")
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    spin_until(lambda: inbox.pending_count("s") >= before_close // 4, "pushes under way")
    loop.call_soon_threadsafe(loop.stop)  # stops it mid-stream; the loop thread then closes it
    _join_all([loop_thread, producer])

    assert producer_errors == []
    assert len(loop_outcome) == 1
    assert not task.done()
    queued = inbox.drain("s")
    assert [entry.content for entry in queued] == [
        f"#{n}" for n in range(before_close + after_close)
    ]
    assert [entry.sequence for entry in queued] == list(range(1, before_close + after_close + 1))
    assert inbox.waiter_count("s") <= 1, "one wait, at most one registration"
    assert all("destroyed but it is pending" in context["message"] for context in reported)


def test_a_wait_abandoned_in_a_closed_asyncio_loop_is_forgotten_by_the_next_push(
    inbox: Inbox,
) -> None:
    """A wait whose loop was closed under it can never end: it must not stay registered.

    The loop is stopped and closed while the wait is parked (asyncio.run would
    have cancelled it; a hand-run loop need not). The next push finds the loop
    closed when it tries to wake the waiter; from then on the dead wait must
    neither be counted by waiter_count nor pin its task, coroutine and loop in
    the inbox's registry for the life of the inbox.
    """
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: None)  # "Task was destroyed ..." is expected
    task = loop.create_task(inbox.wait_for("s", _never))
    loop.run_until_complete(_until_parked(inbox))
    assert inbox.waiter_count("s") == 1
    loop.close()  # with the wait parked, as a runtime tearing down a worker loop might

    entries = _push_many(inbox, "s", 3)  # no exception: the dead loop is ignored
    assert inbox.drain("s") == entries
    task_ref = weakref.ref(task)
    del task
    gc.collect()
    assert inbox.waiter_count("s") == 0, "the dead wait is still registered"
    assert task_ref() is None, "the inbox still pins the abandoned task (and its loop)"


async def _until_parked(inbox: Inbox) -> None:
    for _ in range(1_000):
        if inbox.waiter_count("s"):
            return
        await asyncio.sleep(0)
    raise AssertionError("the wait never parked")


def test_trio_run_finishing_while_a_thread_keeps_pushing(inbox: Inbox) -> None:
    total = 20_000
    stop = threading.Event()
    run_finished = threading.Event()
    producer_errors: list[BaseException] = []
    waited: list[Any] = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(inbox.wait_for, "s", _never)
            await trio.to_thread.run_sync(stop.wait, HANG_GUARD_SECONDS)
            nursery.cancel_scope.cancel()  # ends the waiter, then the run
        waited.append(inbox.waiter_count("s"))

    def run_trio() -> None:
        try:
            trio.run(main)
        finally:
            run_finished.set()

    def produce() -> None:
        try:
            for n in range(total):
                inbox.push("s", "k", f"#{n}", "thread")
                if n == total // 2:
                    stop.set()
            run_finished.wait(HANG_GUARD_SECONDS)
            inbox.push("s", "k", "after the run", "thread")
        except BaseException as error:
            producer_errors.append(error)

    trio_thread = threading.Thread(target=run_trio, daemon=True)
    trio_thread.start()
    spin_until(lambda: inbox.waiter_count("s") == 1, "the trio waiter parked")
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    _join_all([trio_thread, producer])

    assert producer_errors == []
    assert waited == [0]
    queued = inbox.drain("s")
    assert [entry.content for entry in queued] == [
        *(f"#{n}" for n in range(total)),
        "after the run",
    ]
    assert [entry.sequence for entry in queued] == list(range(1, total + 2))
    assert inbox.waiter_count("s") == 0


# -- A producer thread that dies -------------------------------------------------------------------


class ProducerDied(Exception):
    pass


@pytest.fixture
def thread_exceptions() -> Iterator[list[threading.ExceptHookArgs]]:
    """Capture exceptions that escape threads (instead of pytest reporting them as warnings)."""
    captured: list[threading.ExceptHookArgs] = []
    previous = threading.excepthook
    threading.excepthook = captured.append
    try:
        yield captured
    finally:
        threading.excepthook = previous


def test_a_producer_thread_dying_mid_run_leaves_its_pushes_intact_and_others_unaffected(
    inbox: Inbox, thread_exceptions: list[threading.ExceptHookArgs]
) -> None:
    producers, pushes, dies_after = 8, 3_000, 1_234
    start = threading.Barrier(producers)
    pushed: list[list[InboxEntry]] = [[] for _ in range(producers)]

    def produce(index: int) -> None:
        start.wait()
        for n in range(pushes):
            if index == 3 and n == dies_after:
                raise ProducerDied(f"producer {index} died")
            session_id = "shared" if n % 2 == 0 else f"own-{index}"
            pushed[index].append(inbox.push(session_id, "k", f"{index}:{n}", f"p{index}"))

    threads = [threading.Thread(target=produce, args=(i,), daemon=True) for i in range(producers)]
    for thread in threads:
        thread.start()
    _join_all(threads)

    [died] = thread_exceptions
    assert isinstance(died.exc_value, ProducerDied)
    assert died.thread is threads[3]
    assert [len(entries) for entries in pushed] == [pushes] * 3 + [dies_after] + [pushes] * 4
    shared = inbox.drain("shared")
    assert [entry.sequence for entry in shared] == list(range(1, len(shared) + 1))
    for index in range(producers):
        mine = [entry for entry in shared if entry.source == f"p{index}"]
        own = inbox.drain(f"own-{index}")
        assert mine == [entry for entry in pushed[index] if entry.session_id == "shared"]
        assert own == [entry for entry in pushed[index] if entry.session_id != "shared"]
        assert [entry.sequence for entry in own] == list(range(1, len(own) + 1))
    assert inbox.sessions() == []


# -- A clock set backwards -------------------------------------------------------------------------


def test_clock_set_backwards_stamps_go_back_while_sequences_keep_rising(
    inbox: Inbox, clock: ManualClock
) -> None:
    first = inbox.push("s", "k", "c", "src")
    clock.set(400_000)
    second = inbox.push("s", "k", "c", "src")
    clock.set(0)
    third = inbox.push("s", "k", "c", "src")
    clock.advance(2)
    fourth = inbox.push("s", "k", "c", "src")
    assert [e.ts_ms for e in (first, second, third, fourth)] == [1_000_000, 400_000, 0, 2_000]
    assert [e.sequence for e in (first, second, third, fourth)] == [1, 2, 3, 4]
    assert inbox.drain("s") == [first, second, third, fourth]


def test_thread_timed_wait_does_not_fire_on_the_way_back_and_fires_past_its_deadline(
    inbox: Inbox, clock: ManualClock
) -> None:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(inbox.wait_sync("s", 5)), daemon=True)
    thread.start()
    spin_until(lambda: inbox.waiter_count("s") == 1, "thread parked")  # deadline: 1_005_000 ms
    # ManualClock forgets a timer as it fires it, inside set()/advance(): "timers=1" proves it
    # has not fired, whatever the waiting thread has had time to do.
    moves: list[Callable[[], None]] = [
        lambda: clock.set(900_000),
        lambda: clock.set(0),
        lambda: clock.advance(1_004.999),
        lambda: clock.set(1_004_999),
    ]
    for move in moves:
        move()
        assert inbox.waiter_count("s") == 1, repr(clock)
        assert "timers=1" in repr(clock)
    clock.advance(0.001)
    thread.join(HANG_GUARD_SECONDS)
    assert result == [False]
    assert inbox.waiter_count("s") == 0
    assert "timers=0" in repr(clock)


def test_async_timed_waits_survive_the_clock_going_back_and_end_past_their_deadline(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    async def main() -> list[TaskHandle]:
        async with backend.task_group() as group:
            handles = [
                group.start_soon(inbox.wait, "s", 5),
                group.start_soon(inbox.wait_for, "s", _never, 5),
            ]
            await backend.wait_parked(inbox, "s", 2)
            for ms in (500_000, 0, 1_004_999):
                clock.set(ms)
                for _ in range(5):
                    await backend.checkpoint()
                assert "timers=2" in repr(clock), "a deadline fired on the way back"
                assert not any(handle.finished for handle in handles)
            clock.set(2_000_000)  # jumps straight past the deadline
        return handles

    handles = backend.run(main)
    assert [handle.result for handle in handles] == [False, []]
    assert inbox.waiter_count("s") == 0
    assert "timers=0" in repr(clock)


def test_a_wait_started_after_the_clock_went_back_counts_from_the_new_now(
    inbox: Inbox, clock: ManualClock
) -> None:
    clock.set(10_000)
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(inbox.wait_sync("s", 2)), daemon=True)
    thread.start()
    spin_until(lambda: inbox.waiter_count("s") == 1, "thread parked")
    clock.advance(1.999)
    assert inbox.waiter_count("s") == 1
    clock.advance(0.001)  # 12_000 ms: due, long before the old time line's 1_000_000
    thread.join(HANG_GUARD_SECONDS)
    assert result == [False]


# -- Clocks that misbehave -------------------------------------------------------------------------


class BrokenClock:
    """A `Clock` whose now_ms() can be made to raise or to return garbage."""

    def __init__(self) -> None:
        self.answer: Any = 1_000

    def now_ms(self) -> Any:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    def call_later(self, seconds: float, callback: Callable[[], object]) -> None:
        return None


@pytest.mark.parametrize("answer", [-1, 1.5, "1000", None, True, OSError("clock unplugged")])
def test_a_misbehaving_clock_makes_push_raise_and_store_nothing(answer: Any) -> None:
    clock = BrokenClock()
    inbox = Inbox(clock=clock)
    first = inbox.push("s", "k", "c", "src")
    clock.answer = answer
    with pytest.raises((TypeError, ValueError, OSError)) as caught:
        inbox.push("s", "k", "c", "src")
    if not isinstance(caught.value, OSError):  # the clock's own error passes through as is
        assert "clock.now_ms()" in str(caught.value)
    assert inbox.snapshot("s") == [first]
    clock.answer = 2_000
    assert inbox.push("s", "k", "c", "src").sequence == 2, "the refused push used no number"


class UnforgettingClock:
    """A virtual clock that keeps timers, and whose function to forget one raises."""

    def __init__(self) -> None:
        self.clock = ManualClock(1_000_000)
        self.forgets = 0

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def call_later(self, seconds: float, callback: Callable[[], object]) -> Callable[[], None]:
        forget = self.clock.call_later(seconds, callback)

        def broken_forget() -> None:
            self.forgets += 1
            forget()
            raise OSError("the timer wheel is gone")

        return broken_forget


def _forget_failures(caplog: pytest.LogCaptureFixture) -> int:
    return sum(
        record.name == "harn_inbox" and "could not forget a timer" in record.getMessage()
        for record in caplog.records
    )


def test_a_clock_failing_to_forget_a_timer_does_not_lose_what_a_wait_took(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    # The timer is forgotten as the wait ends, after its look has taken the
    # entries: an error there must not replace the result (it is logged). A
    # wait that takes something at once never starts a timer.
    clock = UnforgettingClock()
    inbox = Inbox(clock=clock)  # type: ignore[arg-type]
    first = inbox.push("s", "k", "#0", "src")

    async def main() -> tuple[list[InboxEntry], list[InboxEntry], InboxEntry]:
        at_once = await inbox.wait_for("s", lambda entry: True, timeout=5)
        async with backend.task_group() as group:
            parked = group.start_soon(inbox.wait_for, "s", lambda entry: True, 5)
            await backend.wait_parked(inbox, "s")
            second = inbox.push("s", "k", "#1", "src")
        return at_once, parked.result, second

    at_once, after_a_wake, second = backend.run(main)
    assert (at_once, after_a_wake) == ([first], [second])
    assert clock.forgets == _forget_failures(caplog) == 1
    assert inbox.waiter_count("s") == 0


def test_a_clock_failing_to_forget_a_timer_does_not_fail_a_thread_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = UnforgettingClock()
    inbox = Inbox(clock=clock)  # type: ignore[arg-type]
    inbox.push("s", "k", "#0", "src")
    assert inbox.wait_sync("s", timeout=5) is True
    assert clock.forgets == 0  # a wait that finds something at once starts no timer
    inbox.drain("s")
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(inbox.wait_sync("s", timeout=5)))
    waiter.start()
    spin_until(lambda: inbox.waiter_count("s") == 1, "the thread parked")
    inbox.push("s", "k", "#1", "src")
    waiter.join()
    assert results == [True]
    assert clock.forgets == _forget_failures(caplog) == 1
    assert inbox.waiter_count("s") == 0


# -- Blocking calls where they would stall a loop --------------------------------------------------


def test_wait_sync_inside_a_running_loop_is_refused_and_registers_nothing(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    async def main() -> None:
        for timeout in (None, 5):
            with pytest.raises(RuntimeError, match="would block the event loop"):
                inbox.wait_sync("s", timeout)
        assert inbox.wait_sync("s", 0) is False  # just looking is fine
        inbox.push("s", "k", "c", "src")
        assert inbox.wait_sync("s", 0) is True

    backend.run(main)
    assert inbox.waiter_count("s") == 0
    assert "timers=0" in repr(clock)
