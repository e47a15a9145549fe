"""`LoopListener`: the Redis store's channels read on the event loop whose waits hear them.

The store's subscriber thread hears every message first and then wakes the
waits it concerns; a wait parked on an event loop is woken by a thread-safe
call into that loop, and the hop from one thread to another costs about as
much as the round trip itself (benchmarks/README.md, scenario 12). So the
first event loop (trio or asyncio) whose wait looks at a fresh copy takes the
store's *listener role* from the thread, and reads the channels on a socket
of its own, on the loop itself: a message is replayed there, and the waits
of that loop are woken with no hop. The store's module docstring
("Listeners") argues why a change of listener loses no wake-up; this module
holds the I/O, in three rules:

1. Nothing here blocks the loop. The connection is made in a worker thread;
   the socket is then read without blocking, a reply that came in pieces
   kept (`ReplyReader`) until it is whole; what of a command the socket
   does not take at once is sent on, in order, as soon as the loop sees the
   socket writable again (`_await_writable`: a writer callback, a second
   system task). (The subscriptions of a new connection, which may name
   many channels, are sent whole by the worker thread that connects it.)
2. Everything it decides, it decides through its store (`ListenerHost`),
   which first checks, under its own lock, that this listener still holds
   the role: one that lost it acts on nothing, and ends.
3. It ends when its loop ends (trio cancels system tasks, ``asyncio.run``
   cancels every task), when its store takes the role back, or on an error
   of its own (logged); the role goes back to the store's thread then. A
   loop that is blocked cannot answer the store's requests to tend
   (`poke`): the thread takes the role back (`RedisStore._watch`).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from typing import TYPE_CHECKING, Any, Protocol

import sniffio
import trio

from .._lot import fallback_logger
from .._offloop import off_loop
from .._waiters import in_loop_callback
from ._resp import ReplyReader, encode_command

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._resp import Item

#: The most a read takes from the socket at once.
READ_SIZE = 65536


class ListenerHost(Protocol):
    """What a listener asks of its store. Those that return None do so once
    *listener* no longer holds the role. Sessions are named by their ids."""

    def _connect_listener(self, listener: object, again: bool) -> Any:
        """A new connection to the server, its subscriptions sent; None once the role is
        lost. Blocks: in a worker thread.

        Raises:
            ConnectionError: It could not connect (the listener tries again).
        """

    def _listener_hears(self, listener: object, reply: list[Item]) -> list[str] | None:
        """One reply heard: the channels to unsubscribe from."""

    def _listener_tends(
        self, listener: object, connected: bool
    ) -> tuple[list[str], list[str]] | None:
        """Housekeeping: the channels to subscribe to and to unsubscribe from."""

    def _listener_disconnected(self, listener: object) -> None:
        """The listener's connection dropped (it connects again)."""

    def _listener_ends(self, listener: object, failed: bool) -> None:
        """The listener stopped (*failed*: on an error of its own): its role goes back to
        the store's thread."""

    def _wake_channel(self, session_id: str) -> str:
        """The channel of *session_id*."""

    def _holds(self, listener: object) -> bool:
        """Whether *listener* holds the role (a hint: the methods above check it under a lock)."""


