"""`off_loop`: run a call that talks to a store's server in a worker thread, not on the event loop.

Used for the inbox's awaitable forms (``apush``, ``adrain``...) and for the
looks of async waits when the store's state lives in another process
(`RedisStore`): an event loop never blocks on the network.

Cancellation never loses what the call took. The call itself cannot be
stopped once it runs (it may be on the wire), so:

- under trio, the task waits for it (``trio.to_thread.run_sync`` does not
  abandon the thread) and gets its result; the cancellation is raised at the
  task's next checkpoint, as for any call that completed;
- under asyncio, the task waits for it too, then *give_back* returns what it
  took (entries go back to the head of their session), and the
  ``CancelledError`` is raised: a cancelled call has taken nothing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, TypeVar

import sniffio
import trio

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


async def off_loop(function: Callable[[], T], give_back: Callable[[T], object] | None = None) -> T:
    """Run *function* in a worker thread of the running trio or asyncio loop; return its result."""
    library = sniffio.current_async_library()
    if library == "trio":
        return await trio.to_thread.run_sync(function)
    if library == "asyncio":
        return await _asyncio_off_loop(function, give_back)
    raise RuntimeError(f"harn_inbox runs under trio or asyncio, not {library}")


async def _asyncio_off_loop(
    function: Callable[[], T], give_back: Callable[[T], object] | None
) -> T:
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(None, function)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        # The call runs on in its thread: wait for it (whatever else is
        # cancelled meanwhile), give back what it took, then be cancelled.
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                continue
            except Exception:
                break
        if give_back is not None and not future.cancelled() and future.exception() is None:
            await asyncio.shield(loop.run_in_executor(None, give_back, future.result()))
        raise
