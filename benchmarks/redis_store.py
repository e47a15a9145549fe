"""Scenario 12: the Redis store, `RedisStore`, against bare redis-py round trips, across processes.

Every candidate talks to one ``redis-server`` the scenario starts for itself
(``redis-server`` on ``PATH``), on a free port of 127.0.0.1 with no
persistence (``--save "" --appendonly no``), and stops at the end; no shared
server is touched. harn_inbox is ``Inbox(store=RedisStore(url,
namespace=...))``, every candidate's client a ``redis.Redis.from_url`` with
the store's own connection settings. Latencies across processes are read on
``time.monotonic_ns``, ``CLOCK_MONOTONIC``, one clock for every process of a
Linux machine.

**Push round trip.** One thread, one session: ``inbox.push`` against a bare
call of a script registered with redis-py's ``register_script`` that does an
``RPUSH`` and a ``PUBLISH`` (what the store's script does besides its own
checks and its answer), with a payload the size of the store's own operation.
For reference, ``PING``: the round trip alone, and the store's own append
script called bare, as the store calls it but with its operation pre-built
and its reply not replayed (on a session nobody reads, from the log's end):
what the contract's checks and answer cost on the server and on the wire,
apart from the Python around them. A round times *ops* calls in a
plain loop, then empties the session or the list (untimed); rounds rotate
across the candidates.

**Cross-process wake-up.** A pusher process fires on request; the waiter, in
the benchmark's process, parks under trio and under asyncio: ``await
inbox.wait(session)``, the wake-up itself (the target's; the entry is then
drained, untimed), ``await inbox.wait_for(session, predicate)`` (woken and
the entry taken: one more round trip), or ``await inbox.wait(session)`` then
``await inbox.adrain(session)``; and ``await inbox.wait(session)`` on a
second inbox whose store keeps the listening on its thread (no event loop
takes it over: the trick, ``LoopListener``, taken out); under asyncio only,
``await inbox.wait(session)`` with the listener's wakes sent through the
loop's thread-safe entry (its reader callback no longer says it runs on the
loop: ``in_loop_callback`` taken out); the bare round trips block on redis-py in a
plain thread: ``pubsub.get_message`` on a subscribed channel (the pusher
``PUBLISH``es) and ``BLPOP`` (the pusher ``RPUSH``es). Floors beside them, in the same rounds:
a bare redis-py message handed to the waiting loop by a thread-safe wake
(what any wake through a thread costs), and a loop that reads its messages
from a socket of its own (RESP by hand, nothing replayed) while the pusher
``PUBLISH``es, calls the bare script (``RPUSH`` + ``PUBLISH``, a payload the
size of the store's operation), or ``inbox.push``es: what the sender does
before its message leaves the server, with nothing of the inbox's on the
receiving side. Each round the
waiter's gate thread waits until the waiter is parked (for the inbox, its
public ``waiter_count``; for the bare calls, the round's start), lets a
settling time pass (for the inbox's second look, a round trip, to end), then
tells the pusher to fire; the pusher reads the clock and fires. The latency
runs from that reading to the waiter's first line after the wake: ``wait``
returned true, ``wait_for`` returned the entry, ``adrain`` returned it, the
bare call returned. A block is *rounds* rounds on a session of its own (one
``trio.run`` or ``asyncio.run`` for the inbox); its p50 and p99 are one
repeat. Each framework's case has bare blocks of its own, so that every
ratio pairs blocks of one rotation round.

**Throughput.** Eight producer processes, released at once by a barrier, each
push *count* entries into a session of their own; one consumer in the
benchmark's process receives them all: one event loop (trio or asyncio) with
a task per session doing ``await inbox.wait(session)`` then ``await
inbox.adrain(session)``. Against the same eight processes stamping entries by
hand: one script per entry that ``INCR``s the session's sequence and
``RPUSH``es the stamped entry (the sequence, a clock reading, the three
strings), and one consumer ``BLPOP``ing the eight lists in a plain thread.
The rate is all entries over the time from the barrier's release (the
earliest producer's reading after it) to the consumer having them all. Every
run uses new sessions; runs rotate across the candidates.

The cyclic collector is paused during every timed stretch, in the
benchmark's process (the children never run it).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from functools import partial
from pathlib import Path
from time import monotonic_ns, time_ns
from typing import TYPE_CHECKING, Any, Literal, Protocol

import redis
import sniffio
import trio
import trio.testing

from harn_inbox import Inbox
from harn_inbox.stores import RedisStore, _connections, _loop_listener, _redis

from .measure import (
    CONTENT,
    KIND,
    SESSION,
    SOURCE,
    collector_paused,
    interleave,
    percentile,
    rotations,
    time_pushes,
)
from .report import HARN, ScenarioResult, method_of, ratio_verdict

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from multiprocessing.connection import Connection
    from multiprocessing.context import SpawnContext, SpawnProcess

    from harn_inbox import InboxEntry

Framework = Literal["trio", "asyncio"]

METHOD = method_of(__doc__)

#: The store's own client settings (`RedisStore.__init__`): every bare candidate gets them too.
CLIENT_SETTINGS: dict[str, Any] = {
    "socket_timeout": 5.0,
    "socket_connect_timeout": 2.0,
    "health_check_interval": 0,
}

#: The issue's targets: the push's round trip over a bare script's (at most), and the
#: cross-process wake-up p50 over a bare redis-py round trip's (at most).
PUSH_LIMIT = 1.3
WAKE_LIMIT = 1.5

PRODUCERS = 8

BARE_SCRIPT_NAME = "bare script: RPUSH + PUBLISH"
PING = "PING (the round trip alone)"
STORE_SCRIPT_NAME = "the store's append script alone (its reply not replayed)"
#: The store with its speed trick taken out: its scripts called through redis-py's client.
HARN_PLAIN_CALLS = "harn_inbox, its scripts through redis-py's command path (no call_script)"
BARE_SCRIPT_DIRECT = "bare script, called as the store calls its scripts (call_script)"
WAIT_FOR = "harn_inbox: wait_for (woken and taken)"
THREAD_LISTENS = "harn_inbox, its thread listening (no event loop takes the role)"
LOOP_HOP = "harn_inbox, its listener waking through call_soon_threadsafe"
#: The asyncio listener's reader callback, which marks itself as running on the loop.
READABLE_SAYS_SO = _loop_listener.AsyncioListener._readable
WAIT_DRAIN = "harn_inbox: wait, then adrain"
BARE_PUBSUB = "bare redis-py pub/sub"
BARE_BLPOP = "bare redis-py BLPOP"
BARE_PUBSUB_LOOP = "bare redis-py pub/sub, then a thread-safe wake of the loop"
#: The floors of a loop that reads its messages from a socket of its own: what the sender
#: does before its message leaves the server, with nothing of the inbox's on the receiving side.
OWN_SOCKET_PUBLISH = "bare PUBLISH, read by the loop from its own socket"
OWN_SOCKET_SCRIPT = "bare script (RPUSH + PUBLISH), read by the loop from its own socket"
OWN_SOCKET_PUSH = "harn_inbox push, its message read by the loop from its own socket"
OWN_SOCKET = {OWN_SOCKET_PUBLISH: "publish", OWN_SOCKET_SCRIPT: "script", OWN_SOCKET_PUSH: "push"}
BARE_QUEUE = "bare redis-py queue: INCR + RPUSH script, BLPOP"
#: The candidates that are a floor, not a peer (the chart draws them apart).
FLOORS = (
    BARE_SCRIPT_NAME,
    BARE_SCRIPT_DIRECT,
    PING,
    STORE_SCRIPT_NAME,
    BARE_PUBSUB,
    BARE_BLPOP,
    BARE_PUBSUB_LOOP,
    *OWN_SOCKET,
    BARE_QUEUE,
)

PUSH_CASE = "push round trip, one thread, one session"


def wake_case(framework: Framework, statistic: str = "p50") -> str:
    return f"{framework}, wake-up {statistic}"


def throughput_case(framework: Framework) -> str:
    return f"{framework}: {PRODUCERS} processes into {PRODUCERS} sessions"


#: The bare push: the two writes of the store's script that a bare queue with wake-ups needs.
BARE_SCRIPT = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"""

