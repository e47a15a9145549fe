"""The Redis store's own connections (`call_script`): the rules that make them as safe as
redis-py's pool. A connection is lent again only after a whole reply; one idle for long is
checked first; one that failed takes the idle ones with it; a forgotten script is loaded."""

from __future__ import annotations

import select
from typing import TYPE_CHECKING, Any

import pytest
from _support import spin_until, store_of

from harn_inbox import InboxEntry, StoreError
from harn_inbox.stores import _connections
from harn_inbox.stores._connections import Connections, Script

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from _redis_server import RedisServer

    from harn_inbox import Inbox


def contents(entries: list[InboxEntry]) -> list[str]:
    return [entry.content for entry in entries]


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def echo(connections: Connections, client: Any) -> Script:
    return Script(connections, client.register_script("return ARGV[1]"))


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


def test_a_connection_is_lent_again_after_a_whole_reply(client: Any) -> None:
    connections = Connections(client)
    script = echo(connections, client)
    assert script([], ["one"]) == b"one"
    ((connection, _),) = connections._idle
    assert script([], ["two"]) == b"two"
    assert [lent for lent, _ in connections._idle] == [connection]


def test_a_refusal_is_read_whole_and_its_connection_lent_again(client: Any) -> None:
    import redis

    connections = Connections(client)
    refuse = Script(connections, client.register_script("return redis.error_reply('NOPE no')"))
    with pytest.raises(redis.ResponseError, match="NOPE"):
        refuse([], [])
    assert len(connections._idle) == 1
    assert echo(connections, client)([], ["after"]) == b"after"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, ConnectionError])
def test_a_round_trip_ended_before_its_reply_never_lends_its_connection_again(
    client: Any, interrupt: type[BaseException]
) -> None:
    connections = Connections(client)
    script = echo(connections, client)
    script([], ["warm"])
    ((connection, _),) = connections._idle

    def ended(*args: Any, **kwargs: Any) -> Any:
        raise interrupt("ended before the reply")

    connection.read_response = ended  # (the reply of "unread" stays on its socket)
    with pytest.raises(interrupt):
        script([], ["unread"])
    del connection.read_response
    assert connections._idle == []
    assert connection._sock is None  # closed
    assert script([], ["mine"]) == b"mine"  # not "unread": no reply is read twice


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
    closed_by_the_server(redis_server, store_of(inbox)._connections)
    assert inbox.push("s", "k", "two", "src").sequence == 2
    assert contents(inbox.drain("s")) == ["one", "two"]


def test_a_connection_that_failed_closes_the_idle_ones(
    connect: Callable[..., Inbox], redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_connections, "CHECK_IDLE_AFTER", float("inf"))  # (never checked)
    inbox = connect(redis_server.namespace(), retries=0)
    inbox.push("s", "k", "one", "src")
    connections = store_of(inbox)._connections
    lent = [connections.lend(), connections.lend()]  # two idle: one more than the push takes
    for connection in lent:
        connection.connect()
        connections.give_back(connection)
    closed_by_the_server(redis_server, connections)
    with pytest.raises(StoreError, match="did not answer"):
        inbox.push("s", "k", "lost", "src")  # on a dead connection, never sent again
    assert connections._idle == []
    assert inbox.push("s", "k", "two", "src").sequence == 2
    assert contents(inbox.drain("s")) == ["one", "two"]


def test_connections_close_with_their_store(client: Any) -> None:
    connections = Connections(client)
    script = echo(connections, client)
    script([], ["one"])
    out = connections.lend()  # (a round trip still running at the close)
    script([], ["two"])
    ((idle, _),) = connections._idle
    connections.close()
    assert connections._idle == []
    assert idle._sock is None
    connections.give_back(out)
    assert connections._idle == []
    assert out._sock is None
