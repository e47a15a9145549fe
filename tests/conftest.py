"""Shared fixtures, and the backend shim that runs one async test body on trio and on asyncio.

An async test takes the ``backend`` fixture (parametrized over trio and
asyncio) and calls ``backend.run(main)``. Under trio, ``run`` uses a
``MockClock`` with autojump, so ``await backend.sleep(...)`` is virtual time.
Under asyncio there is no virtual loop clock: tests there must decide their
verdict with events, `ManualClock` and ``backend.wait_parked`` (which counts
loop iterations, never seconds), so that each body is deterministic on both.
The suite's most common sequence, start a waiter, see it park, push, see it
return, is ``async with backend.parked(inbox, inbox.wait, "s") as waiter:``.
The other helpers the suite shares are in ``_support.py``.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import hypothesis
import pytest
import structlog
import trio
import trio.testing
from _redis_server import RedisServer, find_redis_server
from _support import ThreadCall, join_all
from structlog.testing import capture_logs

from harn_inbox import Inbox, ManualClock
from harn_inbox.stores import RedisStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

T = TypeVar("T")

# "ci" is what the README's test command runs; pick another with --hypothesis-profile.
hypothesis.settings.register_profile(
    "ci", deadline=None, max_examples=1000, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.register_profile("dev", deadline=None, max_examples=100)
hypothesis.settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=20_000,
    stateful_step_count=100,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: How many scheduler turns ``wait_parked`` allows before calling a test hung.
PARK_TURNS = 10_000


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start_ms=1_000_000)


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """What structlog loggers emit during the test, one dict per event."""
    with capture_logs() as captured:
        yield captured


@pytest.fixture
def logged(clock: ManualClock) -> Iterator[Inbox]:
    """An inbox with a structlog logger: its events go to `logs`."""
    with Inbox(clock=clock, logger=structlog.get_logger()) as inbox:
        yield inbox


@pytest.fixture
def inbox(clock: ManualClock) -> Iterator[Inbox]:
    with Inbox(clock=clock) as inbox:
        yield inbox


@attrs.define
class TaskHandle:
    """A task from ``TaskGroup.start_soon``: its result, what it raised, a way to cancel it."""

    result: Any = None
    raised: BaseException | None = None
    finished: bool = False
    _cancel: Callable[[], object] | None = None

    def cancel(self) -> None:
        assert self._cancel is not None
        self._cancel()

    async def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Await ``fn(*args)``, recording its result, or what it raised (and raise it on)."""
        try:
            self.result = await fn(*args)
        except BaseException as error:
            self.raised = error
            raise
        finally:
            self.finished = True


class TaskGroup:
    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> TaskHandle:
        raise NotImplementedError


