"""wait_sync: blocking a thread until its session has something pending, on the inbox's clock.

Every verdict here is decided by events and by `ManualClock`, never by how much
wall time passed: a thread is known to be parked once ``waiter_count`` says so,
and a timeout elapses only when the test advances the clock.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs
import pytest
from _support import ThreadCall, parked_wait_sync, spin_until

from harn_inbox import Inbox, InboxEntry, ManualClock, SystemClock
from harn_inbox._waiters import ThreadWaiter

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import Backend


def wait_parked(inbox: Inbox, session_id: str, count: int) -> None:
    """Return once *count* waits are in progress on *session_id* (in other threads)."""
    spin_until(lambda: inbox.waiter_count(session_id) >= count, f"{count} waits parked")


@pytest.fixture
def wakes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The session of every thread waiter woken during the test, in order."""
    woken: list[str] = []
    original = ThreadWaiter.wake

    def counting_wake(self: ThreadWaiter) -> None:
        woken.append(self.session_ids[0])
        original(self)

    monkeypatch.setattr(ThreadWaiter, "wake", counting_wake)
    return woken


# -- Looking without blocking ----------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, 5, 0, 0.0, math.inf])
def test_wait_sync_returns_true_at_once_when_something_is_pending(
    inbox: Inbox, timeout: float | None
) -> None:
    entry = inbox.push("s", "k", "c", "src")
    assert ThreadCall(inbox.wait_sync, "s", timeout).outcome() is True
    assert inbox.snapshot("s") == [entry]  # waiting takes nothing
    assert inbox.waiter_count("s") == 0


def test_wait_sync_with_zero_timeout_just_looks(inbox: Inbox) -> None:
    assert inbox.wait_sync("s", 0) is False
    assert inbox.waiter_count("s") == 0
    inbox.push("other", "k", "c", "src")
    assert inbox.wait_sync("s", 0) is False
    inbox.push("s", "k", "c", "src")
    assert inbox.wait_sync("s", 0) is True


def test_wait_sync_sees_an_empty_string_session(inbox: Inbox) -> None:
    inbox.push("", "k", "c", "src")
    assert inbox.wait_sync("", 0) is True
    assert inbox.wait_sync("x", 0) is False


# -- Woken by pushes -------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, 5])
def test_push_from_another_thread_wakes_a_parked_wait(inbox: Inbox, timeout: float | None) -> None:
    wait = parked_wait_sync(inbox, "s", timeout)
    entry = inbox.push("s", "k", "c", "src")
    assert wait.outcome() is True
    assert inbox.waiter_count("s") == 0
    assert inbox.snapshot("s") == [entry]


def test_push_to_other_session_does_not_wake_sync_waiter(inbox: Inbox, wakes: list[str]) -> None:
    wait = parked_wait_sync(inbox, "s", None)
    inbox.push("other", "k", "c", "src")
    inbox.push("", "k", "c", "src")
    assert wakes == []
    assert inbox.waiter_count("s") == 1
    assert wait.is_alive()
    inbox.push("s", "k", "c", "src")
    assert wait.outcome() is True
    assert wakes == ["s"]


def test_one_push_wakes_every_waiter_of_its_session(inbox: Inbox) -> None:
    waits = [ThreadCall(inbox.wait_sync, "s", None) for _ in range(4)]
    wait_parked(inbox, "s", 4)
    inbox.push("s", "k", "c", "src")
    assert [wait.outcome() for wait in waits] == [True] * 4
    assert inbox.waiter_count("s") == 0
    assert inbox.pending_count("s") == 1


def test_push_wakes_only_the_waiters_of_its_session(inbox: Inbox, wakes: list[str]) -> None:
    wait_a = parked_wait_sync(inbox, "a")
    wait_b = parked_wait_sync(inbox, "b")
    inbox.push("a", "k", "c", "src")
    assert wait_a.outcome() is True
    assert wakes == ["a"]
    assert inbox.waiter_count("b") == 1
    assert wait_b.is_alive()
    inbox.push("b", "k", "c", "src")
    assert wait_b.outcome() is True


def test_rejected_push_does_not_wake_a_parked_wait(inbox: Inbox, wakes: list[str]) -> None:
    wait = parked_wait_sync(inbox, "s", None)
    with pytest.raises(TypeError):
        inbox.push("s", 1, "c", "src")  # type: ignore[arg-type]
    assert wakes == []
    assert inbox.waiter_count("s") == 1
    inbox.push("s", "k", "c", "src")
    assert wait.outcome() is True