#: The hand-stamped entry: the session's next sequence and the entry, in one script.
STAMP_SCRIPT = """
local sequence = redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[1], sequence .. ' ' .. ARGV[2] .. ' ' .. ARGV[1])
return sequence
"""

#: What the bare candidates carry: the three strings.
ITEM_JSON = json.dumps([KIND, CONTENT, SOURCE])

#: How long the gate sleeps between two looks at whether the waiter has parked.
POLL_SECONDS = 20e-6
#: How long the gate lets pass once the waiter has parked, before the push: the inbox's
#: waiter is counted from its first park, then arms and looks once more (a round trip).
SETTLE_SECONDS = 1e-3
#: Seconds a wait or a BLPOP blocks before the harness looks for a failed child
#: (below the clients' socket timeout).
WAIT_TIMEOUT = 3.0
#: Seconds one throughput run may take at most (not a verdict: a hung run fails).
RUN_TIMEOUT = 300.0
#: Seconds a child process may take to start and answer.
CHILD_TIMEOUT = 60.0


def unavailable() -> str | None:
    """Why this scenario cannot run here, or ``None``."""
    if shutil.which("redis-server") is None:
        return (
            "scenario 12 (redis) needs redis-server on PATH: it starts a private server "
            "(install Redis 7, e.g. 'apt install redis-server'), or leave it out with --only"
        )
    return None


def _client(url: str) -> Any:
    return redis.Redis.from_url(url, **CLIENT_SETTINGS)


# -- The private server --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A ``redis-server`` of the benchmark's own: a free port on 127.0.0.1, nothing persisted."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(unavailable())
        self.port = _free_port()
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self.version = self._until_answering()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _until_answering(self) -> str:
        """Its version, once it answers (within 30 s: not a verdict, a server that never came)."""
        deadline = time.monotonic() + 30
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            client = _client(self.url)
            try:
                return str(client.info("server")["redis_version"])
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
            finally:
                client.close()
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- Push round trip -----------------------------------------------------------------------------


