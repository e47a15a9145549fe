"""The Redis store's own connections, and `call_script`, which runs a script on one.

`call_script` is a speed trick (benchmarks/README.md, "The price of every
trick"). A script registered with redis-py and called through its client
takes redis-py's whole command path: the connection pool lends a connection
and polls it for unread data (a system call), retry and observability
wrappers run, the pool takes the connection back. On a loopback server that
path costs a push about a quarter of its round trip. `call_script` sends the
command on one of the store's idle connections and reads the reply, and only
that; the command is packed by `encode_command` (``_resp.py``), whose one
loop over its words costs a fraction of redis-py's packer and encoder (the
store's words are text, as UTF-8, and integers). The plain way,
`script(keys=..., args=...)`, is what scenario 12 runs it against.

What keeps it as safe as the pool:

1. A connection goes back to the idle list only after a whole reply was
   read: a result, or the server's refusal (an error reply). Anything else
   raised (a failed socket, a timeout, a reply it cannot read, an interrupt)
   closes it and drops it, so a command still in flight is never read by
   the next round trip.
2. A connection that sat idle longer than `CHECK_IDLE_AFTER` is checked as
   redis-py's pool checks every one it lends: one the server closed, or
   holding data nobody asked for, is reconnected. Back-to-back calls skip
   the poll: a connection that just returned a whole reply holds nothing.
3. A connection that failed closes and drops the idle ones too: they talk
   to the same server, which may have restarted. And a round trip that
   failed with `redis.ConnectionError` on an idle connection (closed by the
   server while it idled less than rule 2's delay) is sent once more at
   once, on a new connection: this stands for the reconnection the pool
   makes before sending, and is not one of the store's ``retries``.
   Sending again is safe for the store's scripts: an append carries its
   operation's id, the rest only read or act once (the store's module
   docstring, rule 4).
4. A connection is used by one thread at a time: the idle list changes
   under a lock, and `close` empties it under the same lock, so a
   connection returned meanwhile is closed, never kept.
5. A connection whose server asked it to reconnect (redis-py's maintenance
   notifications) is closed when it comes back, as the pool does.

The connections are made with the client's settings (its class and
arguments: URL, credentials, database, TLS, timeouts), apart from its pool
and that pool's count of connections. A child process made by ``fork``
starts with no idle connection (`_forget_in_child`): it never shares a
socket, and a reply, with its parent.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from typing import Any, final

from ._resp import encode_command

#: Seconds a connection may sit idle before its next use polls it first (rule 2).
CHECK_IDLE_AFTER = 1.0


@final
class Connections:
    """Connections with a redis-py client's settings, each lent to one round trip at a time."""

    def __init__(self, client: Any) -> None:
        import redis

        #: What the server's refusals raise, and which of them says it lacks a script.
        self.refusal: type[Exception] = redis.ResponseError
        self.no_script: type[Exception] = redis.exceptions.NoScriptError
        #: What a connection the server closed raises (rule 3).
        self.closed_under_us: type[Exception] = redis.ConnectionError
        self._redis_error: type[Exception] = redis.RedisError
        pool = client.connection_pool
        self._connection_class: Any = pool.connection_class
        self._connection_kwargs: dict[str, Any] = pool.connection_kwargs
        #: (redis-py 6 and later: maintenance notifications, rule 5.)
        self._may_ask_reconnect = hasattr(self._connection_class, "should_reconnect")
        #: (connection, when it came back), the last returned at the end.
        self._idle: list[tuple[Any, float]] = []
        #: Under it: the idle list, and whether closed (rule 4).
        self._lock = threading.Lock()
        self._closed = False
        _every.add(self)

    def lend(self) -> tuple[Any, bool]:
        """An idle connection (checked if it idled long: rule 2), or a new one; and whether
        it was idle."""
        with self._lock:
            if not self._idle:
                return self.new(), False
            connection, returned = self._idle.pop()
        if time.monotonic() - returned > CHECK_IDLE_AFTER:
            try:
                stale = connection.can_read()
            except (self._redis_error, OSError):
                stale = True  # (closed, or it failed to connect again: see at its command)
            if stale:
                connection.disconnect()  # (it connects again at its next command)
        return connection, True

    def new(self) -> Any:
        """A new connection: it connects at its first command."""
        return self._connection_class(**self._connection_kwargs)

    def give_back(self, connection: Any) -> None:
        """Take back a connection whose last reply was read whole (rules 1, 4 and 5)."""
        if not (self._may_ask_reconnect and connection.should_reconnect()):
            with self._lock:
                if not self._closed:
                    self._idle.append((connection, time.monotonic()))
                    return
        connection.disconnect()

    def failed(self, connection: Any) -> None:
        """Close and drop a connection whose round trip did not end in a whole reply, and
        the idle ones (rules 1 and 3)."""
        connection.disconnect()
        self._drop_idle()

    def close(self) -> None:
        """Close the idle connections; those lent out are closed as they come back."""
        with self._lock:
            self._closed = True
        self._drop_idle()

    def _drop_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection, _ in idle:
            connection.disconnect()


