"""`inbox.batches(session_id)`: a session's entries as a trio ReceiveChannel of drained batches.

The same channel works under trio and asyncio: ``receive()``, ``async for``,
``async with``, ``aclose()``. Each step yields a non-empty batch; the channel ends
when the session is cleared (parked or busy between steps) or the inbox is closed
and drained. What a step shares with every way of waiting (woken by its own
session only, ended by a clear) is in test_waiting.py; closing: test_shutdown.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
from _support import catching, collect, nudge

if TYPE_CHECKING:
    from conftest import Backend

    from harn_inbox import Inbox, InboxEntry


# -- A channel, under either framework ------------------------------------------------------------


def test_batches_is_a_trio_receive_channel(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        channel = inbox.batches("s")
        assert isinstance(channel, trio.abc.ReceiveChannel)
        assert isinstance(channel, trio.abc.AsyncResource)
        assert channel.session_id == "s"

    backend.run(main)


def test_receive_returns_everything_pending_as_one_batch_in_order(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        entries = [nudge(inbox, "s", str(n)) for n in range(3)]
        channel = inbox.batches("s")
        assert await channel.receive() == entries
        assert inbox.pending_count("s") == 0
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_async_for_yields_each_batch_and_sees_later_pushes(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        batches: list[list[InboxEntry]] = []
        first = [nudge(inbox, "s", "a"), nudge(inbox, "s", "b")]
        async with backend.task_group() as group:
            group.start_soon(collect, inbox.batches("s"), batches)
            await backend.until(lambda: len(batches) == 1)
            await backend.wait_parked(inbox, "s")
            second = [await backend.to_thread(nudge, inbox, "s", "c")]
            await backend.until(lambda: len(batches) == 2)
            await backend.wait_parked(inbox, "s")
            inbox.clear_session("s")
        assert batches == [first, second]

    backend.run(main)


# -- Ending: clear_session ------------------------------------------------------------------------


def test_iteration_ends_when_the_session_is_cleared_while_the_consumer_is_busy(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        busy_done = backend.event()
        seen: list[list[InboxEntry]] = []

        async def consume() -> None:
            async for batch in inbox.batches("s"):
                seen.append(batch)
                await busy_done.wait()  # the slow work between two steps

        first = nudge(inbox, "s", "first")
        async with backend.task_group() as group:
            handle = group.start_soon(consume)
            await backend.until(lambda: len(seen) == 1)
            nudge(inbox, "s", "dropped")
            assert inbox.clear_session("s") == 1
            busy_done.set()
        assert handle.raised is None
        assert seen == [[first]]
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_cleared_channel_keeps_ending_and_a_new_channel_serves_the_next_incarnation(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        old = inbox.batches("s")
        inbox.clear_session("s")
        entry = nudge(inbox, "s")
        for _ in range(2):
            with pytest.raises(trio.EndOfChannel):
                await old.receive()
        assert inbox.snapshot("s") == [entry]  # the ended channel took nothing
        assert await inbox.batches("s").receive() == [entry]

    backend.run(main)


# -- aclose(): this channel only ------------------------------------------------------------------


def test_receive_after_aclose_raises_closed_resource_error(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        entry = nudge(inbox, "s")
        channel = inbox.batches("s")
        await channel.aclose()
        await channel.aclose()  # idempotent
        with pytest.raises(trio.ClosedResourceError):
            await channel.receive()
        assert inbox.snapshot("s") == [entry]

    backend.run(main)


def test_aclose_makes_a_parked_receive_raise_closed_resource_error(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        channel = inbox.batches("s")
        args = (trio.ClosedResourceError, channel.receive)
        async with backend.parked(inbox, catching, *args, session_id="s") as receiver:
            await channel.aclose()
        assert isinstance(receiver.result, trio.ClosedResourceError)
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_aclose_leaves_other_consumers_of_the_session_parked(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        closing, other = inbox.batches("s"), inbox.batches("s")
        async with backend.task_group() as group:
            closed_receive = group.start_soon(catching, trio.ClosedResourceError, closing.receive)
            other_receive = group.start_soon(other.receive)
            plain_wait = group.start_soon(inbox.wait, "s")
            await backend.wait_parked(inbox, "s", 3)
            await closing.aclose()
            await backend.until(lambda: closed_receive.finished)
            await backend.turns()
            assert inbox.waiter_count("s") == 2
            assert not other_receive.finished
            assert not plain_wait.finished
            entry = nudge(inbox, "s")
            await backend.until(lambda: other_receive.finished)
            if not plain_wait.finished:
                # The receive drained the entry before the plain wait looked:
                # that wait rightly parked again, and the next push ends it.
                nudge(inbox, "s")
        assert isinstance(closed_receive.result, trio.ClosedResourceError)
        assert plain_wait.result is True
        assert other_receive.result == [entry]

    backend.run(main)


def test_async_with_closes_the_channel_on_exit(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        entry = nudge(inbox, "s")
        async with inbox.batches("s") as channel:
            assert await channel.receive() == [entry]
        with pytest.raises(trio.ClosedResourceError):
            await channel.receive()

    backend.run(main)


# -- Several receivers ---------------------------------------------------------------------------


def test_each_batch_goes_to_exactly_one_receiver(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        shared = inbox.batches("s")
        batches: list[list[InboxEntry]] = []
        pushed: list[InboxEntry] = []
        async with backend.task_group() as group:
            for channel in (shared, shared, inbox.batches("s")):
                group.start_soon(collect, channel, batches)
            await backend.wait_parked(inbox, "s", 3)
            for round_ in range(20):
                pushed.append(nudge(inbox, "s", str(round_)))
                if round_ % 3 == 0:
                    pushed.append(await backend.to_thread(nudge, inbox, "s", f"{round_}t"))
                await backend.checkpoint()
            await backend.until(lambda: sum(map(len, batches)) == len(pushed))
            inbox.clear_session("s")
        assert all(batches)
        taken = [entry for batch in batches for entry in batch]
        assert sorted(taken, key=lambda entry: entry.sequence) == pushed
        for batch in batches:
            assert batch == sorted(batch, key=lambda entry: entry.sequence)

    backend.run(main)