def _operation_size_payload() -> str:
    """A payload the size of the store's own push operation (its JSON text, as of schema 1)."""
    return json.dumps(
        {
            "o": "push",
            "t": time_ns() // 1_000_000,
            "kind": KIND,
            "content": CONTENT,
            "source": SOURCE,
            "max": None,
            "drop": False,
            "p": f"{os.getpid():x}.{os.urandom(6).hex()}",
            "n": 100_000,
        },
        separators=(",", ":"),
    )


call_script = _connections.call_script


def _plain_call_script(connections: Any, script: Any, keys: list[Any], args: list[Any]) -> Any:
    """`call_script`'s plain way: the registered script called through redis-py's client."""
    return script(keys=keys, args=args)


def _measure_push(result: ScenarioResult, url: str, namespace: str, rounds: int, ops: int) -> None:
    client = _client(url)
    script = client.register_script(BARE_SCRIPT)
    key, channel = f"{namespace}:bare:list", f"{namespace}:bare:wake"
    payload = _operation_size_payload()
    result.details["push_payload_bytes"] = len(payload)

    def bare_push(session_id: str, kind: str, content: str, source: str) -> object:
        return script(keys=[key], args=[payload, channel, session_id])

    # The same bare script on connections of the store's kind, called as it calls its own.
    connections = _connections.Connections(client)
    direct_script = _connections.Script(connections, script)

    def bare_push_direct(session_id: str, kind: str, content: str, source: str) -> object:
        return direct_script([key], [payload, channel, session_id])

    def ping(session_id: str, kind: str, content: str, source: str) -> object:
        return client.ping()

    # The push's own script, called as the store calls it, on a session of its own
    # that nobody replays: from the log's end, so that its reply is as a lone
    # pusher's (nothing of other processes to replay). (A private of the store's.)
    store_script = _connections.Script(connections, client.register_script(_redis._APPEND))
    raw = f"{namespace}-raw"
    appended = itertools.count()

    def store_script_push(session_id: str, kind: str, content: str, source: str) -> object:
        return store_script(
            [f"{raw}:log:{session_id}"],
            [payload, next(appended), raw, session_id, _redis.SCHEMA_VERSION],
        )

    def empty_raw() -> None:
        nonlocal appended
        client.delete(f"{raw}:log:{SESSION}")
        appended = itertools.count()

    with RedisStore(url, namespace=namespace) as store, Inbox(store=store) as inbox:

        def round_of(
            push: Callable[[str, str, str, str], object], empty: Callable[[], object]
        ) -> Callable[[], float]:
            def one_round() -> float:
                per_call = time_pushes(push, ops) / 1e3
                empty()
                return per_call

            return one_round

        def plain_calls_round() -> float:
            # The trick taken out for this round only (`call_script` is looked up at each call).
            _connections.call_script = _plain_call_script
            try:
                return round_of(inbox.push, lambda: inbox.drain(SESSION))()
            finally:
                _connections.call_script = call_script

        candidates = {
            HARN: round_of(inbox.push, lambda: inbox.drain(SESSION)),
            HARN_PLAIN_CALLS: plain_calls_round,
            BARE_SCRIPT_NAME: round_of(bare_push, lambda: client.delete(key)),
            BARE_SCRIPT_DIRECT: round_of(bare_push_direct, lambda: client.delete(key)),
            STORE_SCRIPT_NAME: round_of(store_script_push, empty_raw),
            PING: round_of(ping, lambda: None),
        }
        for one_round in candidates.values():
            one_round()  # warm: the scripts loaded, the connections open
        with collector_paused():
            samples = interleave(candidates, rounds)
    connections.close()
    client.close()
    for name, values in samples.items():
        result.add(PUSH_CASE, name, "µs", values)
    result.verdicts.append(
        ratio_verdict(
            12,
            f"push ≤ {PUSH_LIMIT:g}x a bare script call (RPUSH + PUBLISH) on the same client",
            result.find(PUSH_CASE, HARN),
            result.find(PUSH_CASE, BARE_SCRIPT_NAME),
            "<=",
            PUSH_LIMIT,
            headline=True,
        )
    )


# -- The pusher process --------------------------------------------------------------------------


def _pusher_main(
    url: str,
    namespace: str,
    commands: Connection,
    replies: Connection,
    fired_at: Any,
) -> None:
    """The other process of the wake-up: on each command, read the clock and fire."""
    client = _client(url)
    script = client.register_script(BARE_SCRIPT)
    payload = _operation_size_payload()
    try:
        with RedisStore(url, namespace=namespace) as store, Inbox(store=store) as inbox:
            push, publish, rpush = inbox.push, client.publish, client.rpush
            fires: dict[str, Callable[[str], object]] = {
                "push": lambda session_id: push(session_id, KIND, CONTENT, SOURCE),
                "publish": lambda channel: publish(channel, ITEM_JSON),
                "rpush": lambda key: rpush(key, ITEM_JSON),
                # The push's two writes, with a payload the size of its operation.
                "script": lambda channel: script(
                    keys=[f"{channel}:list"], args=[payload, channel, payload]
                ),
            }
            client.ping()
            gc.disable()
            replies.send_bytes(b"ready")
            while command := commands.recv_bytes():
                verb, _, target = command.decode().partition(" ")
                fire = fires[verb]
                try:
                    fired_at.value = monotonic_ns()
                    fire(target)
                except Exception as error:
                    replies.send_bytes(f"{type(error).__name__}: {error}".encode())
                    return
                replies.send_bytes(b"ok")
    finally:
        client.close()


