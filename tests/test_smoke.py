from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harn_inbox import Inbox, ManualClock


def test_push_from_thread_wakes_waiter(backend, inbox: Inbox, clock: ManualClock) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait, "s", 10)
            await backend.wait_parked(inbox, "s")
            await backend.to_thread(inbox.push, "s", "k", "c", "thread")
        assert handle.result is True
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_timeout_follows_manual_clock(backend, inbox: Inbox, clock: ManualClock) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait, "s", 5)
            await backend.wait_parked(inbox, "s")
            clock.advance(4.999)
            await backend.checkpoint()
            assert not handle.finished
            clock.advance(0.001)
        assert handle.result is False

    backend.run(main)


def test_cancel_leaves_no_waiter(backend, inbox: Inbox) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait_for, "s", lambda e: True)
            await backend.wait_parked(inbox, "s")
            handle.cancel()
        assert isinstance(handle.raised, backend.cancelled)
        assert inbox.waiter_count("s") == 0

    backend.run(main)