@attrs.define
class FlakyClock:
    """Stamps from a ManualClock, except that the next `bad_stamps` reads return a float."""

    inner: ManualClock = attrs.field(factory=ManualClock)
    bad_stamps: int = 0

    def now_ms(self) -> int:
        if self.bad_stamps:
            self.bad_stamps -= 1
            return 1.5  # type: ignore[return-value]
        return self.inner.now_ms()

    def call_later(
        self, seconds: float, callback: Callable[[], object]
    ) -> Callable[[], object] | None:
        return self.inner.call_later(seconds, callback)


def test_push_refused_by_the_clock_does_not_wake_a_parked_wait(wakes: list[str]) -> None:
    clock = FlakyClock()
    inbox = Inbox(clock=clock)
    wait = parked_wait_sync(inbox, "s", None)
    clock.bad_stamps = 1
    with pytest.raises(TypeError, match="now_ms"):
        inbox.push("s", "k", "c", "src")
    assert wakes == []
    assert inbox.waiter_count("s") == 1
    assert inbox.push("s", "k", "c", "src").sequence == 1
    assert wait.outcome() is True


def test_requeue_front_wakes_a_parked_wait(inbox: Inbox) -> None:
    entry = inbox.push("s", "k", "c", "src")
    inbox.drain("s")
    wait = parked_wait_sync(inbox, "s", 5)
    inbox.requeue_front(entry)
    assert wait.outcome() is True
    assert inbox.snapshot("s") == [entry]


def test_requeue_front_of_another_sessions_entry_does_not_wake(
    inbox: Inbox, wakes: list[str]
) -> None:
    wait = parked_wait_sync(inbox, "s", None)
    inbox.requeue_front(InboxEntry(1, "other", "k", "c", "src", 0))
    assert wakes == []
    assert inbox.waiter_count("s") == 1
    inbox.requeue_front(InboxEntry(1, "s", "k", "c", "src", 0))
    assert wait.outcome() is True


# -- Ended by clear_session ------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, 5])
def test_clear_session_wakes_parked_waits_reporting_nothing_pending(
    inbox: Inbox, timeout: float | None
) -> None:
    waits = [ThreadCall(inbox.wait_sync, "s", timeout) for _ in range(2)]
    wait_parked(inbox, "s", 2)
    assert inbox.clear_session("s") == 0
    assert [wait.outcome() for wait in waits] == [False, False]
    assert inbox.waiter_count("s") == 0


def test_clear_session_does_not_end_waits_on_other_sessions(inbox: Inbox, wakes: list[str]) -> None:
    wait = parked_wait_sync(inbox, "s", None)
    inbox.push("other", "k", "c", "src")
    inbox.clear_session("other")
    inbox.clear_session("")
    assert wakes == []
    assert inbox.waiter_count("s") == 1
    inbox.push("s", "k", "c", "src")
    assert wait.outcome() is True


def test_wait_after_clear_session_works_as_before(inbox: Inbox) -> None:
    first = parked_wait_sync(inbox, "s", None)
    inbox.clear_session("s")
    assert first.outcome() is False
    second = parked_wait_sync(inbox, "s", None)
    assert inbox.push("s", "k", "c", "src").sequence == 1
    assert second.outcome() is True


# -- Timeouts on a ManualClock ---------------------------------------------------------------------


def test_timeout_elapses_only_when_the_clock_passes_the_deadline(
    inbox: Inbox, clock: ManualClock
) -> None:
    wait = parked_wait_sync(inbox, "s", 5)
    clock.advance(4.999)
    assert inbox.waiter_count("s") == 1
    assert wait.is_alive()
    clock.advance(0.001)
    assert wait.outcome() is False
    assert inbox.waiter_count("s") == 0


def test_timeout_in_whole_and_fractional_seconds(inbox: Inbox, clock: ManualClock) -> None:
    wait = parked_wait_sync(inbox, "s", 0.25)
    clock.advance(0.249)
    assert inbox.waiter_count("s") == 1
    clock.advance(0.001)
    assert wait.outcome() is False


def test_setting_the_clock_back_does_not_end_a_wait_and_keeps_its_deadline(
    inbox: Inbox, clock: ManualClock
) -> None:
    wait = parked_wait_sync(inbox, "s", 5)  # deadline: 1_005_000 ms
    # ManualClock forgets a timer as it fires it, inside set()/advance(): "timers=1"
    # proves it has not fired, whatever the waiting thread has had time to do.
    moves: list[Callable[[], None]] = [
        lambda: clock.set(900_000),
        lambda: clock.set(0),
        lambda: clock.advance(1_004.999),
        lambda: clock.set(0),
        lambda: clock.set(1_004_999),
    ]
    for move in moves:
        move()
        assert inbox.waiter_count("s") == 1, repr(clock)
        assert "timers=1" in repr(clock)
        assert wait.is_alive()
    clock.set(1_005_000)
    assert wait.outcome() is False
    assert inbox.waiter_count("s") == 0
    assert "timers=0" in repr(clock)