def _expect(connection: Connection, what: str) -> bytes:
    """The child's next reply, within `CHILD_TIMEOUT`."""
    if not connection.poll(CHILD_TIMEOUT):
        raise RuntimeError(f"the {what} did not answer within {CHILD_TIMEOUT:g} s")
    try:
        return connection.recv_bytes()
    except EOFError:
        raise RuntimeError(f"the {what} exited") from None


class Pusher:
    """The pusher process, from the waiter's side: commands out, the stamp and replies in."""

    def __init__(self, context: SpawnContext, url: str, namespace: str) -> None:
        self.fired_at: Any = context.RawValue("q", 0)
        commands_in, self._commands = context.Pipe(duplex=False)
        self._replies, replies_out = context.Pipe(duplex=False)
        self.process: SpawnProcess = context.Process(
            target=_pusher_main,
            args=(url, namespace, commands_in, replies_out, self.fired_at),
            name="bench-redis-pusher",
            daemon=True,
        )
        self.process.start()
        commands_in.close()
        replies_out.close()
        if _expect(self._replies, "pusher process") != b"ready":
            raise RuntimeError("the pusher process did not start")

    def send(self, command: str) -> None:
        self._commands.send_bytes(command.encode())

    def fired(self) -> None:
        """Its reply to the last command: returns if it fired, raises otherwise."""
        reply = _expect(self._replies, "pusher process")
        if reply != b"ok":
            raise RuntimeError(f"the pusher process failed: {reply.decode()}")

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a pusher that died has closed its end
            self._commands.send_bytes(b"")
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


# -- Cross-process wake-up -----------------------------------------------------------------------


class Gate:
    """The waiter's gate thread: once the waiter has parked and settled, it tells the pusher."""

    def __init__(self, pusher: Pusher, parked: Callable[[], bool]) -> None:
        self._pusher = pusher
        self._parked = parked
        self._turn = threading.Semaphore(0)
        self._command: str | None = None
        self._thread = threading.Thread(target=self._run, name="bench-redis-gate", daemon=True)
        self._thread.start()

    def open(self, command: str) -> None:
        """The waiter is about to park: fire *command* once it has."""
        self._command = command
        self._turn.release()

    def close(self) -> None:
        self._command = None
        self._turn.release()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self._turn.acquire()
            command = self._command
            if command is None:
                return
            deadline = time.monotonic() + WAIT_TIMEOUT
            time.sleep(POLL_SECONDS)
            while not self._parked() and time.monotonic() < deadline:
                time.sleep(POLL_SECONDS)
            time.sleep(SETTLE_SECONDS)
            self._pusher.send(command)


class AsyncRig(Protocol):
    """A waiter that parks in an event loop: the inbox's."""

    command: str

    def parked(self) -> bool: ...

    async def receive(self) -> tuple[int, int]:
        """Park until the entry comes: the ``monotonic_ns`` reading then, and how many came."""

    def close(self) -> None: ...


class SyncRig(Protocol):
    """A waiter that blocks a plain thread: the bare redis-py calls."""

    command: str

    def parked(self) -> bool: ...

    def receive(self) -> tuple[int, int]: ...


def _is_ours(entry: InboxEntry) -> bool:
    return entry.kind == KIND


class WaitRig:
    """``await inbox.wait(session)``: woken; the entry is drained after the reading (untimed)."""

    def __init__(self, inbox: Inbox, session_id: str) -> None:
        self.inbox, self.session_id = inbox, session_id
        self.command = f"push {session_id}"

    def parked(self) -> bool:
        return self.inbox.waiter_count(self.session_id) > 0

    def close(self) -> None:
        pass

    async def receive(self) -> tuple[int, int]:
        if not await self.inbox.wait(self.session_id, timeout=WAIT_TIMEOUT):
            return monotonic_ns(), 0
        woke = monotonic_ns()
        return woke, len(await self.inbox.adrain(self.session_id))


class WaitForRig(WaitRig):
    """``await inbox.wait_for(session, predicate)``: the entry taken by the wait itself."""

    async def receive(self) -> tuple[int, int]:
        taken = await self.inbox.wait_for(self.session_id, _is_ours, timeout=WAIT_TIMEOUT)
        return monotonic_ns(), len(taken)


class WaitDrainRig(WaitRig):
    """``await inbox.wait(session)``, then ``await inbox.adrain(session)``."""

    async def receive(self) -> tuple[int, int]:
        if not await self.inbox.wait(self.session_id, timeout=WAIT_TIMEOUT):
            return monotonic_ns(), 0
        drained = await self.inbox.adrain(self.session_id)
        return monotonic_ns(), len(drained)


