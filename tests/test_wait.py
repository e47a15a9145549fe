"""`await inbox.wait(...)`: what is special to it, on trio and asyncio.

What every way of waiting shares (woken by its own session only, ended by a
clear or a timeout) is in test_waiting.py. Here: a wait takes nothing, so one
push ends every wait parked on the session; timeouts keep their order; and the
framework-specific tests at the end show where a timeout runs: with the
default `SystemClock` on the framework's own timers (trio's ``MockClock``
makes them virtual), with a `ManualClock` only on that clock.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING

import pytest
import trio
from _support import nudge

from harn_inbox import Inbox, ManualClock

if TYPE_CHECKING:
    from conftest import Backend


# -- Waking ---------------------------------------------------------------------------------------


def test_wait_returns_true_at_once_when_entries_are_pending(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        nudge(inbox, "s")
        assert await inbox.wait("s") is True
        assert await inbox.wait("s", 5) is True
        assert await inbox.wait("s", 0) is True
        assert inbox.waiter_count("s") == 0
        assert inbox.pending_count("s") == 1  # waiting takes nothing

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


def test_infinite_timeout_waits_without_limit(
    backend: Backend, inbox: Inbox, clock: ManualClock
) -> None:
    async def main() -> None:
        async with backend.parked(inbox, inbox.wait, "s", math.inf) as waiter:
            clock.advance(10**9)
            await backend.turns()
            assert not waiter.finished
            nudge(inbox, "s")
        assert waiter.result is True

    backend.run(main)


# -- Timeouts on the injected clock ---------------------------------------------------------------


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
        async with backend.parked(inbox, inbox.wait, "s", 5) as waiter:
            await backend.to_thread(clock.advance, 4.999)
            await backend.turns()
            assert not waiter.finished
            await backend.to_thread(clock.advance, 0.001)
        assert waiter.result is False
        assert inbox.waiter_count("s") == 0

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