class LoopListener:
    """The listener role held by one event loop: reads its store's channels there."""

    __slots__ = (
        "_broken",
        "_connection",
        "_host",
        "_reader",
        "_socket",
        "_tend_queued",
        "_unsent",
        "_writing",
        "poked",
    )

    def __init__(self, host: ListenerHost) -> None:
        self._host = host
        self._connection: Any = None
        self._socket: socket.socket | None = None
        self._reader = ReplyReader()
        #: What `_send` could not hand to the socket yet (sent on, in order, by `_flush`).
        self._unsent = bytearray()
        #: The socket it waits on to take more of `_unsent` (`_await_writable`), if any.
        self._writing: socket.socket | None = None
        #: Set to stop reading the connection (broken, or the role lost).
        self._broken = False
        #: A `_tend` is queued on the loop and has not started yet.
        self._tend_queued = False
        #: When the store's thread last asked it to tend (monotonic), until it
        #: did: set by the thread, cleared on the loop (`RedisStore._watch`).
        self.poked: float | None = None

    @staticmethod
    def here(host: ListenerHost) -> LoopListener | None:
        """A listener for the event loop running in this thread, or None outside one."""
        try:
            library = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:  # (a plain thread)
            return None
        if library == "trio":
            return TrioListener(host)
        if library == "asyncio":
            return AsyncioListener(host)
        return None

    def start(self) -> None:
        """Start listening, in a task of the running loop (in the loop's thread)."""
        raise NotImplementedError

    def gone(self) -> bool:
        """Whether its loop no longer runs (stopped, or closed); any thread."""
        return False

    def holds(self, connection: Any) -> None:
        """Its new *connection* is subscribed (in the worker thread that connected it,
        under the store's role lock): known before its loop sees it, so that it is
        closed if the loop closes first (`abandoned`)."""
        self._connection = connection

    def abandoned(self) -> None:
        """The role was taken from it: end when the loop runs again; any thread."""
        self.poke()

    def poke(self) -> bool:
        """Have the loop tend soon (`ListenerHost._listener_tends`); any thread. False if
        the loop is gone."""
        if self._tend_queued:
            return True
        self._tend_queued = True
        try:
            self._call_soon(self._tend)
        except Exception:  # (trio.RunFinishedError; asyncio's RuntimeError: the loop closed)
            self._tend_queued = False
            return False
        return True

    # -- In the loop's thread -----------------------------------------------------------------

    def _call_soon(self, function: Callable[[], object]) -> None:
        raise NotImplementedError

    async def _read_until_broken(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Wake the task from its read, for it to look at `_broken`."""
        raise NotImplementedError

    async def _run(self) -> None:
        again = failed = False
        try:
            while await self._listen(again):
                again = True
        except Exception:  # (rule 3: not the loop's to handle)
            failed = True
            fallback_logger.exception(
                "harn_inbox: the Redis listener on an event loop stopped; "
                "the store's thread listens from now on"
            )
        finally:
            self._close()
            self._host._listener_ends(self, failed)

    async def _listen(self, again: bool) -> bool:
        """Listen on one connection until it breaks (True: start again) or the role is lost."""
        host = self._host
        self._broken = False
        try:
            answered, connection = await off_loop(
                functools.partial(host._connect_listener, self, again),
                give_back=_disconnect,
                unwanted=lambda: not host._holds(self),
            )
        except ConnectionError as error:
            fallback_logger.debug("harn_inbox: the Redis listener reconnects (%r)", error)
            return host._holds(self)
        if not answered or connection is None:
            return False
        self._connection = connection
        try:
            sock = getattr(connection, "_sock", None)
            if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
                raise TypeError(f"not a plain socket: {sock!r}")  # pragma: no cover
            sock.setblocking(False)
            self._socket = sock
            self._reader = ReplyReader()
            self._unsent = bytearray()
            self._tend()  # (what was asked for since the subscriptions went out)
            await self._read_until_broken(sock)
        except (OSError, ConnectionError) as error:
            fallback_logger.debug("harn_inbox: the Redis listener reconnects (%r)", error)
        finally:
            self._close()
            host._listener_disconnected(self)
        return host._holds(self)

    def _readable(self) -> None:
        """Read what the socket holds, and hear each reply it completes."""
        sock, host = self._socket, self._host
        if sock is None or self._broken:
            return
        try:
            data = sock.recv(READ_SIZE)
            if not data:
                raise ConnectionError("the server closed the connection")
            for reply in self._reader.feed(data):
                unsubscribe = host._listener_hears(self, reply)
                if unsubscribe is None:
                    self._stop()
                    return
                if unsubscribe:
                    self._send("UNSUBSCRIBE", unsubscribe)
            self._flush()  # (the server reads what we sent: the socket may take more)
        except BlockingIOError:
            pass  # (woken for nothing)
        except Exception as error:
            if not isinstance(error, (OSError, ConnectionError)):
                fallback_logger.exception("harn_inbox: the Redis listener starts again")
            self._stop()

    def _tend(self) -> None:
        """The store's housekeeping, and the subscriptions asked for since."""
        self._tend_queued = False
        self.poked = None
        try:
            work = self._host._listener_tends(self, self._socket is not None and not self._broken)
            if work is None:
                self._stop()
                return
            subscribe, unsubscribe = work
            if subscribe:
                self._send("SUBSCRIBE", subscribe)
            if unsubscribe:
                self._send("UNSUBSCRIBE", unsubscribe)
            self._flush()
        except Exception as error:
            if not isinstance(error, (OSError, ConnectionError)):
                fallback_logger.exception("harn_inbox: the Redis listener starts again")
            self._stop()

    def _send(self, command: str, session_ids: list[str]) -> None:
        """Send *command* with the sessions' channels, after what is still unsent (rule 1)."""
        if self._socket is None or self._broken:
            return
        self._unsent += encode_command(command, *map(self._host._wake_channel, session_ids))
        self._flush()

    def _flush(self) -> None:
        """Hand the socket what it takes now of what is unsent; the rest goes out once
        the socket takes more (the server reads on, so it empties)."""
        sock = self._socket
        if not self._unsent or sock is None or self._broken:
            return
        try:
            sent = sock.send(self._unsent)
        except BlockingIOError:
            sent = 0
        del self._unsent[:sent]
        if self._unsent and self._writing is not sock:
            self._writing = sock
            self._await_writable(sock)

    def _await_writable(self, sock: socket.socket) -> None:
        """Call `_writable` each time *sock* takes more, until it says to stop (or *sock*
        is closed); then clear `_writing` if it is still *sock*. In the loop's thread."""
        raise NotImplementedError

    def _writable(self) -> bool:
        """Send on what is unsent; whether to wait for the socket again."""
        try:
            self._flush()
        except Exception as error:
            if not isinstance(error, (OSError, ConnectionError)):
                fallback_logger.exception("harn_inbox: the Redis listener starts again")
            self._stop()
        return bool(self._unsent) and self._socket is not None and not self._broken

    def _stop(self) -> None:
        if not self._broken:
            self._broken = True
            self._interrupt()

    def _close(self) -> None:
        self._socket = None
        connection, self._connection = self._connection, None
        if connection is not None:
            _disconnect(connection)


class TrioListener(LoopListener):
    """A `LoopListener` in a trio system task."""

    __slots__ = ("_scope", "_token")

    def __init__(self, host: ListenerHost) -> None:
        super().__init__(host)
        self._token = trio.lowlevel.current_trio_token()
        self._scope: trio.CancelScope | None = None

    def start(self) -> None:
        trio.lowlevel.spawn_system_task(self._run, name="harn_inbox Redis listener")

    def _call_soon(self, function: Callable[[], object]) -> None:
        self._token.run_sync_soon(function)

    async def _read_until_broken(self, sock: socket.socket) -> None:
        with trio.CancelScope() as self._scope:
            while not self._broken:
                await trio.lowlevel.wait_readable(sock)
                self._readable()
        self._scope = None

    def _interrupt(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    def _await_writable(self, sock: socket.socket) -> None:
        trio.lowlevel.spawn_system_task(
            self._write_on, sock, name="harn_inbox Redis listener, writing"
        )

    async def _write_on(self, sock: socket.socket) -> None:
        # (A system task: it must raise nothing but trio's own Cancelled, at the run's end.)
        try:
            # (Spawned, it may first run after its socket was closed: then it waits not.)
            while self._socket is sock and not self._broken:
                await trio.lowlevel.wait_writable(sock)
                if self._socket is not sock or not self._writable():
                    return
        except trio.ClosedResourceError:
            pass  # (`_close` notified it: the connection is over)
        except Exception:
            if self._socket is sock:  # (else a connection already over: nothing to stop)
                fallback_logger.exception("harn_inbox: the Redis listener starts again")
                self._stop()
        finally:
            if self._writing is sock:
                self._writing = None

    def _close(self) -> None:
        if self._socket is not None:
            trio.lowlevel.notify_closing(self._socket)
        super()._close()


class AsyncioListener(LoopListener):
    """A `LoopListener` in an asyncio task; its socket read by the loop's reader callback."""

    __slots__ = ("_done", "_loop", "_task")

    def __init__(self, host: ListenerHost) -> None:
        super().__init__(host)
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._done: asyncio.Future[None] | None = None

    def start(self) -> None:
        self._task = self._loop.create_task(self._run(), name="harn_inbox Redis listener")

    def _call_soon(self, function: Callable[[], object]) -> None:
        self._loop.call_soon_threadsafe(function)

    def gone(self) -> bool:
        # (Read from another thread: a loop that starts or stops meanwhile is seen at the
        # thread's next look.)
        return not self._loop.is_running()

    def abandoned(self) -> None:
        if self._loop.is_closed():
            # Nothing will run on it again: its connection is closed from here.
            connection, self._connection = self._connection, None
            if connection is not None:
                _disconnect(connection)
            return
        self.poke()

    def _readable(self) -> None:
        # The loop runs this callback between two of its I/O waits: the waits it
        # wakes are woken directly, as from a task (harn_inbox._waiters).
        in_loop_callback.loop = self._loop
        try:
            super()._readable()
        finally:
            in_loop_callback.loop = None

    async def _read_until_broken(self, sock: socket.socket) -> None:
        self._done = self._loop.create_future()
        self._loop.add_reader(sock, self._readable)
        try:
            if not self._broken:
                await self._done
        finally:
            self._loop.remove_reader(sock)
            if self._writing is sock:
                self._loop.remove_writer(sock)
                self._writing = None
            self._done = None

    def _await_writable(self, sock: socket.socket) -> None:
        self._loop.add_writer(sock, self._writer_callback, sock)

    def _writer_callback(self, sock: socket.socket) -> None:
        if self._socket is not sock or not self._writable():
            self._loop.remove_writer(sock)
            if self._writing is sock:
                self._writing = None

    def _interrupt(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)


def _disconnect(connection: Any) -> None:
    try:
        connection.disconnect()
    except Exception:  # pragma: no cover - closing a socket that failed
        pass