def test_a_wait_started_after_the_clock_went_back_counts_from_the_new_now(
    inbox: Inbox, clock: ManualClock
) -> None:
    clock.set(10_000)
    wait = parked_wait_sync(inbox, "s", 2)
    clock.advance(1.999)
    assert inbox.waiter_count("s") == 1
    clock.advance(0.001)  # 12_000 ms: due, long before the old time line's 1_000_000
    assert wait.outcome() is False


def test_setting_the_clock_past_the_deadline_ends_the_wait(
    inbox: Inbox, clock: ManualClock
) -> None:
    wait = parked_wait_sync(inbox, "s", 5)
    clock.set(2_000_000)
    assert wait.outcome() is False


@pytest.mark.parametrize("timeout", [None, math.inf])
def test_wait_without_limit_outlasts_any_clock_advance(
    inbox: Inbox, clock: ManualClock, timeout: float | None
) -> None:
    wait = parked_wait_sync(inbox, "s", timeout)
    clock.advance(10**9)
    assert inbox.waiter_count("s") == 1
    assert wait.is_alive()
    inbox.push("s", "k", "c", "src")
    assert wait.outcome() is True


def test_huge_finite_timeout_on_a_manual_clock_answers_at_once_when_pending(
    inbox: Inbox,
) -> None:
    inbox.push("s", "k", "c", "src")
    assert inbox.wait_sync("s", 1e300) is True


def test_huge_finite_timeout_on_a_manual_clock_waits_for_a_push(
    inbox: Inbox, clock: ManualClock
) -> None:
    wait = parked_wait_sync(inbox, "s", 1e300)
    clock.advance(10**9)
    assert inbox.waiter_count("s") == 1
    inbox.push("s", "k", "c", "src")
    assert wait.outcome() is True


def test_each_wait_keeps_its_own_deadline(inbox: Inbox, clock: ManualClock) -> None:
    short = parked_wait_sync(inbox, "s", 1)
    long = ThreadCall(inbox.wait_sync, "s", 3)
    wait_parked(inbox, "s", 2)
    clock.advance(1)
    assert short.outcome() is False
    assert inbox.waiter_count("s") == 1
    assert long.is_alive()
    clock.advance(2)
    assert long.outcome() is False


def test_push_before_the_deadline_beats_the_timeout(inbox: Inbox, clock: ManualClock) -> None:
    wait = parked_wait_sync(inbox, "s", 5)
    clock.advance(4)
    inbox.push("s", "k", "c", "src")
    assert wait.outcome() is True
    clock.advance(10)  # the withdrawn deadline passes harmlessly
    assert inbox.pending_count("s") == 1
    assert inbox.waiter_count("s") == 0


def test_push_before_the_deadline_wins_even_if_the_clock_passes_it_before_the_waiter_looks(
    inbox: Inbox, clock: ManualClock
) -> None:
    # On virtual time the push comes first, so the answer is True, however late the
    # woken thread gets to run.
    wait = parked_wait_sync(inbox, "s", 5)
    inbox.push("s", "k", "c", "src")
    clock.advance(10)
    assert wait.outcome() is True
    assert inbox.pending_count("s") == 1


# -- Timeouts on other clocks ----------------------------------------------------------------------


@attrs.define
class RecordingClock:
    """A user-written Clock over a ManualClock that records the timeouts offered and withdrawn."""

    inner: ManualClock = attrs.field(factory=lambda: ManualClock(start_ms=7_000))
    offered: list[float] = attrs.field(factory=list)
    withdrawn: int = 0

    def now_ms(self) -> int:
        return self.inner.now_ms()

    def call_later(
        self, seconds: float, callback: Callable[[], object]
    ) -> Callable[[], object] | None:
        self.offered.append(seconds)
        cancel = self.inner.call_later(seconds, callback)
        assert cancel is not None

        def withdraw() -> None:
            self.withdrawn += 1
            cancel()

        return withdraw


def test_user_written_clock_keeps_the_timeout_of_wait_sync() -> None:
    clock = RecordingClock()
    inbox = Inbox(clock=clock)
    wait = parked_wait_sync(inbox, "s", 2.5)
    assert clock.offered == [2.5]
    clock.inner.advance(2.4)
    assert inbox.waiter_count("s") == 1
    clock.inner.advance(0.1)
    assert wait.outcome() is False


