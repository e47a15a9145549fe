"""`await inbox.wait(...)`: when it returns True, when False, and what ends it, on trio and asyncio.

Verdicts come from events, `ManualClock` and ``backend.wait_parked`` (loop turns),
never from the wall clock. The framework-specific tests at the end show where a
timeout runs: with the default `SystemClock` on the framework's own timers (trio's
``MockClock`` makes them virtual), with a `ManualClock` only on that clock.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

import pytest
import trio

from harn_inbox import Inbox, InboxEntry, ManualClock

if TYPE_CHECKING:
    from conftest import Backend


def nudge(inbox: Inbox, session_id: str, content: str = "c", source: str = "test") -> InboxEntry:
    return inbox.push(session_id, "tool_result", content, source)


# -- Returning True -------------------------------------------------------------------------------


def test_wait_returns_true_at_once_when_entries_are_pending(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        nudge(inbox, "s")
        assert await inbox.wait("s") is True
        assert await inbox.wait("s", 5) is True
        assert await inbox.wait("s", 0) is True
        assert inbox.waiter_count("s") == 0
        assert inbox.pending_count("s") == 1  # waiting takes nothing

    backend.run(main)


def test_wait_with_timeout_zero_only_looks(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        assert await inbox.wait("s", 0) is False
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_push_from_another_task_wakes_parked_wait_and_leaves_the_entry(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait, "s")
            await backend.wait_parked(inbox, "s")
            entry = nudge(inbox, "s")
        assert handle.result is True
        assert inbox.snapshot("s") == [entry]
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_one_push_wakes_every_wait_parked_on_the_session(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handles = [group.start_soon(inbox.wait, "s", timeout) for timeout in (None, 5, 50)]
            await backend.wait_parked(inbox, "s", 3)
            nudge(inbox, "s")
        assert [handle.result for handle in handles] == [True, True, True]
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_push_wakes_only_the_waits_of_its_own_session(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            others = [group.start_soon(inbox.wait, "other") for _ in range(2)]
            mine = group.start_soon(inbox.wait, "mine")
            await backend.wait_parked(inbox, "other", 2)
            await backend.wait_parked(inbox, "mine")
            nudge(inbox, "mine")
            await backend.until(lambda: mine.finished)
            await backend.turns()
            assert inbox.waiter_count("other") == 2
            assert not any(handle.finished for handle in others)
            nudge(inbox, "other")
        assert mine.result is True
        assert [handle.result for handle in others] == [True, True]

    backend.run(main)


def test_entries_drained_before_the_wait_looks_do_not_end_it(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        nudge(inbox, "s")
        inbox.drain("s")
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait, "s")
            await backend.wait_parked(inbox, "s")
            await backend.turns()
            assert not handle.finished
            nudge(inbox, "s")
        assert handle.result is True

    backend.run(main)


def test_infinite_timeout_waits_without_limit(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait, "s", math.inf)
            await backend.wait_parked(inbox, "s")
            clock.advance(10**9)
            await backend.turns()
            assert not handle.finished
            nudge(inbox, "s")
        assert handle.result is True

    backend.run(main)


# -- Returning False: timeouts on the injected clock ----------------------------------------------


def test_manual_clock_timeouts_end_waits_in_deadline_order(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handles = [group.start_soon(inbox.wait, "s", seconds) for seconds in (1, 2, 3)]
            await backend.wait_parked(inbox, "s", 3)
            clock.advance(1.5)
            await backend.until(lambda: handles[0].finished)
            await backend.turns()
            assert [handle.finished for handle in handles] == [True, False, False]
            assert inbox.waiter_count("s") == 2
            clock.advance(0.499)
            await backend.turns()
            assert not handles[1].finished
            clock.advance(0.001)
            await backend.until(lambda: handles[1].finished)
            assert not handles[2].finished
            nudge(inbox, "s")
        assert [handle.result for handle in handles] == [False, False, True]
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_manual_clock_advanced_from_another_thread_ends_wait(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait, "s", 5)
            await backend.wait_parked(inbox, "s")
            await backend.to_thread(clock.advance, 4.999)
            await backend.turns()
            assert not handle.finished
            await backend.to_thread(clock.advance, 0.001)
        assert handle.result is False
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_finished_wait_forgets_its_manual_clock_timer(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait, "s", 5)
            await backend.wait_parked(inbox, "s")
            nudge(inbox, "s")
        assert handle.result is True
        assert not clock._timers  # a woken wait leaves no deadline behind to fire later

    backend.run(main)


def test_push_before_the_deadline_counts_though_the_timer_fired_before_the_wait_looked(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait, "s", 5)
            await backend.wait_parked(inbox, "s")
            nudge(inbox, "s")
            clock.advance(5)  # the timer fires before the woken wait gets to look
        assert handle.result is True
        assert inbox.waiter_count("s") == 0

    backend.run(main)


# -- Returning False: cleared, closed -------------------------------------------------------------


def test_clear_session_ends_parked_waits_with_false(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handles = [group.start_soon(inbox.wait, "s", timeout) for timeout in (None, 5)]
            await backend.wait_parked(inbox, "s", 2)
            inbox.clear_session("s")
        assert [handle.result for handle in handles] == [False, False]
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_clear_session_right_after_a_push_ends_the_woken_wait(
    backend: Backend, inbox: Inbox
) -> None:
    # The push wakes the wait; before it looks again the session is cleared. It
    # must end (False), not park again on the session's next incarnation.
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait, "s")
            await backend.wait_parked(inbox, "s")
            nudge(inbox, "s")
            inbox.clear_session("s")
            with backend.fail_after(60):
                await backend.until(lambda: handle.finished)
        assert handle.result is False
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_clear_session_leaves_waits_of_other_sessions_parked(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            cleared = group.start_soon(inbox.wait, "cleared")
            other = group.start_soon(inbox.wait, "other")
            await backend.wait_parked(inbox, "cleared")
            await backend.wait_parked(inbox, "other")
            inbox.clear_session("cleared")
            await backend.until(lambda: cleared.finished)
            await backend.turns()
            assert inbox.waiter_count("other") == 1
            assert not other.finished
            nudge(inbox, "other")
        assert (cleared.result, other.result) == (False, True)

    backend.run(main)


def test_wait_after_clear_session_waits_for_the_next_push(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        nudge(inbox, "s")
        inbox.clear_session("s")
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait, "s")
            await backend.wait_parked(inbox, "s")
            await backend.turns()
            assert not handle.finished
            assert nudge(inbox, "s").sequence == 1
        assert handle.result is True

    backend.run(main)


def test_close_ends_parked_waits_and_reports_what_is_pending(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        nudge(inbox, "full")
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait, "empty")
            await backend.wait_parked(inbox, "empty")
            inbox.close()
        assert handle.result is False
        assert inbox.waiter_count("empty") == 0
        assert await inbox.wait("empty") is False  # closed and empty: at once, no park
        assert await inbox.wait("full") is True

    backend.run(main)


# -- The default SystemClock: timeouts on the framework's own timers -----------------------------


@pytest.mark.trio
async def test_system_clock_timeout_runs_on_trio_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with Inbox() as inbox:
        start = trio.current_time()
        assert await inbox.wait("s", 30) is False
        assert trio.current_time() - start == pytest.approx(30)
        assert inbox.waiter_count("s") == 0


@pytest.mark.trio
async def test_system_clock_wait_woken_before_its_trio_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with Inbox() as inbox:

        async def push_later() -> None:
            await trio.sleep(10)
            nudge(inbox, "s")

        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(push_later)
            assert await inbox.wait("s", 30) is True
        assert trio.current_time() - start == pytest.approx(10)


@pytest.mark.trio
async def test_manual_clock_timeout_ignores_trio_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    clock = ManualClock()
    with Inbox(clock=clock) as inbox:
        async with trio.open_nursery() as nursery:
            results: list[bool] = []

            async def waiter() -> None:
                results.append(await inbox.wait("s", 5))

            nursery.start_soon(waiter)
            await trio.sleep(1000)  # trio's time runs on; the inbox's clock does not
            assert results == []
            assert inbox.waiter_count("s") == 1
            clock.advance(5)
        assert results == [False]


def test_system_clock_timeout_runs_on_the_asyncio_loop_timer() -> None:
    async def main() -> None:
        with Inbox() as inbox:
            loop = asyncio.get_running_loop()
            scheduled: list[float] = []
            call_later = loop.call_later

            def spy(delay: float, *args: object) -> asyncio.TimerHandle:
                scheduled.append(delay)
                return call_later(delay, *args)

            loop.call_later = spy  # type: ignore[method-assign]
            assert await inbox.wait("s", 0.001) is False
            assert scheduled == [0.001]
            assert inbox.waiter_count("s") == 0

    asyncio.run(main())
