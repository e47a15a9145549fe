"""The Redis store's own connections (`call_script`): the rules that make them as safe as
redis-py's pool. A connection is lent again only after a whole reply; one idle for long is
checked first; one that failed takes the idle ones with it; a forgotten script is loaded."""

from __future__ import annotations

import os
import select
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from _support import spin_until, store_of

from harn_inbox.stores import _connections
from harn_inbox.stores._connections import Connections, Script

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from _redis_server import RedisServer

    from harn_inbox import Inbox, InboxEntry


def contents(entries: list[InboxEntry]) -> list[str]:
    return [entry.content for entry in entries]


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def connections(client: Any) -> Iterator[Connections]:
    """Connections with the client's settings, closed at teardown: an idle connection left
    to the garbage collector (redis-py 8 connections are in reference cycles) may have its
    socket finalized before the connection's ``__del__`` closes it, a ResourceWarning."""
    connections = Connections(client)
    yield connections
    connections.close()


def echo(connections: Connections, client: Any) -> Script:
    return Script(connections, client.register_script("return ARGV[1]"))


def one_idle(connections: Connections, client: Any) -> tuple[Connections, Script, Any]:
    """*connections* with one idle connection, which a first call used; the echo script."""
    script = echo(connections, client)
    assert script([], ["warm"]) == b"warm"
    ((connection, _),) = connections._idle
    return connections, script, connection


def raising(error: BaseException) -> Callable[..., Any]:
    """A stand-in for a connection's method that raises *error*."""

    def raises(*args: Any, **kwargs: Any) -> Any:
        raise error

    return raises


def idle_sockets(connections: Connections) -> list[Any]:
    return [connection._sock for connection, _ in connections._idle]


def closed_by_the_server(redis_server: RedisServer, connections: Connections) -> None:
    """Kill every plain client of the server, and see the idle connections hear it."""
    sockets = idle_sockets(connections)
    assert sockets
    redis_server.command("CLIENT", "KILL", "TYPE", "normal")

    def all_readable() -> bool:
        return len(select.select(sockets, [], [], 0)[0]) == len(sockets)

    spin_until(all_readable, "the idle connections see their end")


def test_a_connection_is_lent_again_after_a_whole_reply(
    client: Any, connections: Connections
) -> None:
    script = echo(connections, client)
    assert script([], ["one"]) == b"one"
    ((connection, _),) = connections._idle
    assert script([], ["two"]) == b"two"
    assert [lent for lent, _ in connections._idle] == [connection]


def test_a_word_that_cannot_be_encoded_lends_no_connection(
    client: Any, connections: Connections
) -> None:
    connections, script, connection = one_idle(connections, client)
    with pytest.raises(UnicodeEncodeError):
        script([], ["\udc80"])  # (a lone surrogate: no UTF-8 for it)
    assert [idle for idle, _ in connections._idle] == [connection]
    assert script([], ["after"]) == b"after"


def test_a_refusal_is_read_whole_and_its_connection_lent_again(
    client: Any, connections: Connections
) -> None:
    import redis

    refuse = Script(connections, client.register_script("return redis.error_reply('NOPE no')"))
    with pytest.raises(redis.ResponseError, match="NOPE"):
        refuse([], [])
    assert len(connections._idle) == 1
    assert echo(connections, client)([], ["after"]) == b"after"


@pytest.mark.parametrize("ending", ["interrupt", "timeout", "garbled"])
def test_a_round_trip_ended_before_its_reply_never_lends_its_connection_again(
    client: Any, connections: Connections, ending: str
) -> None:
    import redis

    connections, script, connection = one_idle(connections, client)
    raised = {
        "interrupt": KeyboardInterrupt,
        "timeout": redis.TimeoutError,
        "garbled": redis.InvalidResponse,
    }[ending]
    # (The reply of "unread" stays on its socket.)
    connection.read_response = raising(raised("ended before the reply"))
    with pytest.raises(raised):
        script([], ["unread"])
    del connection.read_response
    assert connections._idle == []
    assert connection._sock is None  # closed
    assert script([], ["mine"]) == b"mine"  # not "unread": no reply is read twice


def test_an_idle_connection_closed_under_us_is_replaced_at_once(
    client: Any, connections: Connections
) -> None:
    import redis

    connections, script, connection = one_idle(connections, client)
    connection.read_response = raising(redis.ConnectionError("closed by the server"))
    assert script([], ["again"]) == b"again"  # sent once more, on a new connection
    assert connection._sock is None
    assert [idle for idle, _ in connections._idle] != [connection]
    assert len(connections._idle) == 1


