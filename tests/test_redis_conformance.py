"""The conformance kit against `RedisStore`: one inbox, two inboxes as one, and across restarts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import hypothesis
import pytest
from test_conformance import SHORT_WINDOW
from test_conformance import conformance_settings as local_settings

from harn_inbox import Inbox, ManualClock
from harn_inbox.stores import RedisStore
from harn_inbox.testing import SharedInboxes, run_conformance

if TYPE_CHECKING:
    from collections.abc import Iterator

    from _redis_server import RedisServer

    from harn_inbox import InboxLike


def conformance_settings(share: float) -> hypothesis.settings:
    """The kit's settings, without hypothesis' explain phase: it traces every line of a
    failing example again and again, which over the network took minutes to shrink one."""
    return hypothesis.settings(
        local_settings(share),
        phases=[phase for phase in hypothesis.Phase if phase is not hypothesis.Phase.explain],
    )


class RedisInboxes:
    """Inboxes over a new namespace each run; reopened (a process restart) on the same one.

    The stores of a run are closed when the next run makes its own, so the
    connections and subscriber threads of a thousand runs do not pile up.
    """

    def __init__(
        self,
        server: RedisServer,
        *,
        compact_after: int = 0,
        forget: bool = False,
        **settings: Any,
    ) -> None:
        self.server = server
        self.compact_after = compact_after
        self.forget = forget
        self.settings = settings
        self.stores: list[RedisStore] = []
        self.namespace = ""

    def open(self, clock: ManualClock) -> Inbox:
        # The kit holds claims across clock moves of up to the dedupe window: a
        # lease that never passes here (leases are test_redis_faults.py's).
        store = RedisStore(self.server.url, namespace=self.namespace, claim_lease=10**9)
        if self.compact_after:
            store._compact_after = self.compact_after
        if self.forget:
            # Copies and subscriptions not in use dropped at every turn of the subscriber.
            store._forget_after = 0.0
            store._housekeeping = 0.0
        self.stores.append(store)
        return Inbox(store=store, clock=clock, **self.settings)

    def make(self) -> tuple[Inbox, ManualClock]:
        self.close()
        self.namespace = self.server.namespace()
        clock = ManualClock(start_ms=1_000_000)
        return self.open(clock), clock

    def make_shared(self) -> tuple[SharedInboxes, ManualClock]:
        self.close()
        self.namespace = self.server.namespace()
        clock = ManualClock(start_ms=1_000_000)
        return SharedInboxes([self.open(clock), self.open(clock)]), clock

    def reopen(self, inbox: InboxLike, clock: ManualClock) -> Inbox:
        """What a restart of the process does: its inbox and store go, a new one comes."""
        inbox.close()
        self.close()
        return self.open(clock)

    def close(self) -> None:
        while self.stores:
            self.stores.pop().close()


@pytest.fixture
def redis_inboxes(redis_server: RedisServer) -> Iterator[RedisInboxes]:
    inboxes = RedisInboxes(redis_server)
    yield inboxes
    inboxes.close()


# The kit's rules and checks are the memory store's; the shares are of its runs.
# A step here makes round trips (a run takes about 0.1 s against the memory
# store's 0.03 s), so the two main configurations take half of the runs, as the
# SQLite store's unbounded one does, and the rest, which repeat them under one
# more condition, fewer.


def test_inbox_over_a_redis_store_conforms_across_restarts(redis_inboxes: RedisInboxes) -> None:
    run_conformance(
        redis_inboxes.make, reopen=redis_inboxes.reopen, settings=conformance_settings(0.5)
    )


def test_two_inboxes_on_one_namespace_conform_as_one(redis_inboxes: RedisInboxes) -> None:
    run_conformance(redis_inboxes.make_shared, settings=conformance_settings(0.5))


def test_inboxes_conform_when_their_logs_are_compacted_every_few_operations(
    redis_server: RedisServer,
) -> None:
    # Snapshots taken and loaded at every chance: one inbox compacts what the
    # other then loads, and a reopened one starts from a snapshot.
    inboxes = RedisInboxes(redis_server, compact_after=2)
    try:
        run_conformance(inboxes.make_shared, settings=conformance_settings(0.2))
        run_conformance(inboxes.make, reopen=inboxes.reopen, settings=conformance_settings(0.2))
    finally:
        inboxes.close()


def test_inboxes_conform_when_what_they_do_not_use_is_dropped_at_every_turn(
    redis_server: RedisServer,
) -> None:
    # Each inbox drops its copies of the sessions it is not using, between any
    # two of its operations, and loads them again from the log (and its
    # snapshots, taken every few operations) at their next use.
    inboxes = RedisInboxes(redis_server, compact_after=3, forget=True)
    try:
        run_conformance(inboxes.make_shared, settings=conformance_settings(0.2))
        run_conformance(inboxes.make, reopen=inboxes.reopen, settings=conformance_settings(0.1))
    finally:
        inboxes.close()


@pytest.mark.parametrize("overflow", ["reject", "drop_oldest"])
def test_bounded_inboxes_on_one_namespace_conform_as_one(
    redis_server: RedisServer, overflow: Any
) -> None:
    bounds = {"max_pending": 2, "overflow": overflow, "dedupe_window": SHORT_WINDOW}
    inboxes = RedisInboxes(redis_server, **bounds)
    try:
        run_conformance(inboxes.make_shared, **bounds, settings=conformance_settings(0.1))
    finally:
        inboxes.close()
