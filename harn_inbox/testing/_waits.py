"""The inbox calls the machine runs in the hosts.

`launch_wait` and `launch_wait_any` start a wait away from the test's thread;
`wait_then_push_trio` and `wait_then_push_asyncio` park a wait and push from
inside its own loop; `claim_async` runs an ``async with inbox.claim(...)``
block; `look_after_close` waits on each session once the inbox is closed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ._hosts import _SAFETY_SECONDS, in_thread
from ._vocabulary import BlockFailed

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from .._entry import InboxEntry
    from .._protocol import InboxLike
    from ._hosts import Hosted, Outcome
    from ._vocabulary import Where

#: Scheduler turns a waiter inside a loop may take to park.
_LOOP_TURNS = 10_000
#: Real seconds between looks once those turns have passed: a wait whose looks run off the
#: loop (a store over the network) parks after a round trip, not within loop turns.
_PAUSE = 0.001


def _turns() -> Iterator[int]:
    """Turn numbers, until the safety bound has passed (only a broken inbox gets near it)."""
    deadline = time.monotonic() + _SAFETY_SECONDS
    for turn in itertools.count():
        if turn >= _LOOP_TURNS and time.monotonic() > deadline:
            return
        yield turn


def launch_wait(
    hosts: Hosted,
    inbox: InboxLike,
    framework: str,
    session: str,
    timeout_ms: int | None,
    predicate: Where | None = None,
    limit: int | None = None,
) -> Outcome:
    """Start ``wait_sync`` in a thread, or ``wait`` / ``wait_for`` as a task of a host loop."""
    timeout = None if timeout_ms is None else timeout_ms / 1000
    if predicate is not None:
        limited = "" if limit is None else f", limit={limit!r}"
        return hosts.run(
            framework,
            f"await inbox.wait_for({session!r}, {predicate!r}, timeout={timeout!r}{limited})",
            partial(inbox.wait_for, session, predicate, timeout, limit=limit),
        )
    if framework == "thread":
        return in_thread(
            f"inbox.wait_sync({session!r}, timeout={timeout!r}) in a thread",
            partial(inbox.wait_sync, session, timeout),
        )
    return hosts.run(
        framework,
        f"await inbox.wait({session!r}, timeout={timeout!r})",
        partial(inbox.wait, session, timeout),
    )


def launch_wait_any(
    hosts: Hosted,
    inbox: InboxLike,
    framework: str,
    sessions: tuple[str, ...],
    timeout_ms: int | None,
) -> Outcome:
    """Start ``wait_any_sync`` in a thread, or ``wait_any`` as a task of a host loop."""
    timeout = None if timeout_ms is None else timeout_ms / 1000
    if framework == "thread":
        return in_thread(
            f"inbox.wait_any_sync({list(sessions)!r}, timeout={timeout!r}) in a thread",
            partial(inbox.wait_any_sync, sessions, timeout),
        )
    return hosts.run(
        framework,
        f"await inbox.wait_any({list(sessions)!r}, timeout={timeout!r})",
        partial(inbox.wait_any, sessions, timeout),
    )


async def claim_async(
    inbox: InboxLike, session: str, predicate: Where | None, fails: bool
) -> list[InboxEntry]:
    """``async with inbox.claim(session, predicate) as entries:``, its block raising if *fails*."""
    taken: list[InboxEntry] = []
    try:
        async with inbox.claim(session, predicate) as entries:
            taken = list(entries)
            if fails:
                raise BlockFailed
    except BlockFailed:
        pass
    return taken


def _returned_at_once(session: str, result: object) -> str:
    return (
        f"await inbox.wait({session!r}) returned {result!r} at once, though {session!r} had "
        f"nothing pending"
    )


async def wait_then_push_trio(
    inbox: InboxLike, session: str, parked: int, push: Callable[[], InboxEntry]
) -> tuple[object, InboxEntry]:
    """In one trio run: park ``wait`` on *session*, then push from that run's own thread."""
    results: list[object] = []

    async def waiter() -> None:
        results.append(await inbox.wait(session))

    # A failure is raised outside the nursery, so that it is not wrapped in an ExceptionGroup.
    failure = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        for turn in _turns():
            if results:
                failure = _returned_at_once(session, results[0])
                break
            if inbox.waiter_count(session) == parked:
                entry = push()
                break
            if turn < _LOOP_TURNS:
                await trio.lowlevel.checkpoint()
            else:  # its looks run off the loop (a network store): let real time pass
                await trio.sleep(_PAUSE)
        else:
            failure = f"await inbox.wait({session!r}) never parked under trio"
        if failure is not None:
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise AssertionError(failure)
    return results[0], entry


async def wait_then_push_asyncio(
    inbox: InboxLike, session: str, parked: int, push: Callable[[], InboxEntry]
) -> tuple[object, InboxEntry]:
    """In one asyncio run: park ``wait`` on *session*, then push from that loop's own thread."""

    async def waiter() -> bool:
        return await inbox.wait(session)

    task = asyncio.get_running_loop().create_task(waiter())
    for turn in _turns():
        if task.done():
            raise AssertionError(_returned_at_once(session, await task))
        if inbox.waiter_count(session) == parked:
            break
        await asyncio.sleep(0 if turn < _LOOP_TURNS else _PAUSE)
    else:
        task.cancel()
        raise AssertionError(f"await inbox.wait({session!r}) never parked under asyncio")
    entry = push()
    return await task, entry


async def look_after_close(inbox: InboxLike, sessions: Sequence[str]) -> list[object]:
    """``wait`` on each session, then ``wait_any`` on all, untimed.

    Under trio each is preceded by its sync form (``wait_sync``,
    ``wait_any_sync``) in a worker thread.
    """
    in_trio = trio.lowlevel.in_trio_run()
    looks: list[object] = []
    for session in sessions:
        if in_trio:
            looks.append(await _in_worker_thread(inbox.wait_sync, session))
        looks.append(await inbox.wait(session))
    if in_trio:
        looks.append(await _in_worker_thread(inbox.wait_any_sync, sessions))
    looks.append(await inbox.wait_any(sessions))
    return looks


async def _in_worker_thread(wait: Callable[[Any, None], object], sessions: Any) -> object:
    return await trio.to_thread.run_sync(wait, sessions, None, abandon_on_cancel=True)
