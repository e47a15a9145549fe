"""`inbox.batches(session_id)`: a session's entries as a trio ReceiveChannel of drained batches.

The same channel works under trio and asyncio: ``receive()``, ``async for``,
``async with``, ``aclose()``. Each step yields a non-empty batch; the channel ends
when the session is cleared (parked or busy between steps) or the inbox is closed
and drained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

if TYPE_CHECKING:
    from conftest import Backend

    from harn_inbox import Batches, Inbox, InboxEntry


def nudge(inbox: Inbox, session_id: str, content: str = "c", source: str = "test") -> InboxEntry:
    return inbox.push(session_id, "tool_result", content, source)


async def collect(channel: Batches, into: list[list[InboxEntry]]) -> None:
    """``async for`` over *channel*, appending each batch to *into* as it comes."""
    async for batch in channel:
        into.append(batch)  # noqa: PERF401  # each batch must show as soon as it comes


async def receive_error(channel: Batches) -> BaseException | None:
    """Call ``receive`` and return what it raised (so the task group does not)."""
    try:
        await channel.receive()
    except (trio.EndOfChannel, trio.ClosedResourceError) as error:
        return error
    return None


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


def test_receive_parks_until_a_push_and_returns_a_non_empty_batch(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        channel = inbox.batches("s")
        async with backend.task_group() as group:
            handle = group.start_soon(channel.receive)
            await backend.wait_parked(inbox, "s")
            await backend.turns()
            assert not handle.finished
            entries = [nudge(inbox, "s", str(n)) for n in range(2)]
        assert handle.result == entries
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_receive_woken_by_a_push_from_another_thread(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        channel = inbox.batches("s")
        async with backend.task_group() as group:
            handle = group.start_soon(channel.receive)
            await backend.wait_parked(inbox, "s")
            entry = await backend.to_thread(nudge, inbox, "s")
        assert handle.result == [entry]

    backend.run(main)


def test_receive_ignores_pushes_to_other_sessions(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        channel = inbox.batches("mine")
        async with backend.task_group() as group:
            handle = group.start_soon(channel.receive)
            await backend.wait_parked(inbox, "mine")
            nudge(inbox, "other")
            await backend.turns()
            assert not handle.finished
            assert inbox.waiter_count("mine") == 1
            entry = nudge(inbox, "mine")
        assert handle.result == [entry]
        assert inbox.pending_count("other") == 1

    backend.run(main)


def test_receive_woken_after_someone_else_drained_parks_again(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        channel = inbox.batches("s")
        async with backend.task_group() as group:
            handle = group.start_soon(channel.receive)
            await backend.wait_parked(inbox, "s")
            first = nudge(inbox, "s")
            assert inbox.drain("s") == [first]  # before the woken receive looks
            await backend.turns()
            assert not handle.finished
            second = nudge(inbox, "s")
        assert handle.result == [second]

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


def test_iteration_ends_when_the_session_is_cleared_while_parked(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        batches: list[list[InboxEntry]] = []
        async with backend.task_group() as group:
            handle = group.start_soon(collect, inbox.batches("s"), batches)
            await backend.wait_parked(inbox, "s")
            inbox.clear_session("s")
        assert handle.raised is None
        assert batches == []
        assert inbox.waiter_count("s") == 0

    backend.run(main)


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


def test_clearing_another_session_does_not_end_the_channel(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        channel = inbox.batches("mine")
        async with backend.task_group() as group:
            handle = group.start_soon(channel.receive)
            await backend.wait_parked(inbox, "mine")
            inbox.clear_session("other")
            await backend.turns()
            assert not handle.finished
            entry = nudge(inbox, "mine")
        assert handle.result == [entry]

    backend.run(main)


# -- Ending: closing the inbox --------------------------------------------------------------------


def test_closed_inbox_channel_yields_what_is_left_then_ends(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        entries = [nudge(inbox, "s", str(n)) for n in range(2)]
        inbox.close()
        batches: list[list[InboxEntry]] = []
        await collect(inbox.batches("s"), batches)
        assert batches == [entries]

    backend.run(main)


def test_closing_the_inbox_ends_a_parked_receive(backend: Backend, inbox: Inbox) -> None:
    async def main() -> None:
        channel = inbox.batches("s")
        async with backend.task_group() as group:
            handle = group.start_soon(receive_error, channel)
            await backend.wait_parked(inbox, "s")
            inbox.close()
        assert isinstance(handle.result, trio.EndOfChannel)
        assert inbox.waiter_count("s") == 0

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
        async with backend.task_group() as group:
            handle = group.start_soon(receive_error, channel)
            await backend.wait_parked(inbox, "s")
            await channel.aclose()
        assert isinstance(handle.result, trio.ClosedResourceError)
        assert inbox.waiter_count("s") == 0

    backend.run(main)


def test_aclose_leaves_other_consumers_of_the_session_parked(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        closing, other = inbox.batches("s"), inbox.batches("s")
        async with backend.task_group() as group:
            closed_receive = group.start_soon(receive_error, closing)
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
