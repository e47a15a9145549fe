"""A producer or consumer process for ``test_redis_processes.py``: ``python redis_child.py CONFIG``.

*CONFIG* is a JSON object: ``role`` (``produce`` or ``consume``), ``style``
(``threads``, ``trio`` or ``asyncio``), ``name``, ``url``, ``namespace``,
``lifetime``, and ``counts`` (a producer's pushes per session) or ``seed`` (a
consumer's choices). The process opens ``Inbox(store=RedisStore(url,
namespace=namespace))`` and reports on stdout, one whole line per event,
written only after what it reports has returned:

- ``ready`` once the inbox is open;
- ``P <session> <sequence> <number>``: a producer pushed its *number*-th entry
  of the session (numbered from 0) and got *sequence*;
- ``T <consumer> <operation> <session> <fate> <sequence>=<content>...``: a
  consumer took these entries, in the order it got them, and either kept them
  (fate ``F``, final: delivered) or gave them back (``B``: requeued at the head
  by ``requeue_front``, or released by a claim whose block raised);
- ``done``: a producer pushed everything; a consumer took its stop entry;
- ``X <traceback>``: something raised (then the process exits with 1).

A producer pushes each session's entries in order from one thread or task
(so its numbers and the sequences it gets must rise together), with content
``<producer>/<number>`` and payload ``{"producer": ..., "n": ...}``. A consumer
serves every session with a random mix of operations (`Consumer`), until an
entry of kind ``stop`` arrives in its own session ``stop-<name>``. A consumer
thread of the test process runs `consume_in_thread`, the same decisions.

Marked entries (``n % MARK_EVERY == MARK_AT``) are given back by every
consumer the first time it takes them, so give-backs happen whatever the
scheduling, and each consumer gives an entry back at most once (a claim is
released only for a fresh marked entry), so every run ends.

A process nobody stops (the parent died) exits by itself after ``lifetime``.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import threading
import traceback
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from harn_inbox import Inbox, InboxEntry
from harn_inbox.stores import RedisStore

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

SESSIONS = tuple(f"s{index}" for index in range(8))
#: Every MARK_EVERY-th entry of a producer's session (at MARK_AT) is given back once per consumer.
MARK_EVERY, MARK_AT = 10, 3
#: Claims are held for an instant, but never given back by their lease: under the
#: default lease, a process stalled for a minute in a claim would see its entries go
#: back and be delivered twice (at-least-once, as documented), a verdict by timing.
CLAIM_LEASE = 3600.0
#: How long one wait of a serving loop lasts before it picks another operation.
IDLE_SECONDS = 0.25
#: The weights of the serving loops' operations.
ASYNC_OPERATIONS = {"drain": 5, "wait_for": 4, "drain_where": 3, "claim": 5, "batch": 3}
THREAD_OPERATIONS = {"drain": 4, "drain_where": 3, "claim": 5}


def stop_session(consumer: str) -> str:
    """The session in which the parent pushes a consumer's stop entry."""
    return f"stop-{consumer}"


def is_stop(entry: InboxEntry) -> bool:
    return entry.kind == "stop"


def content_of(producer: str, number: int) -> str:
    return f"{producer}/{number}"


def is_marked(entry: InboxEntry) -> bool:
    return bool(entry.payload["n"] % MARK_EVERY == MARK_AT)


# -- Predicates of the selective operations (plain functions of the entry) -------------------------


def has_parity(parity: int, entry: InboxEntry) -> bool:
    return bool(entry.payload["n"] % 2 == parity)


def from_producer(producer: str, entry: InboxEntry) -> bool:
    return bool(entry.payload["producer"] == producer)


def anything(entry: InboxEntry) -> bool:
    return True