def test_wait_sync_withdraws_its_timeout_once_woken() -> None:
    clock = RecordingClock()
    inbox = Inbox(clock=clock)
    wait = parked_wait_sync(inbox, "s", 30)
    inbox.push("s", "k", "c", "src")
    assert wait.outcome() is True
    assert clock.offered == [30]
    assert clock.withdrawn == 1


def test_wait_without_limit_offers_the_clock_nothing() -> None:
    clock = RecordingClock()
    inbox = Inbox(clock=clock)
    wait = parked_wait_sync(inbox, "s", None)
    inbox.push("s", "k", "c", "src")
    assert wait.outcome() is True
    assert clock.offered == []


@attrs.define
class DecliningClock:
    """A user-written Clock that keeps no timeouts: waits fall back to real time."""

    def now_ms(self) -> int:
        return 0

    def call_later(
        self, seconds: float, callback: Callable[[], object]
    ) -> Callable[[], object] | None:
        return None


@pytest.mark.parametrize("clock", [DecliningClock(), SystemClock()], ids=["declining", "system"])
def test_real_time_timeout_when_the_clock_declines(clock: DecliningClock | SystemClock) -> None:
    inbox = Inbox(clock=clock)
    assert ThreadCall(inbox.wait_sync, "s", 0.02).outcome() is False  # nothing is ever pushed
    assert inbox.waiter_count("s") == 0


@pytest.mark.parametrize("timeout", [None, 30])
def test_push_wakes_a_wait_on_the_system_clock(timeout: float | None) -> None:
    inbox = Inbox()
    wait = parked_wait_sync(inbox, "s", timeout)
    inbox.push("s", "k", "c", "src")
    assert wait.outcome() is True


def test_clear_session_ends_a_wait_on_the_system_clock() -> None:
    inbox = Inbox()
    wait = parked_wait_sync(inbox, "s", 30)
    inbox.clear_session("s")
    assert wait.outcome() is False


# -- Invalid timeouts ------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [-1, -0.001, -math.inf, math.nan])
def test_negative_or_nan_timeout_raises_value_error(inbox: Inbox, timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        inbox.wait_sync("s", timeout)
    assert inbox.waiter_count("s") == 0


@pytest.mark.parametrize(
    ("timeout", "type_name"), [("5", "str"), (True, "bool"), ([1], "list"), (b"1", "bytes")]
)
def test_wrongly_typed_timeout_raises_type_error_naming_it(
    inbox: Inbox, timeout: object, type_name: str
) -> None:
    inbox.push("s", "k", "c", "src")
    with pytest.raises(TypeError, match=rf"^timeout must be .*, not {type_name}$"):
        inbox.wait_sync("s", timeout)  # type: ignore[arg-type]
    assert inbox.pending_count("s") == 1
    assert inbox.waiter_count("s") == 0


# -- Inside an event loop --------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [None, 5, 0.001, math.inf])
def test_wait_sync_in_an_event_loop_thread_raises_pointing_to_the_async_wait(
    backend: Backend, inbox: Inbox, clock: ManualClock, timeout: float | None
) -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match=r"would block the event loop.*await inbox\.wait"):
            inbox.wait_sync("s", timeout)
        assert inbox.waiter_count("s") == 0

    backend.run(main)
    assert inbox.waiter_count("s") == 0
    assert "timers=0" in repr(clock)


def test_wait_sync_with_zero_timeout_is_allowed_in_an_event_loop_thread(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        assert inbox.wait_sync("s", 0) is False
        inbox.push("s", "k", "c", "src")
        assert inbox.wait_sync("s", 0) is True

    backend.run(main)


def test_wait_sync_in_a_worker_thread_of_an_event_loop_is_woken_by_the_loop(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        async with backend.task_group() as group:
            handle = group.start_soon(backend.to_thread, inbox.wait_sync, "s", None)
            await backend.wait_thread_parked(inbox, "s")
            inbox.push("s", "k", "c", "loop")
        assert handle.result is True

    backend.run(main)


def test_wait_sync_still_works_in_a_thread_after_a_loop_ran_there(
    backend: Backend, inbox: Inbox
) -> None:
    async def main() -> None:
        pass

    def wait_after_loop() -> bool:
        backend.run(main)
        return inbox.wait_sync("s", None)

    wait = ThreadCall(wait_after_loop)
    wait_parked(inbox, "s", 1)
    inbox.push("s", "k", "c", "src")
    assert wait.outcome() is True
