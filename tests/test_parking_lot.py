"""The parking lot's bookkeeping: each park is owed exactly one wake, whoever wakes it."""

from __future__ import annotations

import pytest

from harn_inbox._lot import ParkingLot
from harn_inbox._waiters import Waiter


class CountingWaiter(Waiter):
    """A waiter that counts its wakes (a thread waiter's lock would raise on a second)."""

    __slots__ = ("wakes",)

    def __init__(self, *session_ids: str) -> None:
        super().__init__(session_ids)
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


@pytest.mark.parametrize("first", ["notify_all", "close"])
def test_a_waiter_woken_by_everyone_is_not_woken_again_by_its_session(first: str) -> None:
    # notify_all (a store reconnected) and close once left the waiters they
    # woke in the parked table: the next notify of their session woke them
    # a second time for one park, and a thread waiter's lock raised.
    lot = ParkingLot()
    one, both = CountingWaiter("s"), CountingWaiter("s", "t")
    for waiter in (one, both):
        lot.enter(waiter)
        assert lot.arm(waiter)
    getattr(lot, first)()
    assert (one.wakes, both.wakes) == (1, 1)
    assert (one.parked, both.parked) == (False, False)
    assert lot.parked == {}
    lot.notify("s")
    lot.notify("t")
    assert (one.wakes, both.wakes) == (1, 1)
    # Armed again, they are owed one more wake each, and get it.
    for waiter in (one, both):
        lot.arm(waiter)
    lot.notify("s")
    assert (one.wakes, both.wakes) == (2, 2)
