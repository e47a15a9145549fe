"""Where the kit runs calls away from the test's thread, and `Outcome`, what such a call did.

A wait runs elsewhere so that its wake-up crosses threads: ``wait_sync`` in a
thread of its own (`in_thread`), ``wait`` and ``wait_for`` as tasks of a trio
run or of an asyncio loop, each hosted in a daemon thread (one of each per
process). `Hosted` keeps one machine's calls, to cancel those a broken inbox
never ended. Nothing here knows about inboxes.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Awaitable, Callable
from typing import final

import trio

#: Real seconds a released wait may take to return before the kit calls it lost. Only a broken
#: inbox ever gets near this: a verdict never depends on it.
_SAFETY_SECONDS = 10.0
#: Real seconds teardown gives each wait still parked to return once the inbox is closed.
TEARDOWN_SECONDS = 1.0


@final
class Outcome:
    """What a call running elsewhere (a helper thread, a host loop) returned or raised."""

    def __init__(self, description: str) -> None:
        self.description = description
        self._done = threading.Event()
        self._value: object = None
        self._error: BaseException | None = None

    def set(self, value: object) -> None:
        self._value = value
        self._done.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def outcome(self) -> str:
        """What it returned or raised, for messages (only once done)."""
        if self._error is not None:
            return f"raised {self._error!r}"
        return f"returned {self._value!r}"

    def pause(self, seconds: float) -> None:
        """Sleep up to *seconds*, less if the call returns meanwhile."""
        self._done.wait(seconds)

    def result(self, seconds: float = _SAFETY_SECONDS) -> object:
        """What the call returned (re-raising what it raised), once it has returned."""
        if not self._done.wait(seconds):
            raise AssertionError(
                f"{self.description} had not returned {seconds:g} s (real time) after what "
                f"should have ended it: a lost wake-up?"
            )
        if self._error is not None:
            raise self._error
        return self._value


def in_thread(description: str, function: Callable[[], object]) -> Outcome:
    """Run *function* in a new daemon thread."""
    outcome = Outcome(description)

    def run() -> None:
        try:
            value = function()
        except BaseException as error:  # handed to whoever asks for the result
            outcome.fail(error)
        else:
            outcome.set(value)

    threading.Thread(target=run, name=f"harn_inbox.testing: {description}", daemon=True).start()
    return outcome


AsyncFunction = Callable[[], Awaitable[object]]


async def _settle(outcome: Outcome, async_function: AsyncFunction) -> None:
    try:
        value = await async_function()
    except Exception as error:
        outcome.fail(error)
    except BaseException as error:  # cancelled when the host stops: let it unwind
        outcome.fail(error)
        raise
    else:
        outcome.set(value)


_Cancel = Callable[[], None]


@final
class _TrioHost:
    """A trio run in a daemon thread where the kit's trio waits run as tasks.

    One per process, started on first use and stopped at exit: a trio run per
    wait, or per run of the machine, would cost more than the steps it serves.
    """

    def __init__(self) -> None:
        started = threading.Event()
        self._handle: tuple[trio.lowlevel.TrioToken, trio.Nursery] | None = None
        self._thread = threading.Thread(
            target=self._run, args=(started,), name="harn_inbox.testing: trio host", daemon=True
        )
        self._thread.start()
        if not started.wait(_SAFETY_SECONDS):
            raise AssertionError("the conformance kit's trio host did not start")

    def _run(self, started: threading.Event) -> None:
        async def main() -> None:
            async with trio.open_nursery() as nursery:
                self._handle = (trio.lowlevel.current_trio_token(), nursery)
                started.set()
                await trio.sleep_forever()

        try:
            trio.run(main)
        except BaseException:  # a task's error is in its outcome already
            pass

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, description: str, async_function: AsyncFunction) -> tuple[Outcome, _Cancel]:
        assert self._handle is not None  # set before __init__ returns
        token, nursery = self._handle
        outcome = Outcome(description)
        scope = trio.CancelScope()

        async def task() -> None:
            with scope:
                await _settle(outcome, async_function)

        def cancel() -> None:
            if not outcome.done:
                try:
                    token.run_sync_soon(scope.cancel)
                except trio.RunFinishedError:
                    pass

        token.run_sync_soon(nursery.start_soon, task)
        return outcome, cancel

    def stop(self) -> None:
        """Cancel whatever still runs and end the run."""
        assert self._handle is not None
        token, nursery = self._handle
        try:
            token.run_sync_soon(nursery.cancel_scope.cancel)
        except trio.RunFinishedError:
            pass
        self._thread.join(TEARDOWN_SECONDS)


@final
class _AsyncioHost:
    """An asyncio loop in a daemon thread where the kit's asyncio waits run as tasks.

    One per process, like `_TrioHost`.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="harn_inbox.testing: asyncio host", daemon=True
        )
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, description: str, async_function: AsyncFunction) -> tuple[Outcome, _Cancel]:
        outcome = Outcome(description)
        tasks: list[asyncio.Task[None]] = []

        def spawn() -> None:
            tasks.append(self._loop.create_task(_settle(outcome, async_function)))

        def cancel() -> None:
            if not outcome.done:
                self._loop.call_soon_threadsafe(lambda: [task.cancel() for task in tasks])

        self._loop.call_soon_threadsafe(spawn)
        return outcome, cancel

    def stop(self) -> None:
        """Cancel whatever still runs, stop the loop and close it."""

        async def shutdown() -> None:
            tasks = asyncio.all_tasks() - {asyncio.current_task()}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._loop.stop()

        self._loop.call_soon_threadsafe(self._loop.create_task, shutdown())
        self._thread.join(TEARDOWN_SECONDS)
        if not self._thread.is_alive():
            self._loop.close()


_hosts_lock = threading.Lock()
_hosts: dict[str, _TrioHost | _AsyncioHost] = {}


def _host(framework: str) -> _TrioHost | _AsyncioHost:
    """The process's host loop for *framework*, started (again, if it died) on demand."""
    with _hosts_lock:
        host = _hosts.get(framework)
        if host is None or not host.alive:
            host = _hosts[framework] = _TrioHost() if framework == "trio" else _AsyncioHost()
            atexit.register(host.stop)
        return host


@final
class Hosted:
    """One machine's calls in the host loops, to cancel those a broken inbox never ended."""

    def __init__(self) -> None:
        self._cancels: list[_Cancel] = []

    def run(self, framework: str, description: str, async_function: AsyncFunction) -> Outcome:
        outcome, cancel = _host(framework).submit(
            f"{description} under {framework}", async_function
        )
        self._cancels.append(cancel)
        return outcome

    def cancel(self) -> None:
        for cancel in self._cancels:
            cancel()
        self._cancels = []