@attrs.frozen
class Backend:
    """One async framework, behind the few operations the suite needs."""

    name: str

    @property
    def cancelled(self) -> type[BaseException]:
        return trio.Cancelled if self.name == "trio" else asyncio.CancelledError

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self.name == "trio":
            return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))
        return asyncio.run(_as_coroutine(fn, *args))

    def run_in_real_time(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`run`, except that trio keeps its real clock: for tests where threads work.

        Under ``MockClock(autojump_threshold=0)`` a trio loop that waits on
        another thread has no deadline to jump to, so it polls in a busy loop
        and takes the GIL from the very thread it waits for: such tests ran
        10-30x slower, and erratically (one took 1 s in one run, 100 s in the
        next). Tests run this way must keep every timeout on a `ManualClock`
        and every verdict on events.
        """
        if self.name == "trio":
            return trio.run(fn, *args)
        return self.run(fn, *args)

    async def checkpoint(self) -> None:
        if self.name == "trio":
            await trio.lowlevel.checkpoint()
        else:
            await asyncio.sleep(0)

    async def sleep(self, seconds: float) -> None:
        """Virtual under trio (autojump). Under asyncio it is real: never use it for a verdict."""
        if self.name == "trio":
            await trio.sleep(seconds)
        else:
            await asyncio.sleep(seconds)

    def event(self) -> trio.Event | asyncio.Event:
        return trio.Event() if self.name == "trio" else asyncio.Event()

    async def to_thread(self, fn: Callable[..., T], *args: Any) -> T:
        if self.name == "trio":
            return await trio.to_thread.run_sync(fn, *args)
        return await asyncio.to_thread(fn, *args)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Let other tasks run until *condition* holds (counted in loop turns, not seconds)."""
        for _ in range(PARK_TURNS):
            if condition():
                return
            await self.checkpoint()
        raise AssertionError("the condition never held")

    async def turns(self, count: int = 20) -> None:
        """Give every runnable task a few chances to run (a woken waiter would finish here)."""
        for _ in range(count):
            await self.checkpoint()

    async def wait_parked(self, inbox: Inbox, session_id: str, count: int = 1) -> None:
        """Let other tasks run until *count* waits are in progress on *session_id*.

        A wait counts from its first park until it returns (``waiter_count``),
        so right after a wake this returns at once: it tells "has parked", not
        "is parked again".
        """
        for _ in range(PARK_TURNS):
            if inbox.waiter_count(session_id) >= count:
                return
            await self.checkpoint()
        raise AssertionError(f"{count} waiter(s) never parked on {session_id!r}")

    async def wait_thread_parked(self, inbox: Inbox, session_id: str, count: int = 1) -> None:
        """Like `wait_parked`, for waiters in other threads: yields the GIL between looks."""
        for _ in range(PARK_TURNS * 10):
            if inbox.waiter_count(session_id) >= count:
                return
            await self.to_thread(lambda: None)
        raise AssertionError(f"{count} thread waiter(s) never parked on {session_id!r}")

    @asynccontextmanager
    async def parked(
        self,
        inbox: Inbox,
        call: Callable[..., Awaitable[Any]],
        *args: Any,
        session_id: str | None = None,
    ) -> AsyncIterator[TaskHandle]:
        """Start ``call(*args)`` as a task; enter once it waits on its session, exit once it ended.

        The session is *session_id*, or else the first argument. The body
        pushes (or clears, or closes) and the task's outcome is read from the
        handle after the block: ``async with backend.parked(inbox, inbox.wait,
        "s") as waiter: nudge(inbox, "s")``, then ``waiter.result``.
        """
        async with self.task_group() as group:
            handle = group.start_soon(call, *args)
            await self.wait_parked(inbox, args[0] if session_id is None else session_id)
            yield handle

    @asynccontextmanager
    async def task_group(self) -> AsyncIterator[TaskGroup]:
        if self.name == "trio":
            async with trio.open_nursery() as nursery:
                yield _TrioTaskGroup(nursery)
        else:
            group = _AsyncioTaskGroup()
            try:
                yield group
            except BaseException:
                group.cancel_all()
                await group.join()
                raise
            await group.join()

    @contextmanager
    def fail_after(self, seconds: float) -> Iterator[None]:
        """Under trio a virtual deadline; under asyncio nothing (tests there must not hang)."""
        if self.name == "trio":
            with trio.fail_after(seconds):
                yield
        else:
            yield


class _TrioTaskGroup(TaskGroup):
    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> TaskHandle:
        scope = trio.CancelScope()
        handle = TaskHandle(cancel=scope.cancel)

        async def runner() -> None:
            with scope:
                await handle.run(fn, *args)

        self._nursery.start_soon(runner)
        return handle


class _AsyncioTaskGroup(TaskGroup):
    # asyncio.TaskGroup is 3.11+; this is the part of it the suite needs.
    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []
        self._cancelled: set[asyncio.Task[None]] = set()

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> TaskHandle:
        handle = TaskHandle()
        task = asyncio.get_running_loop().create_task(handle.run(fn, *args))

        def settle(task: asyncio.Task[None]) -> None:
            # A task cancelled before it started never ran `handle.run`: say so, as trio does.
            if task.cancelled() and not handle.finished:
                handle.raised = asyncio.CancelledError()
                handle.finished = True

        task.add_done_callback(settle)

        def cancel() -> None:
            self._cancelled.add(task)
            task.cancel()

        handle._cancel = cancel
        self._tasks.append(task)
        return handle

    def cancel_all(self) -> None:
        for task in self._tasks:
            self._cancelled.add(task)
            task.cancel()

    async def join(self) -> None:
        while not all(task.done() for task in self._tasks):
            await asyncio.wait([task for task in self._tasks if not task.done()])
        for task in self._tasks:
            if task.cancelled():
                assert task in self._cancelled, "a task was cancelled that the test did not cancel"
                continue
            error = task.exception()
            if error is not None:
                raise error


async def _as_coroutine(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await fn(*args)


@pytest.fixture(params=["trio", "asyncio"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return Backend(request.param)


@pytest.fixture
def other_backend(backend: Backend) -> Backend:
    """The framework that `backend` is not: for a second loop beside the test's own."""
    return Backend("asyncio" if backend.name == "trio" else "trio")


@pytest.fixture
def run_in_thread() -> Iterator[Callable[..., ThreadCall]]:
    """Start fn(*args) in a daemon thread; each must finish by teardown, which raises its errors."""
    threads: list[ThreadCall] = []

    def start(fn: Callable[..., object], *args: Any) -> ThreadCall:
        thread = ThreadCall(fn, *args)
        threads.append(thread)
        return thread

    yield start
    join_all(threads)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The test session's own ``redis-server`` (see ``_redis_server.py``); skips without one."""
    binary = find_redis_server()
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def connect(redis_server: RedisServer) -> Iterator[Callable[..., Inbox]]:
    """``connect(namespace, clock=None, **store_options)``: an inbox on the test's server.

    Every inbox and store made is closed at teardown (an inbox's close leaves
    its store open: the store's own close stops its subscriber thread).
    """
    made: list[tuple[Inbox, RedisStore]] = []

    def connect(namespace: str, clock: ManualClock | None = None, **options: Any) -> Inbox:
        store = RedisStore(redis_server.url, namespace=namespace, **options)
        try:
            inbox = Inbox(store=store, clock=clock or ManualClock(start_ms=1_000_000))
        except BaseException:
            store.close()
            raise
        made.append((inbox, store))
        return inbox

    yield connect
    for inbox, store in made:
        inbox.close()
        store.close()
