"""Wake-ups across threads and loops: the paths they take, loops that are busy or gone,
trio and asyncio side by side, wake-up storms, and the compaction race.

A wake reaches a trio task through ``TrioToken.run_sync_soon`` and an asyncio
task through ``call_soon_threadsafe``, except from inside a task of the
waiter's own run or loop, where it is direct: so also from the loop's own
thread outside its tasks (a signal handler, a finalizer), where the loop may be
about to block for I/O. A push never blocks on a loop, and a push whose
waiter's loop has finished still stores its entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import selectors
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import trio
from _support import (
    WAYS_TO_WAIT,
    ThreadCall,
    contents,
    everything,
    nudge,
    spy_on_thread_safe_entry,
    waiting,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from types import FrameType

    from conftest import Backend, TaskHandle

    from harn_inbox import Inbox, InboxEntry

from harn_inbox._lot import Pause
from harn_inbox._waiters import in_loop_callback

ROUNDS = 2000


def guarded(
    backend: Backend, inbox: Inbox, body: Callable[[], Awaitable[None]], seconds: float = 30
) -> Callable[[], Awaitable[None]]:
    """*body* with a safety net that is never a verdict.

    Past *seconds* of real time the body is cancelled, through its loop's
    thread-safe entry (which a lost wake-up in the inbox cannot block), and the
    test fails saying it hung. If the body fails in any way the inbox is
    closed, so that waits in other threads end instead of hanging the teardown.
    (``backend.fail_after`` cannot serve here: under trio's autojump clock it
    would fire whenever the loop idles while a thread works.)
    """

    async def guarded_body() -> None:
        fired = threading.Event()
        try:
            if backend.name == "trio":
                token = trio.lowlevel.current_trio_token()
                with trio.CancelScope() as scope:

                    def fire() -> None:
                        fired.set()
                        with contextlib.suppress(trio.RunFinishedError):
                            token.run_sync_soon(scope.cancel)

                    with _timer(seconds, fire):
                        await body()
            else:
                loop, task = asyncio.get_running_loop(), asyncio.current_task()
                assert task is not None

                def fire() -> None:
                    fired.set()
                    with contextlib.suppress(RuntimeError):
                        loop.call_soon_threadsafe(task.cancel)

                try:
                    with _timer(seconds, fire):
                        await body()
                except asyncio.CancelledError:
                    if not fired.is_set():
                        raise
            if fired.is_set():
                raise AssertionError(f"hung for {seconds} s of real time: a lost wake-up?")
        except BaseException:
            inbox.close()
            raise

    return guarded_body


@contextmanager
def _timer(seconds: float, fire: Callable[[], None]) -> Iterator[None]:
    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


# -- The lost wake-up window ----------------------------------------------------------------------


def armed_now(frame: FrameType, event: str, arg: object) -> bool:
    """For a profile hook: the waiter has just been armed (parked), before its look."""
    return (
        event == "return"
        and frame.f_code.co_name == "arm"
        and frame.f_code.co_filename.endswith("_lot.py")
    )


def about_to_sleep(frame: FrameType, event: str, arg: object) -> bool:
    """For a profile hook: the armed look found nothing; the wait is about to sleep."""
    return event == "return" and frame.f_code.co_name == "wait_steps" and arg is Pause.SLEEP


@pytest.mark.parametrize("way", WAYS_TO_WAIT)
@pytest.mark.parametrize("moment", ["armed, before its look", "looked, before it slept"])
def test_push_from_a_thread_in_the_lost_wake_up_window_still_wakes_the_waiter(
    backend: Backend,
    inbox: Inbox,
    run_in_thread: Callable[..., threading.Thread],
    way: str,
    moment: str,
) -> None:
    # White-box and deterministic: a profile hook holds the waiting task (and
    # so its loop's thread) at the chosen moment while another thread pushes,
    # then lets it go on. The push must land in the look, or find the waiter
    # armed and wake it through the loop's thread-safe entry, delivered once
    # the task has really gone to sleep.
    due_now = armed_now if moment.startswith("armed") else about_to_sleep
    raced: list[InboxEntry] = []

    def hold_and_push(frame: FrameType, event: str, arg: object) -> None:
        if due_now(frame, event, arg):
            sys.setprofile(None)
            pusher = run_in_thread(lambda: raced.append(nudge(inbox, "s", "raced", "thread")))
            pusher.join(timeout=30)  # a push never waits for the loop we are holding

    take = waiting(inbox, way, "s", None if way == "batches" else 60, everything)

    async def main() -> None:
        sys.setprofile(hold_and_push)
        try:
            result = await take()
        finally:
            sys.setprofile(None)
        assert raced, "the hook never found the moment: the test no longer reaches the window"
        assert result == (True if way == "wait" else raced)
        assert inbox.waiter_count("s") == 0

    backend.run_in_real_time(guarded(backend, inbox, main))


# -- Which door a wake comes through --------------------------------------------------------------


@pytest.mark.parametrize("waits", [1, 30])
def test_push_from_a_foreign_thread_makes_one_thread_safe_call_however_many_tasks_wait(
    backend: Backend, inbox: Inbox, run_in_thread: Callable[..., threading.Thread], waits: int
) -> None:
    # Exactly one call from the pushing thread: the wake of every waiter of its
    # session on this loop (of every way of waiting), none for the waiter
    # parked on another session.
    takes = [waiting(inbox, WAYS_TO_WAIT[n % 3], "s", None, everything) for n in range(waits)]

    async def main() -> None:
        with spy_on_thread_safe_entry(backend) as calls:
            async with backend.task_group() as group:
                handles = [group.start_soon(take) for take in takes]
                other = group.start_soon(inbox.wait, "other")
                await backend.wait_parked(inbox, "s", waits)
                await backend.wait_parked(inbox, "other")
                pusher = run_in_thread(nudge, inbox, "s")
                await backend.to_thread(pusher.join, 30)
                await backend.until(lambda: any(handle.finished for handle in handles))
                assert not other.finished
                nudge(inbox, "other")
                # Only one wait takes the entry; the others parked again. Pushes
                # from this loop's own task wake them directly.
                while not all(handle.finished for handle in handles):
                    nudge(inbox, "s")
                    await backend.turns()
            assert all(handle.result for handle in handles)
            assert [thread for thread, _ in calls if thread is pusher] == [pusher]

    backend.run_in_real_time(guarded(backend, inbox, main))


def test_push_from_a_foreign_thread_makes_one_thread_safe_call_per_loop(
    backend: Backend,
    other_backend: Backend,
    inbox: Inbox,
    run_in_thread: Callable[..., threading.Thread],
) -> None:
    # Twenty waits on this loop, twenty on a loop of the other framework in a
    # worker thread; a third thread pushes once: one call into each loop.
    per_loop = 20
    other_side: dict[str, Any] = {}

    async def wait_on_the_other_loop() -> None:
        with spy_on_thread_safe_entry(other_backend) as calls:
            async with other_backend.task_group() as group:
                handles = [group.start_soon(inbox.wait, "s", 60) for _ in range(per_loop)]
            other_side["calls"] = list(calls)
            other_side["results"] = [handle.result for handle in handles]

    async def main() -> None:
        with spy_on_thread_safe_entry(backend) as calls:
            async with backend.task_group() as group:
                handles = [group.start_soon(inbox.wait, "s", 60) for _ in range(per_loop)]
                await backend.wait_parked(inbox, "s", per_loop)
                other = run_in_thread(other_backend.run_in_real_time, wait_on_the_other_loop)
                await backend.wait_thread_parked(inbox, "s", 2 * per_loop)
                pusher = run_in_thread(nudge, inbox, "s")
                await backend.to_thread(pusher.join, 30)
            await backend.to_thread(other.join, 30)
            assert [handle.result for handle in handles] == [True] * per_loop
            assert [thread for thread, _ in calls if thread is pusher] == [pusher]
        assert other_side["results"] == [True] * per_loop
        assert [thread for thread, _ in other_side["calls"] if thread is pusher] == [pusher]

    backend.run_in_real_time(guarded(backend, inbox, main))


def test_push_from_the_waiters_own_loop_wakes_it_directly(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        with spy_on_thread_safe_entry(backend) as calls:
            async with backend.parked(inbox, inbox.wait, "s") as waiter:
                nudge(inbox, "s")
            assert waiter.result is True
            assert calls == []

    backend.run_in_real_time(guarded(backend, inbox, main))


@pytest.mark.parametrize("backend", ["asyncio"], indirect=True)
@pytest.mark.parametrize("marked", ["its loop", "another loop", "nothing"])
def test_push_from_an_asyncio_callback_of_ours_wakes_directly_only_if_it_names_the_loop(
    backend: Backend, inbox: Inbox, marked: str
) -> None:
    # A callback the loop runs between its I/O waits (as the Redis store's
    # listener reads its socket) may wake a wait of that loop directly, if it says so.

    async def main() -> None:
        loop = asyncio.get_running_loop()
        other_loop = asyncio.new_event_loop()
        said = {"its loop": loop, "another loop": other_loop, "nothing": None}[marked]
        woken = asyncio.Event()

        def callback() -> None:
            in_loop_callback.loop = said
            try:
                nudge(inbox, "s")
            finally:
                in_loop_callback.loop = None
            woken.set()

        try:
            with spy_on_thread_safe_entry(backend) as calls:
                async with backend.parked(inbox, inbox.wait, "s") as waiter:
                    loop.call_soon(callback)
                    await woken.wait()
            assert waiter.result is True
            assert len(calls) == (0 if marked == "its loop" else 1)
        finally:
            other_loop.close()

    backend.run_in_real_time(guarded(backend, inbox, main))


def test_push_never_waits_for_a_busy_loop(
    backend: Backend, inbox: Inbox, run_in_thread: Callable[..., threading.Thread]
) -> None:
    # The waiter's loop runs in a worker thread and is stuck in a blocking call
    # when the push comes: the push returns at once, the wake is delivered later.
    loop_stuck, release = threading.Event(), threading.Event()
    results: list[object] = []

    async def main() -> None:
        async with backend.parked(inbox, inbox.wait, "s") as waiter:
            loop_stuck.set()
            assert release.wait(timeout=30)  # blocks the loop: nothing of it can run now
        results.append(waiter.result)

    loop_thread = run_in_thread(backend.run, main)
    assert loop_stuck.wait(timeout=30)
    entry = nudge(inbox, "s")
    assert inbox.snapshot("s") == [entry]
    release.set()
    loop_thread.join(timeout=30)
    assert results == [True]


# -- Pushes in the loop's own thread, outside its tasks --------------------------------------------


class _BeforeIoWait(trio.abc.Instrument):
    def __init__(self, hook: Callable[[], None]) -> None:
        self.hook = hook

    def before_io_wait(self, timeout: float) -> None:
        if timeout > 0:
            self.hook()


def run_with_io_wait_hook(
    backend: Backend, fn: Callable[[], Awaitable[None]], hook: Callable[[], None]
) -> None:
    """Run *fn* on a loop in this thread; call *hook* each time the loop is about to block for I/O.

    That is where a ``signal.signal`` handler (or a finalizer) runs while a
    loop idles: in the loop's thread, outside every task, after the loop has
    decided how long to sleep.
    """
    if backend.name == "trio":
        trio.run(fn, instruments=[_BeforeIoWait(hook)])
        return

    class Selector(selectors.DefaultSelector):
        def select(self, timeout: float | None = None) -> Any:
            if timeout is None or timeout > 0:
                hook()
            return super().select(timeout)

    loop = asyncio.SelectorEventLoop(Selector())
    try:
        loop.run_until_complete(fn())
    finally:
        loop.close()


def test_push_in_the_loops_thread_as_it_is_about_to_block_wakes_the_waiter(
    backend: Backend, inbox: Inbox
) -> None:
    # A direct wake there would be seen only after the I/O wait the loop has
    # decided on, without limit here: the wake must go through the loop's
    # thread-safe entry, which also ends that wait.
    pushed: list[InboxEntry] = []

    def push_once_parked() -> None:
        if not pushed and inbox.waiter_count("s"):
            pushed.append(nudge(inbox, "s"))

    async def main() -> None:
        assert await inbox.wait("s") is True

    run_with_io_wait_hook(backend, guarded(backend, inbox, main), push_once_parked)
    assert inbox.drain("s") == pushed


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")
def test_push_from_the_loops_own_signal_handling_wakes_the_waiter(
    backend: Backend, inbox: Inbox
) -> None:
    # What the README recommends instead of a plain signal.signal handler.
    async def main() -> None:
        async with backend.parked(inbox, inbox.wait, "s") as waiter:
            if backend.name == "trio":
                with trio.open_signal_receiver(signal.SIGUSR1) as signals:
                    signal.raise_signal(signal.SIGUSR1)
                    async for _ in signals:
                        nudge(inbox, "s", "child exited", "sigchld")
                        break
            else:
                loop = asyncio.get_running_loop()
                loop.add_signal_handler(
                    signal.SIGUSR1, nudge, inbox, "s", "child exited", "sigchld"
                )
                try:
                    signal.raise_signal(signal.SIGUSR1)
                    await backend.until(lambda: waiter.finished)
                finally:
                    loop.remove_signal_handler(signal.SIGUSR1)
        assert waiter.result is True

    backend.run_in_real_time(guarded(backend, inbox, main))
    assert contents(inbox.drain("s")) == ["child exited"]


def parks_now(backend: Backend, frame: FrameType, event: str, arg: object) -> bool:
    """For a profile hook: the waiting task is past its last look, not yet suspended.

    trio: entering ``wait_task_rescheduled`` (its task already recorded);
    asyncio: the wait's steps pausing to sleep, before the future is awaited.
    """
    if backend.name == "trio":
        caller = frame.f_back
        return (
            event == "call"
            and frame.f_code.co_name == "wait_task_rescheduled"
            and caller is not None
            and caller.f_code.co_name == "_drive"
        )
    return about_to_sleep(frame, event, arg)


@pytest.mark.parametrize("then", ["nothing else", "a cancel"])
@pytest.mark.parametrize("way", WAYS_TO_WAIT)
def test_push_from_inside_the_waiting_task_as_it_parks(
    backend: Backend, inbox: Inbox, way: str, then: str
) -> None:
    # A signal.signal handler or a finalizer can run inside the waiting task
    # itself, after its step parked it and before it suspends in its framework
    # (trio: entering wait_task_rescheduled; asyncio: before awaiting its
    # future). A profile hook pushes there, and may cancel the task at once.
    # trio must not be asked to reschedule a task that is still running: a
    # cancellation delivered as it suspends would reschedule it a second time
    # (TrioInternalError). Whatever happens, nothing is lost or left behind.
    raced: list[InboxEntry] = []
    waiter: list[TaskHandle] = []
    returned: list[object] = []

    def push_as_it_parks(frame: FrameType, event: str, arg: object) -> None:
        due = parks_now(backend, frame, event, arg)
        if due and not raced:
            sys.setprofile(None)
            raced.append(nudge(inbox, "s", "raced", "handler"))
            if then == "a cancel":
                waiter[0].cancel()

    async def take() -> object:
        wait = waiting(inbox, way, "s", None if way == "batches" else 60, everything)
        sys.setprofile(push_as_it_parks)
        try:
            return await wait()
        finally:
            sys.setprofile(None)

    async def take_then_checkpoint() -> None:
        returned.append(await take())
        await backend.checkpoint()  # where a cancellation that came too late lands

    async def main() -> None:
        async with backend.task_group() as group:
            waiter.append(group.start_soon(take_then_checkpoint))
        assert raced, "the hook never found the moment: the test no longer reaches it"
        raised = waiter[0].raised
        assert raised is None or type(raised) is backend.cancelled
        if then == "nothing else":
            assert returned == [True if way == "wait" else raced]
        taken = returned[0] if returned and isinstance(returned[0], list) else []
        assert taken + inbox.snapshot("s") == raced
        assert inbox.waiter_count("s") == 0

    backend.run_in_real_time(guarded(backend, inbox, main))


class Interrupted(Exception):
    """What a signal handler that raises (KeyboardInterrupt, sys.exit) stands in for."""


def test_a_raise_inside_the_waiting_task_as_it_parks_leaves_no_late_wake(
    backend: Backend, inbox: Inbox
) -> None:
    # A signal handler that raises can do so inside the waiting task after its
    # step parked it and before it suspends in its framework, after a push
    # from another thread already unparked it: that wake is queued on the
    # loop. When it runs, the task has left the wait: it must not be woken
    # (trio: rescheduled) wherever it is by then.
    raced: list[InboxEntry] = []

    def push_then_raise(frame: FrameType, event: str, arg: object) -> None:
        due = parks_now(backend, frame, event, arg)
        if due:
            sys.setprofile(None)
            raced.append(ThreadCall(nudge, inbox, "s", "raced").outcome())
            raise Interrupted

    async def main() -> None:
        sys.setprofile(push_then_raise)
        try:
            with pytest.raises(Interrupted):
                await inbox.wait("s", 60)
        finally:
            sys.setprofile(None)
        assert raced, "the hook never found the moment: the test no longer reaches it"
        assert inbox.waiter_count("s") == 0
        await backend.turns(50)  # the queued wake runs in here, and must find nobody
        event = backend.event()
        async with backend.task_group() as group:
            group.start_soon(backend.turns, 50)
            group.start_soon(event.wait)
            event.set()

    backend.run_in_real_time(guarded(backend, inbox, main))
    assert inbox.drain("s") == raced


# -- Loops that are gone --------------------------------------------------------------------------


def test_wake_arriving_after_the_waiters_loop_finished_is_dropped_quietly(
    backend: Backend, inbox: Inbox, run_in_thread: Callable[..., threading.Thread]
) -> None:
    # A push from a thread unparks the waiter under the lock, then (lock
    # released) is held back just before it wakes it. Meanwhile the wait is
    # cancelled and its loop finishes: trio's token now raises
    # RunFinishedError, asyncio's closed loop RuntimeError. The push must
    # swallow that and return its entry.
    in_wake, loop_finished = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def hold_back_in_wake(frame: FrameType, event: str, arg: object) -> None:
        code = frame.f_code
        if event == "call" and code.co_name == "wake" and "harn_inbox" in code.co_filename:
            sys.setprofile(None)
            in_wake.set()
            loop_finished.wait(timeout=30)

    def push() -> None:
        sys.setprofile(hold_back_in_wake)
        try:
            outcome["entry"] = nudge(inbox, "s")
        except BaseException as error:  # reported below, not raised in the thread
            outcome["error"] = error
        finally:
            sys.setprofile(None)

    pushers: list[threading.Thread] = []

    async def main() -> None:
        async with backend.parked(inbox, inbox.wait, "s") as waiter:
            pushers.append(run_in_thread(push))
            assert await backend.to_thread(in_wake.wait, 30)
            waiter.cancel()
        assert type(waiter.raised) is backend.cancelled

    backend.run_in_real_time(guarded(backend, inbox, main))
    loop_finished.set()
    pushers[0].join(timeout=30)
    assert "error" not in outcome, outcome.get("error")
    assert inbox.snapshot("s") == [outcome["entry"]]
    assert inbox.waiter_count("s") == 0


# -- trio and asyncio in one process --------------------------------------------------------------


@pytest.mark.parametrize("second_loop", ["other framework", "same framework"])
def test_loops_in_two_threads_wake_each_others_waiters(
    backend: Backend,
    other_backend: Backend,
    inbox: Inbox,
    run_in_thread: Callable[..., threading.Thread],
    second_loop: str,
) -> None:
    # The backend's loop runs in the main thread, a second loop (trio beside
    # asyncio, or a second loop of the same framework) in a worker thread. Each
    # wakes the other's waiters, and a push from a third thread wakes both
    # loops' waiters on a shared session.
    second_backend = other_backend if second_loop == "other framework" else backend
    other: dict[str, object] = {}

    async def other_side() -> None:
        nudge(inbox, "to-main", "from the other loop")
        other["to-other"] = await inbox.wait("to-other", 60)
        other["taken"] = contents(await inbox.wait_for("to-other", lambda entry: True, 60))
        other["shared"] = await inbox.wait("shared", 60)

    async def main() -> None:
        async with backend.task_group() as group:
            to_main = group.start_soon(inbox.wait, "to-main", 60)
            shared = group.start_soon(inbox.wait, "shared", 60)
            await backend.wait_parked(inbox, "to-main")
            await backend.wait_parked(inbox, "shared")
            second = run_in_thread(second_backend.run_in_real_time, other_side)
            await backend.wait_thread_parked(inbox, "to-other")
            # Pushed by the other loop's thread before it parked: the wake is on its way.
            await backend.until(lambda: to_main.finished)
            nudge(inbox, "to-other", "from the main loop")
            await backend.wait_thread_parked(inbox, "shared", 2)
            assert not shared.finished  # pushes to the other sessions left it parked
            await backend.to_thread(nudge, inbox, "shared", "from a third thread")
            await backend.to_thread(second.join, 30)
        assert (to_main.result, shared.result) == (True, True)
        assert other == {"to-other": True, "taken": ["from the main loop"], "shared": True}
        assert contents(inbox.drain("to-main")) == ["from the other loop"]

    backend.run_in_real_time(guarded(backend, inbox, main))


def test_trio_and_asyncio_loops_consume_one_session_each_entry_once(
    backend: Backend,
    other_backend: Backend,
    inbox: Inbox,
    run_in_thread: Callable[..., threading.Thread],
) -> None:
    # Both loops run a batches consumer on the same session; a thread pushes.
    total = 500
    other_batches: list[list[InboxEntry]] = []

    async def other_side() -> None:
        async for batch in inbox.batches("s"):
            other_batches.append(batch)  # noqa: PERF401  # each batch as it comes

    def produce() -> None:
        for n in range(total):
            nudge(inbox, "s", str(n), "thread")
            if n % 5 == 0:
                time.sleep(0)  # let the loops run: more interleavings, not a verdict

    async def main() -> None:
        main_batches: list[list[InboxEntry]] = []

        async def consume() -> None:
            async for batch in inbox.batches("s"):
                main_batches.append(batch)  # noqa: PERF401

        async with backend.task_group() as group:
            group.start_soon(consume)
            second = run_in_thread(other_backend.run_in_real_time, other_side)
            await backend.wait_parked(inbox, "s")
            await backend.wait_thread_parked(inbox, "s", 2)
            await backend.to_thread(run_in_thread(produce).join, 30)
            while sum(map(len, main_batches + other_batches)) < total:
                await backend.to_thread(lambda: None)  # the other loop may still be taking
            inbox.clear_session("s")  # ends both consumers
            await backend.to_thread(second.join, 30)
        taken = [entry for batch in main_batches + other_batches for entry in batch]
        assert sorted(entry.sequence for entry in taken) == list(range(1, total + 1))
        assert all(main_batches)
        assert all(other_batches)

    backend.run_in_real_time(guarded(backend, inbox, main))


def test_trio_guest_run_and_its_asyncio_host_in_one_thread_wake_each_other(inbox: Inbox) -> None:
    # trio as a guest on an asyncio loop: both share one thread. A push from a
    # host task wakes the guest's trio waiter and vice versa.
    async def guest() -> bool:
        nudge(inbox, "to-host", "from the guest")
        return await inbox.wait("to-guest", 60)

    async def host() -> None:
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[Any] = loop.create_future()
        host_wait = loop.create_task(inbox.wait("to-host", 60))
        while inbox.waiter_count("to-host") == 0:  # noqa: ASYNC110  # counted in loop turns
            await asyncio.sleep(0)
        trio.lowlevel.start_guest_run(
            guest,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=finished.set_result,
            host_uses_signal_set_wakeup_fd=False,
        )
        assert await host_wait is True
        while inbox.waiter_count("to-guest") == 0:  # noqa: ASYNC110
            await asyncio.sleep(0)
        nudge(inbox, "to-guest", "from the host")
        assert (await finished).unwrap() is True
        assert inbox.waiter_count("to-guest") == 0

    asyncio.run(host())


# -- Wake-up storms -------------------------------------------------------------------------------


def storm_taker(inbox: Inbox, consumer: str) -> Callable[[], Awaitable[list[InboxEntry]]]:
    if consumer == "wait then drain":

        async def wait_then_drain() -> list[InboxEntry]:
            assert await inbox.wait("s", 60), "a wait that should have been woken returned False"
            return inbox.drain("s")

        return wait_then_drain
    return waiting(inbox, consumer, "s", None if consumer == "batches" else 60, everything)


@pytest.mark.parametrize("consumer", ["wait then drain", "wait_for", "batches"])
def test_wake_up_storm_thread_pushes_task_takes(
    backend: Backend,
    inbox: Inbox,
    run_in_thread: Callable[..., threading.Thread],
    consumer: str,
) -> None:
    # Round n: the thread pushes entry n and waits for the task to take it. The
    # task's next wait races the next push: before its look, or after its park.
    taken_one = threading.Semaphore(0)
    failures: list[str] = []

    def produce() -> None:
        for n in range(ROUNDS):
            nudge(inbox, "s", str(n), "thread")
            if not taken_one.acquire(timeout=30):
                failures.append(f"round {n}: the entry was never taken (lost wake-up)")
                inbox.close()  # ends the task's wait, so the test fails instead of hanging
                return

    async def main() -> None:
        take = storm_taker(inbox, consumer)
        received: list[InboxEntry] = []
        run_in_thread(produce)
        for n in range(ROUNDS):
            batch = await take()
            assert contents(batch) == [str(n)], failures
            received.extend(batch)
            taken_one.release()
        assert [entry.sequence for entry in received] == list(range(1, ROUNDS + 1))
        assert inbox.waiter_count("s") == 0

    backend.run_in_real_time(guarded(backend, inbox, main))
    assert not failures


def test_wake_up_storm_of_thread_pushes_without_pause(
    backend: Backend, inbox: Inbox, run_in_thread: Callable[..., threading.Thread]
) -> None:
    total = 3 * ROUNDS

    def produce() -> None:
        for n in range(total):
            nudge(inbox, "s", str(n), "thread")
            if n % 3 == 0:
                time.sleep(0)  # let the loop run: more interleavings, not a verdict

    async def main() -> None:
        received: list[InboxEntry] = []
        run_in_thread(produce)
        while len(received) < total:
            assert await inbox.wait("s"), f"wait returned False at {len(received)}"
            batch = inbox.drain("s")
            assert batch  # the only consumer: what woke it is still there
            received.extend(batch)
        assert [entry.sequence for entry in received] == list(range(1, total + 1))

    backend.run_in_real_time(guarded(backend, inbox, main))


def test_wake_up_storm_task_pushes_thread_waits_sync(
    backend: Backend, inbox: Inbox, run_in_thread: Callable[..., threading.Thread]
) -> None:
    # Ping-pong: the task pushes "ping" n and waits for "pong" n; the thread
    # wait_syncs for the ping, drains it and pushes the pong. Both directions
    # race each round: task to blocked thread, thread to parked task.
    thread_saw: list[str] = []

    def thread_side() -> None:
        for n in range(ROUNDS):
            if not inbox.wait_sync("ping", 60):
                return  # closed as the task side failed: its assertion says what hung
            thread_saw.extend(contents(inbox.drain("ping")))
            nudge(inbox, "pong", str(n), "thread")

    async def main() -> None:
        run_in_thread(thread_side)
        for n in range(ROUNDS):
            nudge(inbox, "ping", str(n), "task")
            assert await inbox.wait("pong", 60), f"round {n}: the pong never woke the task"
            assert contents(inbox.drain("pong")) == [str(n)]
        assert thread_saw == [str(n) for n in range(ROUNDS)]

    backend.run_in_real_time(guarded(backend, inbox, main))


# -- The compaction race --------------------------------------------------------------------------


def test_nudges_pushed_during_compaction_are_drained_after_it_in_push_order(
    backend: Backend, inbox: Inbox
) -> None:
    # The agent loop drains, then spends a long time compacting (an await on
    # something else entirely: nobody is parked on the inbox). A tool finishing
    # in a task and one finishing in a worker thread push meanwhile. After the
    # compaction the loop's next wait returns at once and the drain has both,
    # in push order.
    async def main() -> None:
        compaction_done = backend.event()
        drained: list[list[InboxEntry]] = []

        async def agent_loop() -> None:
            for _ in range(2):
                assert await inbox.wait("s", 60)
                drained.append(inbox.drain("s"))
                await compaction_done.wait()

        first = nudge(inbox, "s", "user message", "user")
        async with backend.task_group() as group:
            group.start_soon(agent_loop)
            while not drained:
                await backend.checkpoint()
            assert inbox.waiter_count("s") == 0  # compacting, not waiting on the inbox
            from_task = nudge(inbox, "s", "tool A finished", "task")
            from_thread = await backend.to_thread(nudge, inbox, "s", "tool B finished", "thread")
            compaction_done.set()
        assert drained == [[first], [from_task, from_thread]]
        assert [entry.sequence for entry in drained[1]] == [2, 3]

    backend.run_in_real_time(guarded(backend, inbox, main))


def test_nudges_racing_in_during_compaction_all_arrive_in_sequence_order(
    backend: Backend, inbox: Inbox, run_in_thread: Callable[..., threading.Thread]
) -> None:
    # As above, but the task and the threads push at the same time; whatever
    # order they land in, the next batch has all of them, in sequence order.
    async def main() -> None:
        compaction_done = backend.event()
        batches: list[list[InboxEntry]] = []

        async def agent_loop() -> None:
            async for batch in inbox.batches("s"):
                batches.append(batch)
                if len(batches) == 2:
                    return
                await compaction_done.wait()

        def push_fifty(name: str) -> None:
            for i in range(50):
                nudge(inbox, "s", f"{name}.{i}", "thread")

        nudge(inbox, "s", "user message", "user")
        async with backend.task_group() as group:
            group.start_soon(agent_loop)
            while not batches:
                await backend.checkpoint()
            threads = [run_in_thread(push_fifty, str(n)) for n in range(3)]
            for i in range(50):
                nudge(inbox, "s", f"task.{i}", "task")
                await backend.checkpoint()
            for thread in threads:
                await backend.to_thread(thread.join, 30)
            compaction_done.set()
        assert len(batches[1]) == 200
        assert [entry.sequence for entry in batches[1]] == list(range(2, 202))
        for source in ("0", "1", "2", "task"):
            mine = [entry.content for entry in batches[1] if entry.content.startswith(source)]
            assert mine == [f"{source}.{i}" for i in range(50)]

    backend.run_in_real_time(guarded(backend, inbox, main))