class PubSubRig:
    """redis-py's ``pubsub.get_message`` on a subscribed channel; the pusher ``PUBLISH``es."""

    def __init__(self, client: Any, channel: str) -> None:
        self.command = f"publish {channel}"
        self.pubsub = client.pubsub()
        self.pubsub.subscribe(channel)
        confirmed = self.pubsub.get_message(timeout=WAIT_TIMEOUT)
        if confirmed is None or confirmed["type"] != "subscribe":
            raise RuntimeError(f"no subscription to {channel!r}: {confirmed!r}")

    def parked(self) -> bool:
        return True  # the gate opens as the round starts; the settling time covers the rest

    def receive(self) -> tuple[int, int]:
        message = self.pubsub.get_message(timeout=WAIT_TIMEOUT)
        return monotonic_ns(), 0 if message is None or message["type"] != "message" else 1

    def close(self) -> None:
        self.pubsub.close()


class PubSubToLoopRig:
    """``pubsub.get_message`` in a plain thread that then wakes the waiting task's event loop.

    The floor of any wake that comes through a thread: one message, one
    thread-safe wake of the loop (``run_sync_soon``, ``call_soon_threadsafe``).
    """

    def __init__(self, client: Any, channel: str) -> None:
        self.bare = PubSubRig(client, channel)
        self.command = self.bare.command
        self._listening = threading.Event()

    def parked(self) -> bool:
        return self._listening.is_set()

    async def receive(self) -> tuple[int, int]:
        self._listening.clear()
        got: list[int] = []
        arrived: trio.Event | asyncio.Event
        wake: Callable[[], object]
        if sniffio.current_async_library() == "trio":
            arrived = trio.Event()
            wake = partial(trio.lowlevel.current_trio_token().run_sync_soon, arrived.set)
        else:
            arrived = asyncio.Event()
            wake = partial(asyncio.get_running_loop().call_soon_threadsafe, arrived.set)

        def listen() -> None:
            self._listening.set()
            got.append(self.bare.receive()[1])
            wake()

        threading.Thread(target=listen, daemon=True).start()
        await arrived.wait()
        return monotonic_ns(), got[0]

    def close(self) -> None:
        self.bare.close()


class OwnSocketRig:
    """A loop that reads its messages from a socket of its own: RESP by hand, nothing replayed.

    The floor of a wake that the waiting loop reads itself, with no thread
    between: the socket subscribes before the block, and each round the loop
    awaits it (trio's ``wait_readable``, asyncio's ``sock_recv``) until one
    whole message is in. What the sender does before its message leaves the
    server is all that differs between its rows.
    """

    def __init__(self, url: str, channel: str, command: str) -> None:
        address = urllib.parse.urlsplit(url)
        self.command = command
        self.socket = socket.create_connection(
            (address.hostname, address.port), timeout=WAIT_TIMEOUT
        )
        self.socket.sendall(_command_bytes("SUBSCRIBE", channel))
        confirmed = b""
        while confirmed.count(b"\r\n") < 6:  # *3, $9, subscribe, $n, the channel, :1
            confirmed += self.socket.recv(4096)
        if b"subscribe" not in confirmed:
            raise RuntimeError(f"no subscription to {channel!r}: {confirmed!r}")
        self.socket.setblocking(False)

    def parked(self) -> bool:
        return True  # subscribed before the block

    async def receive(self) -> tuple[int, int]:
        data = b""
        while data.count(b"\r\n") < 7:  # *3, $7, message, $n, the channel, $m, the data
            if sniffio.current_async_library() == "trio":
                await trio.lowlevel.wait_readable(self.socket)
                try:
                    chunk = self.socket.recv(65536)
                except BlockingIOError:
                    continue
            else:
                chunk = await asyncio.get_running_loop().sock_recv(self.socket, 65536)
            if not chunk:
                raise RuntimeError("the server closed the subscriber's socket")
            data += chunk
        return monotonic_ns(), int(data.startswith(b"*3\r\n$7\r\nmessage\r\n"))

    def close(self) -> None:
        self.socket.close()


def _command_bytes(*words: str) -> bytes:
    """A command in RESP, as a client sends it: an array of bulk strings."""
    encoded = [word.encode() for word in words]
    return b"*%d\r\n" % len(encoded) + b"".join(
        b"$%d\r\n%s\r\n" % (len(word), word) for word in encoded
    )


class BlpopRig:
    """redis-py's ``BLPOP`` on a list; the pusher ``RPUSH``es."""

    def __init__(self, client: Any, key: str) -> None:
        self.command = f"rpush {key}"
        self.client, self.key = client, key

    def parked(self) -> bool:
        return True

    def receive(self) -> tuple[int, int]:
        popped = self.client.blpop([self.key], timeout=WAIT_TIMEOUT)
        return monotonic_ns(), 0 if popped is None else 1

    def close(self) -> None:
        pass


#: The inbox's candidates: the wake-up itself (the verdict's), and a wake-up with the take.
RIGS: dict[str, Callable[[Inbox, str], AsyncRig]] = {
    HARN: WaitRig,
    WAIT_FOR: WaitForRig,
    WAIT_DRAIN: WaitDrainRig,
}


