"""The Redis store's own connections, and `call_script`, which runs a script on one.

`call_script` is a speed trick (benchmarks/README.md, "The price of every
trick"). A script registered with redis-py and called through its client
takes redis-py's whole command path: the connection pool lends a connection
and polls it for unread data (a system call), retry and observability
wrappers run, the pool takes the connection back. On a loopback server that
path costs a push about a quarter of its round trip. `call_script` sends the
command on one of the store's idle connections and reads the reply, and only
that. The plain way, `script(keys=..., args=...)`, is what scenario 12 runs
it against.

What keeps it as safe as the pool:

1. A connection goes back to the idle list only after a whole reply was
   read: a result, or the server's refusal (an error reply). Anything else
   raised (a failed socket, a timeout, a reply it cannot read, an interrupt)
   closes it, so a connection with a command in flight is never lent again.
2. A connection that sat idle longer than `CHECK_IDLE_AFTER` is checked as
   redis-py's pool checks every one it lends: one the server closed, or
   holding data nobody asked for, is reconnected. Back-to-back calls skip
   the poll: a connection that just returned a whole reply holds nothing.
3. A connection that failed closes the idle ones too: they talk to the same
   server, which may have restarted, so a retry makes a fresh connection
   instead of finding the next dead one.
4. A connection is used by one thread at a time: lending and returning are
   a list's ``pop`` and ``append``, each atomic.

Like the store's threads, its connections do not carry across a ``fork``.
"""

from __future__ import annotations

import time
from typing import Any, final

#: Seconds a connection may sit idle before its next use polls it first (rule 2).
CHECK_IDLE_AFTER = 1.0


@final
class Connections:
    """Connections of a redis-py client's settings, each lent to one round trip at a time."""

    def __init__(self, client: Any) -> None:
        import redis

        #: What the server's refusals raise, and which of them says it lacks a script.
        self.refusal: type[Exception] = redis.ResponseError
        self.no_script: type[Exception] = redis.exceptions.NoScriptError
        self._connection_failed: tuple[type[Exception], ...] = (redis.ConnectionError, OSError)
        self._pool: Any = client.connection_pool
        #: (connection, when it came back), the last returned at the end.
        self._idle: list[tuple[Any, float]] = []
        self._closed = False

    def lend(self) -> Any:
        """An idle connection (checked if it idled long: rule 2), or a new one."""
        try:
            connection, returned = self._idle.pop()
        except IndexError:
            return self._pool.make_connection()  # (it connects at its first command)
        if time.monotonic() - returned > CHECK_IDLE_AFTER:
            try:
                stale = connection.can_read()
            except self._connection_failed:
                stale = True  # (it disconnected itself)
            if stale:
                connection.disconnect()  # (it connects again at its next command)
        return connection

    def give_back(self, connection: Any) -> None:
        """Take back a connection whose last reply was read whole (rule 1)."""
        if self._closed:
            connection.disconnect()
        else:
            self._idle.append((connection, time.monotonic()))

    def failed(self, connection: Any) -> None:
        """Close a connection whose round trip did not end in a whole reply, and the idle
        ones with it (rules 1 and 3)."""
        connection.disconnect()
        self._disconnect_idle()

    def close(self) -> None:
        """Close the idle connections; those lent out are closed as they come back."""
        self._closed = True
        self._disconnect_idle()

    def _disconnect_idle(self) -> None:
        while True:
            try:
                connection, _ = self._idle.pop()
            except IndexError:
                return
            connection.disconnect()


@final
class Script:
    """A Lua script registered with redis-py, called through `call_script`."""

    __slots__ = ("_connections", "registered")

    def __init__(self, connections: Connections, registered: Any) -> None:
        self._connections = connections
        #: redis-py's `Script`: its text and SHA1, and its plain call.
        self.registered = registered

    def __call__(self, keys: list[Any], args: list[Any]) -> Any:
        return call_script(self._connections, self.registered, keys, args)


def call_script(connections: Connections, script: Any, keys: list[Any], args: list[Any]) -> Any:
    """Run *script* (redis-py's `Script`) with *keys* and *args*: one round trip on a
    connection of *connections*, loading the script first if the server lacks it.

    Raises what redis-py raises: `redis.ResponseError` for the server's
    refusal (`redis.NoScriptError` never: it loads the script and sends the
    command again), `redis.ConnectionError` and `redis.TimeoutError`.
    """
    connection = connections.lend()
    try:
        connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            reply = connection.read_response()
        except connections.no_script:
            # (A restarted server, or SCRIPT FLUSH.) The command was refused
            # whole: load the script, and send it again.
            connection.send_command("SCRIPT", "LOAD", script.script)
            connection.read_response()
            connection.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            reply = connection.read_response()
    except connections.refusal:
        connections.give_back(connection)  # (the refusal was read whole)
        raise
    except BaseException:
        connections.failed(connection)
        raise
    connections.give_back(connection)
    return reply