class Consumer:
    """One consumer's decisions and reports: which operation, which predicate, what goes back.

    Args:
        name: The consumer's name in its reports and its stop session.
        seed: Of its random choices (which only steer the mix; no verdict depends on them).
        producers: The producers' names, for the producer predicates.
        report: Writes one line (whole, thread-safe).
    """

    def __init__(
        self, name: str, seed: int, producers: list[str], report: Callable[[str], None]
    ) -> None:
        self.name = name
        self.rng = random.Random(seed)
        self.producers = producers
        self._report = report
        #: (session, sequence) of the marked entries this consumer gave back already.
        self._given_back: set[tuple[str, int]] = set()

    def operation(self, weights: dict[str, int]) -> str:
        return self.rng.choices(list(weights), list(weights.values()))[0]

    def predicate(self) -> Callable[[InboxEntry], bool]:
        draw = self.rng.random()
        if draw < 0.4:
            return partial(has_parity, self.rng.randrange(2))
        if draw < 0.8:
            return partial(from_producer, self.rng.choice(self.producers))
        return anything

    def limit(self) -> int | None:
        return self.rng.choice([None, None, 1, 3])

    def split(self, entries: list[InboxEntry]) -> tuple[list[InboxEntry], list[InboxEntry]]:
        """(kept, to give back): the marked entries it takes for the first time go back."""
        kept: list[InboxEntry] = []
        back: list[InboxEntry] = []
        for entry in entries:
            check(entry)
            key = (entry.session_id, entry.sequence)
            if is_marked(entry) and key not in self._given_back:
                self._given_back.add(key)
                back.append(entry)
            else:
                kept.append(entry)
        return kept, back

    def release(self, entries: list[InboxEntry]) -> bool:
        """Whether a claim of *entries* gives them back (it holds a fresh marked one)."""
        _, back = self.split(entries)
        return bool(back)

    def record(self, operation: str, session_id: str, fate: str, entries: list[InboxEntry]) -> None:
        if entries:
            taken = " ".join(f"{entry.sequence}={entry.content}" for entry in entries)
            self._report(f"T {self.name} {operation} {session_id} {fate} {taken}")

    def split_and_record(
        self, operation: str, session_id: str, entries: list[InboxEntry], back: list[InboxEntry]
    ) -> None:
        """Report a take whose *back* entries were requeued: in the order taken, by fate."""
        returned = {entry.sequence for entry in back}
        self.record(operation, session_id, "F", [e for e in entries if e.sequence not in returned])
        self.record(operation, session_id, "B", back)


class GiveBack(Exception):
    """Raised in a claim's block to release its entries (at the head, in order)."""


def check(entry: InboxEntry) -> None:
    """The payload says what the content says (both came through the store)."""
    producer, number = entry.content.split("/")
    expected = {"producer": producer, "n": int(number)}
    if entry.kind != "nudge" or dict(entry.payload) != expected:
        raise AssertionError(f"entry {entry!r} does not carry what it was pushed with")


# -- Consuming under trio and asyncio --------------------------------------------------------------


async def serve(
    inbox: Inbox,
    session_id: str,
    consumer: Consumer,
    step_batches: Callable[[Any], Awaitable[list[InboxEntry] | None]],
) -> None:
    """Take *session_id*'s entries with a random mix of operations, until cancelled."""
    channel = inbox.batches(session_id)
    try:
        while True:
            operation = consumer.operation(ASYNC_OPERATIONS)
            if operation == "batch":
                batch = await step_batches(channel)
                if batch:
                    await give_back_async(inbox, consumer, "batch", session_id, batch)
            elif operation == "wait_for":
                taken = await inbox.wait_for(
                    session_id, consumer.predicate(), IDLE_SECONDS, limit=consumer.limit()
                )
                await give_back_async(inbox, consumer, "wait_for", session_id, taken)
            elif not await inbox.wait(session_id, IDLE_SECONDS):
                continue
            elif operation == "drain":
                taken = await inbox.adrain(session_id)
                await give_back_async(inbox, consumer, "drain", session_id, taken)
            elif operation == "drain_where":
                taken = await inbox.adrain_where(session_id, consumer.predicate())
                await give_back_async(inbox, consumer, "drain_where", session_id, taken)
            else:
                predicate = consumer.predicate() if consumer.rng.random() < 0.5 else None
                claimed: list[InboxEntry] = []
                try:
                    async with inbox.claim(session_id, predicate) as claimed:
                        if consumer.release(claimed):
                            raise GiveBack
                except GiveBack:
                    consumer.record("claim", session_id, "B", claimed)
                else:
                    consumer.record("claim", session_id, "F", claimed)
    finally:
        await channel.aclose()


async def give_back_async(
    inbox: Inbox, consumer: Consumer, operation: str, session_id: str, taken: list[InboxEntry]
) -> None:
    _, back = consumer.split(taken)
    for entry in reversed(back):  # each to the head: they end up in their order
        await inbox.arequeue_front(entry)
    consumer.split_and_record(operation, session_id, taken, back)


async def trio_step(channel: Any) -> list[InboxEntry] | None:
    with trio.move_on_after(IDLE_SECONDS):
        batch: list[InboxEntry] = await channel.receive()
        return batch
    return None


async def asyncio_step(channel: Any) -> list[InboxEntry] | None:
    try:
        batch: list[InboxEntry] = await asyncio.wait_for(channel.receive(), IDLE_SECONDS)
    except asyncio.TimeoutError:
        return None
    return batch


async def consume_trio(inbox: Inbox, consumer: Consumer) -> None:
    async with trio.open_nursery() as nursery:
        for session_id in SESSIONS:
            nursery.start_soon(serve, inbox, session_id, consumer, trio_step)
        await inbox.wait_for(stop_session(consumer.name), is_stop)
        nursery.cancel_scope.cancel()