def _latency(pusher: Pusher, woke: int, received: int) -> float:
    """µs from the pusher's reading to *woke*, once the pusher says it fired."""
    pusher.fired()
    if received != 1:
        raise RuntimeError(f"the waiter had {received} entries in hand, not 1")
    return (woke - pusher.fired_at.value) / 1e3


async def _async_rounds(rig: AsyncRig, gate: Gate, pusher: Pusher, rounds: int) -> list[float]:
    latencies: list[float] = []
    for _ in range(rounds):
        gate.open(rig.command)
        woke, received = await rig.receive()
        latencies.append(_latency(pusher, woke, received))
    return latencies


def _sync_rounds(rig: SyncRig, gate: Gate, pusher: Pusher, rounds: int) -> list[float]:
    latencies: list[float] = []
    for _ in range(rounds):
        gate.open(rig.command)
        woke, received = rig.receive()
        latencies.append(_latency(pusher, woke, received))
    return latencies


def _asyncio_rounds(rig: AsyncRig, gate: Gate, pusher: Pusher, rounds: int) -> list[float]:
    return asyncio.run(_async_rounds(rig, gate, pusher, rounds))


WakeCandidate = tuple[Framework, str]


def _measure_wake(
    result: ScenarioResult,
    url: str,
    namespace: str,
    context: SpawnContext,
    blocks: int,
    rounds: int,
) -> None:
    names = (
        HARN,
        THREAD_LISTENS,
        WAIT_FOR,
        WAIT_DRAIN,
        BARE_PUBSUB_LOOP,
        *OWN_SOCKET,
        BARE_PUBSUB,
        BARE_BLPOP,
    )
    candidates: list[WakeCandidate] = [
        (framework, name) for framework in ("trio", "asyncio") for name in names
    ]
    # (trio wakes a task from the listener's own task directly: an asyncio row only.)
    candidates.insert(candidates.index(("asyncio", THREAD_LISTENS)) + 1, ("asyncio", LOOP_HOP))
    per_block: dict[WakeCandidate, dict[str, list[float]]] = {
        candidate: {"p50": [], "p99": [], "all": []} for candidate in candidates
    }
    client = _client(url)
    pusher = Pusher(context, url, namespace)
    try:
        with RedisStore(url, namespace=namespace) as store, Inbox(store=store) as inbox:
            serial = 0

            def block(framework: Framework, name: str) -> list[float]:
                nonlocal serial
                serial += 1
                target = f"wake-{framework}-{serial}"
                if (
                    name in RIGS
                    or name in (BARE_PUBSUB_LOOP, THREAD_LISTENS, LOOP_HOP)
                    or name in OWN_SOCKET
                ):
                    rig: AsyncRig
                    thread_store = None
                    if name == THREAD_LISTENS:
                        # The trick taken out: a store that keeps the listening on its
                        # thread (`LoopListener` never offered), for its own blocks only.
                        thread_store = RedisStore(url, namespace=namespace)
                        thread_store._loops_may_listen = False
                        rig = WaitRig(Inbox(store=thread_store), target)
                    elif name == LOOP_HOP:
                        rig = WaitRig(inbox, target)
                    elif name == BARE_PUBSUB_LOOP:
                        rig = PubSubToLoopRig(client, f"{namespace}:bare:{target}")
                    elif name == OWN_SOCKET_PUSH:
                        rig = OwnSocketRig(url, f"{namespace}:wake:{target}", f"push {target}")
                    elif name in OWN_SOCKET:
                        channel = f"{namespace}:bare:{target}"
                        rig = OwnSocketRig(url, channel, f"{OWN_SOCKET[name]} {channel}")
                    else:
                        rig = RIGS[name](inbox, target)
                    gate = Gate(pusher, rig.parked)
                    if name == LOOP_HOP:
                        # The trick taken out for this block: the listener's reader
                        # callback no longer says it runs on the loop, so its wakes
                        # take the loop's thread-safe entry, as from a foreign thread.
                        _loop_listener.AsyncioListener._readable = (
                            _loop_listener.LoopListener._readable
                        )
                    try:
                        if framework == "trio":
                            return trio.run(_async_rounds, rig, gate, pusher, rounds)
                        return _asyncio_rounds(rig, gate, pusher, rounds)
                    finally:
                        _loop_listener.AsyncioListener._readable = READABLE_SAYS_SO
                        gate.close()
                        rig.close()
                        if thread_store is not None:
                            assert isinstance(rig, WaitRig)
                            rig.inbox.close()
                            thread_store.close()
                        if name == OWN_SOCKET_PUSH:
                            inbox.drain(target)  # (untimed: the pushes need no keeping)
                bare = (
                    PubSubRig(client, f"{namespace}:bare:{target}")
                    if name == BARE_PUBSUB
                    else BlpopRig(client, f"{namespace}:bare:{target}")
                )
                gate = Gate(pusher, bare.parked)
                try:
                    return _sync_rounds(bare, gate, pusher, rounds)
                finally:
                    gate.close()
                    bare.close()

            for framework, name in candidates:
                block(framework, name)  # warm: each path once, untimed
            with collector_paused():
                for order in rotations(candidates, blocks):
                    for framework, name in order:
                        latencies = sorted(block(framework, name))
                        stats = per_block[framework, name]
                        stats["p50"].append(percentile(latencies, 50))
                        stats["p99"].append(percentile(latencies, 99))
                        stats["all"] += latencies
    finally:
        pusher.close()
        client.close()
    pooled: dict[str, dict[str, Any]] = {}
    for (framework, name), stats in per_block.items():
        for statistic in ("p50", "p99"):
            result.add(wake_case(framework, statistic), name, "µs", stats[statistic])
        everything = sorted(stats["all"])
        pooled[f"{framework}, {name}"] = {
            "samples": len(everything),
            **{f"p{pct:g}": round(percentile(everything, pct), 2) for pct in (50, 90, 99, 99.9)},
            "max": round(everything[-1], 2),
        }
    result.details["pooled_latency_us"] = pooled
    for framework in ("trio", "asyncio"):
        case = wake_case(framework)
        for bare in (BARE_PUBSUB, BARE_BLPOP):
            result.verdicts.append(
                ratio_verdict(
                    12,
                    f"{framework}: a wait woken from another process, p50 ≤ "
                    f"{WAKE_LIMIT:g}x a {bare.removeprefix('bare ')} round trip",
                    result.find(case, HARN),
                    result.find(case, bare),
                    "<=",
                    WAKE_LIMIT,
                    headline=True,
                )
            )


