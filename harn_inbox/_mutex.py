"""`Mutex`: the lock of a store or a parking lot, which refuses to be re-entered.

A finalizer (``__del__``, a coroutine closed by the garbage collector) or a
plain signal handler runs in the middle of whatever its thread was doing. If
that was one of our critical sections and the handler calls the inbox, a plain
lock would deadlock: the thread waits for itself. A re-entrant lock would let
the handler in, in the middle of a half-done change. `Mutex` does neither: its
lock is an ``RLock`` (so the owner's second acquire returns at once) and a flag
says whether a critical section is in progress, so the owner's second entry
raises `RuntimeError` instead, leaving the first one undisturbed.

Entering costs one ``RLock`` acquire and one flag store more than a bare lock.
"""

from __future__ import annotations

import threading
from time import sleep as _yield_thread
from typing import TYPE_CHECKING, Protocol, final

if TYPE_CHECKING:
    from types import TracebackType

#: How often a contended acquire yields the GIL to the holder before blocking.
_POLITE_LOOKS = 20


@final
class Mutex:
    """A lock for short critical sections that never block: ``with mutex: ...``.

    *name* says whose lock it is in the error a re-entry raises. A hot path
    may enter it inline: acquire ``lock`` (`acquire_contended` if taken), raise
    `reentered` if ``busy``, set ``busy``; on the way out clear it, then release.
    """

    __slots__ = ("busy", "lock", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.lock = threading.RLock()
        self.busy = False

    def __enter__(self) -> None:
        lock = self.lock
        if not lock.acquire(False):
            acquire_contended(lock)
        if self.busy:
            lock.release()
            raise reentered(self.name)
        self.busy = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        self.busy = False
        self.lock.release()

    #: Enter: ``mutex.enter()``, then ``try: ... finally: mutex.exit()`` (the same
    #: functions as ``with mutex:``, so that both cost one call each way).
    enter = __enter__
    exit = __exit__

    def held(self) -> bool:
        """Whether some thread is inside a critical section (for tests and reprs)."""
        return self.busy

    def refuse_reentry(self) -> None:
        """Raise `reentered` if the calling thread is inside a critical section of this mutex.

        For a call that will need the mutex only after changing something
        elsewhere: it must refuse before that change. Cheap unless some thread
        is inside (``busy``): then the re-entrant lock tells whether it is this one.
        """
        if self.busy:
            lock = self.lock
            if lock.acquire(False):
                # Got it while busy: either its holder just left (busy is now
                # False), or this thread holds it already (busy stays True).
                mine = self.busy
                lock.release()
                if mine:
                    raise reentered(self.name)


def reentered(name: str) -> RuntimeError:
    return RuntimeError(
        f"harn_inbox: the {name} was entered again by the thread already inside it "
        "(from a finalizer or a signal handler that interrupted an inbox call); "
        "call the inbox from a task, a thread, loop.add_signal_handler or "
        "trio.open_signal_receiver instead"
    )


class Lockable(Protocol):
    """A lock: ``threading.Lock`` or ``threading.RLock``."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...


def acquire_contended(lock: Lockable) -> None:
    """Take *lock* from another thread that holds it: yield a few times before blocking.

    Under the GIL a thread that blocks on a held lock sleeps in the OS, and
    must be woken and win the GIL back before it can run; with many producer
    threads every push turns into that handoff, a lock convoy. Nothing under
    our locks blocks, so the holder is always about to release: yielding the
    GIL lets it finish, and the lock is usually free at the next look. Past a
    few looks (the holder is descheduled, or runs a slow user clock) we block.
    """
    for _ in range(_POLITE_LOOKS):
        _yield_thread(0)
        if lock.acquire(False):
            return
    lock.acquire()