async def consume_asyncio(inbox: Inbox, consumer: Consumer) -> None:
    servers = [
        asyncio.ensure_future(serve(inbox, session_id, consumer, asyncio_step))
        for session_id in SESSIONS
    ]
    stop = asyncio.ensure_future(inbox.wait_for(stop_session(consumer.name), is_stop))
    done, _ = await asyncio.wait([*servers, stop], return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.cancel()
    await asyncio.gather(*servers, return_exceptions=True)
    for task in done:
        task.result()  # a server that failed raises here


# -- Consuming in a thread -------------------------------------------------------------------------


def consume_in_thread(inbox: Inbox, consumer: Consumer) -> None:
    """Serve every session from one thread, until the stop entry comes.

    Mostly ``wait_any_sync`` over every session (its own stop session last, so
    it stops only once the others are empty); now and then ``wait_sync`` on
    one session, with a timeout.
    """
    control = stop_session(consumer.name)
    while True:
        order = list(SESSIONS)
        consumer.rng.shuffle(order)
        if consumer.rng.random() < 0.2:
            if not inbox.wait_sync(order[0], IDLE_SECONDS):
                continue
            session_id: str | None = order[0]
        else:
            session_id = inbox.wait_any_sync([*order, control])
        if session_id == control:
            inbox.drain(control)
            return
        assert session_id is not None
        operation = consumer.operation(THREAD_OPERATIONS)
        if operation == "claim":
            predicate = consumer.predicate() if consumer.rng.random() < 0.5 else None
            claimed: list[InboxEntry] = []
            try:
                with inbox.claim(session_id, predicate) as claimed:
                    if consumer.release(claimed):
                        raise GiveBack
            except GiveBack:
                consumer.record("claim", session_id, "B", claimed)
            else:
                consumer.record("claim", session_id, "F", claimed)
            continue
        if operation == "drain":
            taken = inbox.drain(session_id)
        else:
            taken = inbox.drain_where(session_id, consumer.predicate())
        _, back = consumer.split(taken)
        for entry in reversed(back):
            inbox.requeue_front(entry)
        consumer.split_and_record(operation, session_id, taken, back)


# -- Producing -------------------------------------------------------------------------------------


def push_sync(
    inbox: Inbox, name: str, session_id: str, count: int, report: Callable[[str], None]
) -> None:
    for number in range(count):
        entry = inbox.push(
            session_id,
            "nudge",
            content_of(name, number),
            name,
            payload={"producer": name, "n": number},
        )
        report(f"P {session_id} {entry.sequence} {number}")


async def push_async(
    inbox: Inbox, name: str, session_id: str, count: int, report: Callable[[str], None]
) -> None:
    for number in range(count):
        entry = await inbox.apush(
            session_id,
            "nudge",
            content_of(name, number),
            name,
            payload={"producer": name, "n": number},
        )
        report(f"P {session_id} {entry.sequence} {number}")


def produce(
    inbox: Inbox, style: str, name: str, counts: Iterable[int], report: Callable[[str], None]
) -> None:
    work = [
        (session_id, count) for session_id, count in zip(SESSIONS, counts, strict=True) if count
    ]
    if style == "threads":
        threads = [
            threading.Thread(
                target=_reporting_failure, args=(push_sync, inbox, name, sid, count, report)
            )
            for sid, count in work
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    elif style == "trio":

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                for sid, count in work:
                    nursery.start_soon(push_async, inbox, name, sid, count, report)

        trio.run(main)
    else:

        async def main_asyncio() -> None:
            await asyncio.gather(
                *(push_async(inbox, name, sid, count, report) for sid, count in work)
            )

        asyncio.run(main_asyncio())


# -- The process -----------------------------------------------------------------------------------

_report_lock = threading.Lock()


def report(line: str) -> None:
    """One whole line on stdout, flushed (threads do not interleave)."""
    with _report_lock:
        try:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the parent is gone: nobody to report to
            os._exit(0)


def fail_and_exit() -> None:
    report("X " + traceback.format_exc().replace("\n", " | "))
    os._exit(1)


def _reporting_failure(function: Callable[..., None], *arguments: Any) -> None:
    try:
        function(*arguments)
    except BaseException:
        fail_and_exit()


def main(config: dict[str, Any]) -> None:
    def expire() -> None:
        os._exit(3)  # nobody stopped us: the parent is gone

    timer = threading.Timer(config["lifetime"], expire)
    timer.daemon = True
    timer.start()
    store = RedisStore(config["url"], namespace=config["namespace"], claim_lease=CLAIM_LEASE)
    inbox = Inbox(store=store)
    report("ready")
    try:
        if config["role"] == "produce":
            produce(inbox, config["style"], config["name"], config["counts"], report)
        else:
            consumer = Consumer(config["name"], config["seed"], config["producers"], report)
            if config["style"] == "trio":
                trio.run(consume_trio, inbox, consumer)
            else:
                asyncio.run(consume_asyncio(inbox, consumer))
    except BaseException:
        fail_and_exit()
    inbox.close()
    store.close()
    report("done")


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
