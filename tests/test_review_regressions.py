"""Regressions for the interleavings and misuses a review of the concurrency core found.

Each test failed before its fix (see the commit that added this file).
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import TYPE_CHECKING, Any

import pytest
import structlog

from harn_inbox import Inbox, InboxEntry, ManualClock

if TYPE_CHECKING:
    from conftest import Backend


def contents(entries: list[InboxEntry]) -> list[str]:
    return [entry.content for entry in entries]


# -- A predicate that raises StopIteration --------------------------------------------------------


def test_drain_where_predicate_raising_stopiteration_propagates_and_changes_nothing(
    inbox: Inbox,
) -> None:
    entries = [inbox.push("s", "k", f"#{n}", "t") for n in range(1, 5)]

    def predicate(entry: InboxEntry) -> bool:
        if entry.content == "#2":
            raise StopIteration  # e.g. next() on an exhausted generator, by mistake
        return entry.content == "#1"

    with pytest.raises(StopIteration):
        inbox.drain_where("s", predicate)
    assert inbox.snapshot("s") == entries


def test_wait_for_predicate_raising_stopiteration_takes_nothing(
    backend: Backend, inbox: Inbox
) -> None:
    entries = [inbox.push("s", "k", f"#{n}", "t") for n in range(1, 4)]

    def predicate(entry: InboxEntry) -> bool:
        if entry.content == "#2":
            raise StopIteration
        return False

    async def main() -> None:
        # Inside a coroutine StopIteration becomes RuntimeError (PEP 479).
        with pytest.raises((StopIteration, RuntimeError)):
            await inbox.wait_for("s", predicate)

    backend.run(main)
    assert inbox.snapshot("s") == entries
    assert inbox.waiter_count("s") == 0


# -- Verdicts survive the replacement of the pending list ----------------------------------------


def test_wait_for_does_not_judge_again_entries_that_survive_drop_oldest(backend: Backend) -> None:
    # At capacity every push replaces the session's list. Judging everything
    # again each time can starve a wait_for behind a steady producer; the
    # surviving entries keep their verdicts, so only new ones are judged.
    clock = ManualClock()
    inbox = Inbox(clock=clock, max_pending=3, overflow="drop_oldest")
    judged: list[str] = []

    def wanted(entry: InboxEntry) -> bool:
        judged.append(entry.content)
        return entry.content == "want"

    async def main() -> None:
        for content in ("a", "b", "c"):
            inbox.push("s", "k", content, "t")
        async with backend.task_group() as group:
            handle = group.start_soon(inbox.wait_for, "s", wanted)
            await backend.wait_parked(inbox, "s")
            for content in ("d", "e", "want"):
                inbox.push("s", "k", content, "t")
                for _ in range(50):
                    await backend.checkpoint()
        assert contents(handle.result) == ["want"]

    backend.run(main)
    assert sorted(judged) == sorted(["a", "b", "c", "d", "e", "want"])
    assert contents(inbox.snapshot("s")) == ["d", "e"]


# -- A logger that raises after the fact ----------------------------------------------------------


class BrokenLogger:
    """Raises on every event, as a PrintLogger on a closed stream does at shutdown."""

    def _fail(self, event: str, **fields: Any) -> None:
        raise ValueError("I/O operation on closed file")

    debug = info = warning = _fail


def test_a_raising_logger_loses_no_entry_and_fails_no_operation(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox(clock=clock, logger=BrokenLogger())  # type: ignore[arg-type]
    first = inbox.push("s", "k", "#1", "t")  # accepted: must not look refused
    second = inbox.push("s", "k", "#2", "t")
    assert inbox.drain_where("s", lambda entry: entry.content == "#1") == [first]
    assert inbox.wait_sync("s", 0) is True
    assert inbox.drain("s") == [second]
    inbox.requeue_front(second)
    assert inbox.clear_session("s") == 1
    inbox.close()
    assert "logging inbox.drain failed" in caplog.text


def test_a_raising_logger_does_not_lose_what_an_async_wait_took(
    backend: Backend, clock: ManualClock
) -> None:
    inbox = Inbox(clock=clock, logger=BrokenLogger())  # type: ignore[arg-type]
    entry = inbox.push("s", "k", "c", "t")

    async def main() -> list[InboxEntry]:
        return await inbox.wait_for("s", lambda e: True)

    assert backend.run(main) == [entry]


def test_structlog_logger_still_receives_events() -> None:
    with structlog.testing.capture_logs() as logs:
        Inbox(logger=structlog.get_logger()).push("s", "k", "c", "t")
    assert [log["event"] for log in logs] == ["inbox.push"]


# -- Waits abandoned in a closed asyncio loop -----------------------------------------------------


def _abandon_a_wait(inbox: Inbox) -> asyncio.Task[bool]:
    """A wait parked in a loop that is then closed with the wake to it still queued."""
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda loop, context: None)  # "Task was destroyed ..." expected
    task = loop.create_task(inbox.wait("s"))

    async def until_parked() -> None:
        for _ in range(1_000):
            if inbox.waiter_count("s"):
                return
            await asyncio.sleep(0)
        raise AssertionError("the wait never parked")

    loop.run_until_complete(until_parked())
    inbox.push("s", "k", "#1", "t")  # the loop is stopped, not closed: the wake is queued
    loop.close()  # ... and dropped with the loop's ready queue: the wait can never run again
    return task


@pytest.mark.parametrize("forget", ["waiter_count", "statistics", "clear_session", "close"])
def test_a_wake_queued_to_a_loop_closed_before_running_it_does_not_pin_the_wait(
    forget: str,
) -> None:
    # Whatever next looks at the session's waits finds the wait in a closed
    # loop, and forgets it; pushes meanwhile neither wake nor keep it.
    inbox = Inbox()
    task = _abandon_a_wait(inbox)
    inbox.push("s", "k", "#2", "t")
    assert contents(inbox.snapshot("s")) == ["#1", "#2"]
    if forget == "waiter_count":
        assert inbox.waiter_count("s") == 0
    elif forget == "statistics":
        assert inbox.statistics("s").waiters == 0
    elif forget == "clear_session":
        assert inbox.clear_session("s") == 2
    else:
        inbox.close()
        assert contents(inbox.drain("s")) == ["#1", "#2"]
    assert inbox.waiter_count("s") == 0
    task_ref = weakref.ref(task)
    del task
    gc.collect()
    assert task_ref() is None
    if forget == "clear_session":
        assert inbox.sessions() == []


# -- batches channels dropped without aclose() ----------------------------------------------------


def test_batches_dropped_without_aclose_leave_no_registry_behind(backend: Backend) -> None:
    inbox = Inbox()

    async def main() -> None:
        for n in range(2_000):
            session = f"req-{n}"
            inbox.push(session, "k", "c", "t")
            async for _ in inbox.batches(session):  # take one batch and leave, as users do
                break

    backend.run(main)
    gc.collect()
    inbox.batches("one-more")  # registering a new session sweeps the dead ones
    assert len(inbox._batches) <= 64
