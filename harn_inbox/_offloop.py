"""`OffLoopCall`: a call that talks to a store's server, made in a worker thread, abandonable.

A store whose state lives on a server (`RedisStore`) answers in a round trip,
or, when the server is paused or gone, only after its socket's timeout and
retries. So such calls run in a worker thread, never on an event loop, and the
one who waits for them may stop waiting:

- when cancelled (trio, asyncio; a wait's timeout kept by trio is one too);
- in a wait, once its deadline has passed on the inbox's clock or the inbox
  was closed: the waiter checks that every `PATIENCE` seconds while its look
  runs (a look normally takes well under a millisecond, so only a stalled
  server is ever checked on).

An abandoned call runs on to its end in its thread, and whatever it took
(entries) is given back there, at the head of their session: a cancelled or
timed-out call has taken nothing, whenever the server answers. Pushes and
other changes have nothing to give back: one abandoned on the wire may have
been applied, as after a `StoreError`.

Every thread here comes from trio's thread cache
(``trio.lowlevel.start_thread_soon``), which needs no trio run.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar, final

import sniffio
import trio

from ._lot import fallback_logger

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")

#: Seconds between a waiter's checks, while its look is on the wire, of whether
#: it still wants the answer (its deadline passed, the inbox closed).
PATIENCE = 0.1


class _State(enum.Enum):
    RUNNING = enum.auto()
    FINISHED = enum.auto()
    ABANDONED = enum.auto()


@final
class OffLoopCall(Generic[T]):
    """*function* run in a worker thread; whoever waits for it may `abandon` it.

    *give_back* is called, in the worker thread, with what an abandoned call
    returned (so that entries it took go back).
    """

    __slots__ = ("_error", "_function", "_give_back", "_lock", "_notify", "_state", "_value")

    def __init__(
        self, function: Callable[[], T], give_back: Callable[[Any], object] | None = None
    ) -> None:
        self._function = function
        self._give_back = give_back
        self._lock = threading.Lock()
        self._state = _State.RUNNING
        self._value: Any = None
        self._error: BaseException | None = None
        self._notify: Callable[[], object] | None = None

    def start(self, notify: Callable[[], object]) -> None:
        """Start it; *notify* is called from the worker thread once it has finished."""
        self._notify = notify
        trio.lowlevel.start_thread_soon(self._run, _ignore)

    @property
    def finished(self) -> bool:
        return self._state is _State.FINISHED

    def abandon(self) -> bool:
        """Stop waiting for it: True if it had not finished (it gives back on its own)."""
        with self._lock:
            if self._state is _State.RUNNING:
                self._state = _State.ABANDONED
                return True
        return False

    def result(self) -> T:
        """What it returned, or raise what it raised (once `finished`)."""
        if self._error is not None:
            raise self._error
        value: T = self._value
        return value

    def give_back_later(self) -> None:
        """Its caller gave up after it finished: give back what it took, from a thread."""
        if self._error is None and self._give_back is not None:
            trio.lowlevel.start_thread_soon(self._give_back_now, _ignore)

    def _run(self) -> None:
        # In the worker thread.
        value: Any = None
        error: BaseException | None = None
        try:
            value = self._function()
        except BaseException as raised:  # handed to whoever waits, with the traceback
            error = raised
        with self._lock:
            abandoned = self._state is _State.ABANDONED
            if not abandoned:
                self._value, self._error = value, error
                self._state = _State.FINISHED
        if abandoned:
            self._value, self._error = value, error
            if error is None:
                self._give_back_now()
            return
        notify = self._notify
        if notify is not None:
            notify()

    def _give_back_now(self) -> None:
        if self._give_back is None:
            return
        try:
            self._give_back(self._value)
        except Exception:
            fallback_logger.exception("harn_inbox: could not give back what an abandoned call took")


def _ignore(result: object) -> None:
    pass


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _never() -> bool:
    return False


async def off_loop(
    function: Callable[[], T],
    give_back: Callable[[Any], object] | None = None,
    unwanted: Callable[[], bool] = _never,
) -> tuple[bool, T | None]:
    """Run *function* in a worker thread; ``(True, result)``, or ``(False, None)`` if *unwanted*.

    *unwanted* is asked every `PATIENCE` seconds while the call runs; when it
    says so, or the caller is cancelled, the call is abandoned (and gives back
    what it took). Under trio or asyncio.
    """
    call = OffLoopCall(function, give_back)
    library = sniffio.current_async_library()
    if library == "trio":
        return await _trio_wait(call, unwanted)
    if library == "asyncio":
        return await _asyncio_wait(call, unwanted)
    raise RuntimeError(f"harn_inbox runs under trio or asyncio, not {library}")


def wait_in_thread(
    call: OffLoopCall[T], unwanted: Callable[[], bool] = _never
) -> tuple[bool, T | None]:
    """`off_loop` for a blocked thread: start *call*, block until it ends or is unwanted."""
    done = threading.Event()
    call.start(done.set)
    try:
        while not done.wait(PATIENCE):
            if unwanted() and call.abandon():
                return False, None
    except BaseException:  # KeyboardInterrupt: nothing taken is lost
        if not call.abandon():
            call.give_back_later()
        raise
    return True, call.result()


async def _trio_wait(call: OffLoopCall[T], unwanted: Callable[[], bool]) -> tuple[bool, T | None]:
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def notify() -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:  # nobody waits any more
            pass

    call.start(notify)
    try:
        # On `done`, not `call.finished`: it is set from the loop, so this
        # awaits at least once (a trio call is a checkpoint, however fast).
        while not done.is_set():
            with trio.move_on_after(PATIENCE):
                await done.wait()
            if not call.finished and unwanted() and call.abandon():
                return False, None
    except BaseException:  # Cancelled: nothing taken is lost
        if not call.abandon():
            call.give_back_later()
        raise
    return True, call.result()


async def _asyncio_wait(
    call: OffLoopCall[T], unwanted: Callable[[], bool]
) -> tuple[bool, T | None]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def notify() -> None:
        try:
            loop.call_soon_threadsafe(_resolve, done)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    call.start(notify)
    try:
        while not done.done():
            # asyncio.wait, not wait_for: it neither wraps the future in a task
            # nor, on Python < 3.12, swallows a cancellation that meets the result.
            await asyncio.wait((done,), timeout=PATIENCE)
            if not call.finished and unwanted() and call.abandon():
                return False, None
    except BaseException:  # CancelledError: nothing taken is lost
        if not call.abandon():
            call.give_back_later()
        raise
    return True, call.result()