#: Every `Connections` of this process, for `_forget_in_child`.
_every: weakref.WeakSet[Connections] = weakref.WeakSet()


def _forget_in_child() -> None:
    """In a child made by ``fork``: no idle connection of the parent's is lent, and no
    lock held in the parent at the fork stays held. (Dropped, not disconnected: the
    sockets are the parent's too.)"""
    for connections in list(_every):
        connections._idle = []
        connections._lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # (not on Windows)
    os.register_at_fork(after_in_child=_forget_in_child)


@final
class Script:
    """A Lua script registered with redis-py, called through `call_script`."""

    __slots__ = ("_connections", "registered")

    def __init__(self, connections: Connections, registered: Any) -> None:
        self._connections = connections
        #: redis-py's `Script`: its text and SHA1, and its plain call.
        self.registered: Any = registered

    def __call__(self, keys: list[Any], args: list[Any], pipeline: Any = None) -> Any:
        """One round trip on a connection of the store's (`call_script`); queued in
        *pipeline* instead (a redis-py pipeline of the client's), if given."""
        if pipeline is not None:
            return self.registered(keys=keys, args=args, client=pipeline)
        return call_script(self._connections, self.registered, keys, args)


def call_script(connections: Connections, script: Any, keys: list[Any], args: list[Any]) -> Any:
    """Run *script* (redis-py's `Script`) with *keys* and *args*: one round trip on a
    connection of *connections*, loading the script first if the server lacks it.

    Raises what redis-py raises: `redis.ResponseError` for the server's
    refusal (after a `redis.NoScriptError` it loads the script and sends
    the command again, once), `redis.ConnectionError` and
    `redis.TimeoutError`.
    """
    # Packed before a connection is lent: a word it cannot encode lends none.
    command = [encode_command("EVALSHA", script.sha, len(keys), *keys, *args)]
    connection, was_idle = connections.lend()
    try:
        return _round_trip(connections, connection, script, command)
    except connections.closed_under_us:
        if not was_idle:
            raise
    # Rule 3: closed under us while it idled (the idle ones are dropped with it).
    return _round_trip(connections, connections.new(), script, command)


def _round_trip(
    connections: Connections, connection: Any, script: Any, command: list[bytes]
) -> Any:
    try:
        connection.send_packed_command(command)
        try:
            reply = connection.read_response()
        except connections.no_script:
            # (A restarted server, or SCRIPT FLUSH.) The command was refused
            # whole: load the script, and send it again.
            connection.send_command("SCRIPT", "LOAD", script.script)
            connection.read_response()
            connection.send_packed_command(command)
            reply = connection.read_response()
    except connections.refusal:
        connections.give_back(connection)  # (the refusal was read whole)
        raise
    except BaseException:
        connections.failed(connection)
        raise
    connections.give_back(connection)
    return reply