# -- Throughput ----------------------------------------------------------------------------------


def _pusher_of(push: Callable[..., object], session_id: str) -> Callable[[], object]:
    def push_one() -> object:
        return push(session_id, KIND, CONTENT, SOURCE)

    return push_one


def _stamper_of(stamp: Callable[..., object], prefix: str) -> Callable[[], object]:
    """One hand-stamped entry: the script with the session's two keys, a clock reading."""
    keys = [f"{prefix}:queue", f"{prefix}:sequence"]

    def stamp_one() -> object:
        return stamp(keys=keys, args=[ITEM_JSON, time_ns() // 1_000_000])

    return stamp_one


def _producer_main(
    url: str,
    namespace: str,
    index: int,
    barrier: Any,
    started: Any,
    commands: Connection,
    replies: Connection,
) -> None:
    """One producer process: on each command, wait at the barrier, read the clock, store *count*."""
    client = _client(url)
    stamp = client.register_script(STAMP_SCRIPT)
    try:
        with RedisStore(url, namespace=namespace) as store, Inbox(store=store) as inbox:
            push = inbox.push
            client.ping()
            gc.disable()
            replies.send(None)
            while (command := commands.recv()) is not None:
                verb, target, count = command
                one = _pusher_of(push, target) if verb == "push" else _stamper_of(stamp, target)
                try:
                    barrier.wait(timeout=CHILD_TIMEOUT)
                    started[index] = monotonic_ns()
                    for _ in range(count):
                        one()
                except Exception as error:
                    replies.send(f"{type(error).__name__}: {error}")
                    continue
                replies.send(None)
    finally:
        client.close()


class Producers:
    """The eight producer processes, from the consumer's side."""

    def __init__(self, context: SpawnContext, url: str, namespace: str) -> None:
        self._barrier = context.Barrier(PRODUCERS)
        self._started = context.RawArray("q", PRODUCERS)
        self._commands: list[Connection] = []
        self._replies: list[Connection] = []
        self.processes: list[SpawnProcess] = []
        for index in range(PRODUCERS):
            commands_in, commands_out = context.Pipe(duplex=False)
            replies_in, replies_out = context.Pipe(duplex=False)
            process = context.Process(
                target=_producer_main,
                args=(
                    url,
                    namespace,
                    index,
                    self._barrier,
                    self._started,
                    commands_in,
                    replies_out,
                ),
                name=f"bench-redis-producer-{index}",
                daemon=True,
            )
            process.start()
            commands_in.close()
            replies_out.close()
            self._commands.append(commands_out)
            self._replies.append(replies_in)
            self.processes.append(process)
        self._pending: set[int] = set()
        for index in range(PRODUCERS):
            self._reply(index)

    def go(self, verb: str, targets: Sequence[str], count: int) -> None:
        """Each producer stores *count* entries into its target, once all are at the barrier."""
        for index, commands in enumerate(self._commands):
            commands.send((verb, targets[index], count))
            self._pending.add(index)

    def check(self) -> None:
        """Raise if a producer has failed (its reply came early)."""
        for index in list(self._pending):
            if self._replies[index].poll(0):
                self._reply(index)

    def finish(self) -> int:
        """Every producer's reply; the barrier's release: the earliest reading after it."""
        for index in list(self._pending):
            self._reply(index)
        return min(self._started)

    def _reply(self, index: int) -> None:
        connection = self._replies[index]
        if not connection.poll(RUN_TIMEOUT):
            raise RuntimeError(f"producer {index} did not answer within {RUN_TIMEOUT:g} s")
        try:
            failure = connection.recv()
        except EOFError:
            raise RuntimeError(f"producer {index} exited") from None
        self._pending.discard(index)
        if failure is not None:
            raise RuntimeError(f"producer {index} failed: {failure}")

    def close(self) -> None:
        for commands in self._commands:
            with contextlib.suppress(OSError):  # a producer that died has closed its end
                commands.send(None)
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()


async def _receive_all(inbox: Inbox, session_id: str, count: int, producers: Producers) -> None:
    received = 0
    while received < count:
        if await inbox.wait(session_id, timeout=WAIT_TIMEOUT):
            received += len(await inbox.adrain(session_id))
        else:
            producers.check()
    if received != count:
        raise RuntimeError(f"{session_id}: received {received} entries, not {count}")


async def _trio_consumer(
    inbox: Inbox, sessions: list[str], count: int, producers: Producers
) -> int:
    with trio.fail_after(RUN_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for session_id in sessions:
                nursery.start_soon(_receive_all, inbox, session_id, count, producers)
            await trio.testing.wait_all_tasks_blocked()
            producers.go("push", sessions, count)
    return monotonic_ns()


async def _asyncio_consumer(
    inbox: Inbox, sessions: list[str], count: int, producers: Producers
) -> int:
    tasks = [
        asyncio.create_task(_receive_all(inbox, session_id, count, producers))
        for session_id in sessions
    ]
    await asyncio.sleep(0)
    producers.go("push", sessions, count)
    await asyncio.wait_for(asyncio.gather(*tasks), RUN_TIMEOUT)
    return monotonic_ns()


def _bare_consumer(client: Any, prefixes: list[str], count: int, producers: Producers) -> int:
    keys = [f"{prefix}:queue" for prefix in prefixes]
    producers.go("stamp", prefixes, count)
    blpop = client.blpop
    received, total = 0, len(keys) * count
    deadline = time.monotonic() + RUN_TIMEOUT
    while received < total:
        if blpop(keys, timeout=WAIT_TIMEOUT) is not None:
            received += 1
            continue
        producers.check()
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bare queue received {received} of {total} in time")
    return monotonic_ns()


def _measure_throughput(
    result: ScenarioResult,
    url: str,
    namespace: str,
    context: SpawnContext,
    runs: int,
    count: int,
) -> None:
    candidates: list[tuple[Framework, str]] = [
        (framework, name) for framework in ("trio", "asyncio") for name in (HARN, BARE_QUEUE)
    ]
    rates: dict[tuple[Framework, str], list[float]] = {candidate: [] for candidate in candidates}
    client = _client(url)
    producers = Producers(context, url, namespace)
    try:
        with RedisStore(url, namespace=namespace) as store, Inbox(store=store) as inbox:
            serial = 0

            def one_run(framework: Framework, name: str) -> float:
                nonlocal serial
                serial += 1
                targets = [f"rate-{serial}-{index}" for index in range(PRODUCERS)]
                if name == BARE_QUEUE:
                    prefixes = [f"{namespace}:bare:{target}" for target in targets]
                    finished = _bare_consumer(client, prefixes, count, producers)
                elif framework == "trio":
                    finished = trio.run(_trio_consumer, inbox, targets, count, producers)
                else:
                    finished = asyncio.run(_asyncio_consumer(inbox, targets, count, producers))
                released = producers.finish()
                return PRODUCERS * count / ((finished - released) / 1e9)

            with collector_paused():
                for order in rotations(candidates, runs):
                    for framework, name in order:
                        rates[framework, name].append(one_run(framework, name))
    finally:
        producers.close()
        client.close()
    for (framework, name), values in rates.items():
        result.add(throughput_case(framework), name, "entries/s", values)


# -- The scenario --------------------------------------------------------------------------------


def run(quick: bool) -> ScenarioResult:
    rounds, ops = (4, 50) if quick else (200, 200)
    blocks, wakes = (2, 20) if quick else (20, 200)
    runs, count = (1, 100) if quick else (7, 1_500)
    with tempfile.TemporaryDirectory(prefix="harn-redis-") as name:
        server = RedisServer(Path(name))
        try:
            result = ScenarioResult(
                "redis",
                12,
                "The Redis store (RedisStore) across processes",
                f"{METHOD} Push: {rounds} rounds of {ops:,} calls per candidate; µs per call. "
                f"Wake-up: {blocks} blocks of {wakes} wake-ups per candidate, "
                f"{SETTLE_SECONDS * 1e3:g} ms settling. Throughput: {runs} runs of "
                f"{PRODUCERS} x {count:,} entries per candidate. Redis {server.version}, "
                f"redis-py {redis.__version__}.",
            )
            result.details["redis_server"] = server.version
            context = multiprocessing.get_context("spawn")
            namespace = f"bench{uuid.uuid4().hex[:8]}"
            _measure_push(result, server.url, f"{namespace}-push", rounds, ops)
            _measure_wake(result, server.url, f"{namespace}-wake", context, blocks, wakes)
            _measure_throughput(result, server.url, f"{namespace}-rate", context, runs, count)
        finally:
            server.stop()
    return result