def test_a_new_connection_that_fails_is_not_tried_again(
    client: Any, connections: Connections
) -> None:
    import redis

    made: list[Any] = []
    real_class = connections._connection_class

    def failing(**kwargs: Any) -> Any:
        connection = real_class(**kwargs)
        made.append(connection)
        connection.send_command = raising(redis.ConnectionError("connection refused"))
        return connection

    connections._connection_class = failing
    with pytest.raises(redis.ConnectionError, match="refused"):
        echo(connections, client)([], ["never"])
    assert len(made) == 1
    assert connections._idle == []


def test_a_connection_asked_to_reconnect_is_not_kept(client: Any, connections: Connections) -> None:
    if not hasattr(client.connection_pool.connection_class, "should_reconnect"):
        pytest.skip("this redis-py has no maintenance notifications (redis-py 6 and later)")
    connections, script, connection = one_idle(connections, client)
    connection.should_reconnect = lambda: True  # (as a maintenance notification says)
    assert script([], ["last"]) == b"last"
    assert connections._idle == []
    assert connection._sock is None


def test_a_script_the_server_forgot_is_loaded_again(
    connect: Callable[..., Inbox], redis_server: RedisServer
) -> None:
    inbox = connect(redis_server.namespace(), retries=0)
    inbox.push("s", "k", "one", "src")
    redis_server.command("SCRIPT", "FLUSH")
    assert inbox.push("s", "k", "two", "src").sequence == 2
    assert contents(inbox.drain("s")) == ["one", "two"]


def test_a_connection_idle_for_long_is_checked_before_it_is_lent(
    connect: Callable[..., Inbox], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_connections, "CHECK_IDLE_AFTER", 0.0)
    inbox = connect(redis_server.namespace(), retries=0)  # (no second try to hide a dead one)
    inbox.push("s", "k", "one", "src")
    connections = store_of(inbox)._connections
    ((connection, _),) = connections._idle
    closed_by_the_server(redis_server, connections)
    assert inbox.push("s", "k", "two", "src").sequence == 2
    # Reconnected before it was used, not dropped after a failed round trip (rule 3's).
    assert [idle for idle, _ in connections._idle] == [connection]
    assert contents(inbox.drain("s")) == ["one", "two"]


def test_connections_the_server_closed_are_replaced_at_once(
    connect: Callable[..., Inbox], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_connections, "CHECK_IDLE_AFTER", float("inf"))  # (never checked)
    inbox = connect(redis_server.namespace(), retries=0)  # (no second try of the store's)
    inbox.push("s", "k", "one", "src")
    connections = store_of(inbox)._connections
    lent = [connections.lend()[0] for _ in range(3)]  # three idle: all closed below
    for connection in lent:
        connection.connect()
        connections.give_back(connection)
    closed_by_the_server(redis_server, connections)
    assert inbox.push("s", "k", "two", "src").sequence == 2
    assert [connection._sock for connection in lent] == [None, None, None]
    assert contents(inbox.drain("s")) == ["one", "two"]


def test_connections_close_with_their_store(client: Any, connections: Connections) -> None:
    script = echo(connections, client)
    script([], ["one"])
    out, _ = connections.lend()  # (a round trip still running at the close)
    script([], ["two"])
    ((idle, _),) = connections._idle
    connections.close()
    assert connections._idle == []
    assert idle._sock is None
    connections.give_back(out)
    assert connections._idle == []
    assert out._sock is None


def test_an_idle_connection_whose_check_fails_is_connected_again_at_its_command(
    client: Any, connections: Connections, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    monkeypatch.setattr(_connections, "CHECK_IDLE_AFTER", 0.0)
    connections, script, connection = one_idle(connections, client)
    connection.can_read = raising(redis.TimeoutError("the check timed out"))
    assert script([], ["checked"]) == b"checked"
    assert [idle for idle, _ in connections._idle] == [connection]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX only")
def test_a_child_made_by_fork_never_uses_its_parents_connections(
    client: Any, connections: Connections
) -> None:
    script = echo(connections, client)
    script([], ["parent"])
    ((parents, _),) = connections._idle
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # (other tests' threads)
        child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            lent, was_idle = connections.lend()
            verdict = b"ok" if lent is not parents and not was_idle else b"shared"
            verdict += b" " + script([], ["child"])
        except BaseException as error:
            verdict = repr(error).encode()
        os.write(write, verdict)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as reading:
        verdict = reading.read()
    os.waitpid(child, 0)
    assert verdict == b"ok child"
    assert script([], ["still the parent's"]) == b"still the parent's"
    assert [idle for idle, _ in connections._idle] == [parents]
