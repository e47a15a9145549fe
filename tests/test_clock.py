"""Clocks: ManualClock's virtual time and timers, SystemClock, user-written clocks in an Inbox."""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING

import attrs
import pytest

from harn_inbox import Inbox, ManualClock, SystemClock

if TYPE_CHECKING:
    from collections.abc import Callable

    from harn_inbox import Clock

#: Seconds a call that must not deadlock may take before we call it hung (a guard, not a verdict).
HANG_GUARD = 30.0


def run_bounded(fn: Callable[[], object]) -> None:
    """Run *fn* in a daemon thread and fail (instead of hanging the suite) if it deadlocks."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_GUARD)
    assert not thread.is_alive(), "the call deadlocked"
    if errors:
        raise errors[0]


# -- ManualClock: reading and moving time --------------------------------------------------------


def test_manual_clock_starts_at_zero_by_default() -> None:
    assert ManualClock().now_ms() == 0


def test_manual_clock_starts_where_told() -> None:
    assert ManualClock(start_ms=1_000_000).now_ms() == 1_000_000


@pytest.mark.parametrize("start_ms", [1.5, "0", None, True])
def test_manual_clock_rejects_non_int_start(start_ms: object) -> None:
    with pytest.raises(TypeError, match=r"^start_ms must be int"):
        ManualClock(start_ms=start_ms)  # type: ignore[arg-type]


def test_manual_clock_rejects_negative_start() -> None:
    with pytest.raises(ValueError, match="start_ms"):
        ManualClock(start_ms=-1)


def test_advance_moves_time_forward_in_milliseconds() -> None:
    clock = ManualClock(start_ms=1_000)
    clock.advance(2.5)
    assert clock.now_ms() == 3_500
    clock.advance(0)
    assert clock.now_ms() == 3_500
    clock.advance(1)
    assert clock.now_ms() == 4_500


def test_sub_millisecond_advances_accumulate() -> None:
    clock = ManualClock()
    for _ in range(3):
        clock.advance(0.0004)
    assert clock.now_ms() == 1  # 1.2 ms elapsed: none of the fractions was lost
    clock.advance(0.0008)
    assert clock.now_ms() == 2


@pytest.mark.parametrize("seconds", [-0.001, -1, math.nan, math.inf, -math.inf])
def test_advance_rejects_negative_nan_and_infinite_steps(seconds: float) -> None:
    clock = ManualClock(start_ms=500)
    with pytest.raises(ValueError, match="seconds"):
        clock.advance(seconds)
    assert clock.now_ms() == 500


@pytest.mark.parametrize("seconds", ["1", None, True])
def test_advance_rejects_non_numbers(seconds: object) -> None:
    clock = ManualClock(start_ms=500)
    with pytest.raises(TypeError, match=r"^seconds must be"):
        clock.advance(seconds)  # type: ignore[arg-type]
    assert clock.now_ms() == 500


def test_set_jumps_forwards_and_backwards() -> None:
    clock = ManualClock(start_ms=10_000)
    clock.set(50_000)
    assert clock.now_ms() == 50_000
    clock.set(20)
    assert clock.now_ms() == 20
    clock.set(0)
    assert clock.now_ms() == 0


def test_set_rejects_negative_time() -> None:
    clock = ManualClock(start_ms=10)
    with pytest.raises(ValueError, match="ms"):
        clock.set(-1)
    assert clock.now_ms() == 10


@pytest.mark.parametrize("ms", [1.0, "5", None, False])
def test_set_rejects_non_int(ms: object) -> None:
    clock = ManualClock(start_ms=10)
    with pytest.raises(TypeError, match=r"^ms must be int"):
        clock.set(ms)  # type: ignore[arg-type]
    assert clock.now_ms() == 10


# -- ManualClock: timers -------------------------------------------------------------------------


def test_timer_fires_once_the_clock_reaches_its_deadline() -> None:
    clock = ManualClock(start_ms=1_000)
    fired: list[int] = []
    clock.call_later(5, lambda: fired.append(clock.now_ms()))
    clock.advance(4.999)
    assert fired == []
    clock.advance(0.001)
    assert fired == [6_000]
    clock.advance(100)
    assert fired == [6_000]  # once only


def test_timers_fire_in_deadline_order_not_registration_order() -> None:
    clock = ManualClock()
    fired: list[str] = []
    clock.call_later(3, lambda: fired.append("third"))
    clock.call_later(1, lambda: fired.append("first"))
    clock.call_later(2, lambda: fired.append("second"))
    clock.call_later(10, lambda: fired.append("later"))
    clock.advance(5)
    assert fired == ["first", "second", "third"]
    clock.advance(5)
    assert fired == ["first", "second", "third", "later"]


def test_cancelled_timer_never_fires_and_others_still_do() -> None:
    clock = ManualClock()
    fired: list[str] = []
    cancel_a = clock.call_later(1, lambda: fired.append("a"))
    clock.call_later(1, lambda: fired.append("b"))
    assert cancel_a is not None
    cancel_a()
    clock.advance(2)
    assert fired == ["b"]


def test_cancelling_a_fired_timer_is_harmless() -> None:
    clock = ManualClock()
    fired: list[str] = []
    cancel = clock.call_later(1, lambda: fired.append("a"))
    assert cancel is not None
    clock.advance(1)
    cancel()
    cancel()
    clock.advance(10)
    assert fired == ["a"]


def test_setting_time_backwards_fires_nothing_and_keeps_deadlines_on_the_time_line() -> None:
    clock = ManualClock(start_ms=100_000)
    fired: list[int] = []
    clock.call_later(5, lambda: fired.append(clock.now_ms()))  # deadline 105_000
    clock.set(90_000)
    assert fired == []
    clock.advance(14.999)  # 104_999: still before the deadline
    assert fired == []
    clock.advance(0.001)
    assert fired == [105_000]


def test_setting_time_forwards_past_a_deadline_fires_it() -> None:
    clock = ManualClock(start_ms=0)
    fired: list[str] = []
    clock.call_later(60, lambda: fired.append("due"))
    clock.set(59_999)
    assert fired == []
    clock.set(70_000)
    assert fired == ["due"]


def test_timer_callback_may_use_the_clock_without_deadlock() -> None:
    clock = ManualClock()
    fired: list[str] = []

    def callback() -> None:
        fired.append(f"first at {clock.now_ms()}")
        clock.call_later(1, lambda: fired.append("second"))

    clock.call_later(1, callback)
    run_bounded(lambda: clock.advance(1))
    assert fired == ["first at 1000"]
    run_bounded(lambda: clock.advance(1))
    assert fired == ["first at 1000", "second"]


def test_timers_registered_from_many_threads_each_fire_exactly_once() -> None:
    clock = ManualClock()
    fired: list[tuple[int, int]] = []
    barrier = threading.Barrier(8)

    def register(thread_id: int) -> None:
        barrier.wait()
        for i in range(200):
            clock.call_later(1 + i / 1000, lambda key=(thread_id, i): fired.append(key))

    threads = [threading.Thread(target=register, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    clock.advance(0.5)
    assert fired == []
    clock.advance(2)
    assert sorted(fired) == [(n, i) for n in range(8) for i in range(200)]
    clock.advance(10)
    assert len(fired) == 8 * 200


# -- SystemClock -----------------------------------------------------------------------------------


def test_system_clock_reads_wall_time_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    now = SystemClock().now_ms()
    after = time.time_ns() // 1_000_000
    assert type(now) is int
    assert before <= now <= after


def test_system_clock_declines_to_keep_timeouts() -> None:
    assert SystemClock().call_later(1.0, lambda: None) is None


def test_default_inbox_stamps_wall_time() -> None:
    inbox = Inbox()
    before = time.time_ns() // 1_000_000
    entry = inbox.push("s", "k", "c", "src")
    after = time.time_ns() // 1_000_000
    assert before <= entry.ts_ms <= after


def test_builtin_clocks_satisfy_the_clock_protocol() -> None:
    clocks: list[Clock] = [SystemClock(), ManualClock()]
    for clock in clocks:
        assert Inbox(clock=clock).push("s", "k", "c", "src").sequence == 1


# -- Clocks in an Inbox ----------------------------------------------------------------------------


def test_push_stamps_the_inbox_clock_time(inbox: Inbox, clock: ManualClock) -> None:
    first = inbox.push("s", "k", "c", "src")
    clock.advance(1.25)
    second = inbox.push("s", "k", "c", "src")
    clock.set(7)
    third = inbox.push("s", "k", "c", "src")
    assert [first.ts_ms, second.ts_ms, third.ts_ms] == [1_000_000, 1_001_250, 7]
    # Time went back; sequences do not.
    assert [first.sequence, second.sequence, third.sequence] == [1, 2, 3]


@attrs.define
class RecordingClock:
    """A user-written Clock: ManualClock underneath, every call recorded."""

    inner: ManualClock = attrs.field(factory=lambda: ManualClock(start_ms=42_000))
    reads: int = 0
    offered: list[float] = attrs.field(factory=list)

    def now_ms(self) -> int:
        self.reads += 1
        return self.inner.now_ms()

    def call_later(
        self, seconds: float, callback: Callable[[], object]
    ) -> Callable[[], object] | None:
        self.offered.append(seconds)
        return self.inner.call_later(seconds, callback)


def test_user_written_clock_stamps_entries() -> None:
    clock = RecordingClock()
    inbox = Inbox(clock=clock)
    first = inbox.push("s", "k", "c", "src")
    clock.inner.advance(3)
    second = inbox.push("s", "k", "c", "src")
    assert (first.ts_ms, second.ts_ms) == (42_000, 45_000)
    assert clock.reads == 2
    assert inbox.drain("s") == [first, second]


def test_user_written_clock_is_not_asked_to_time_a_look() -> None:
    clock = RecordingClock()
    inbox = Inbox(clock=clock)
    assert inbox.wait_sync("s", 0) is False
    inbox.push("s", "k", "c", "src")
    assert inbox.wait_sync("s", 0) is True
    assert clock.offered == []


@attrs.define
class ScriptedClock:
    """Answers now_ms() from a script, then 0; declines timeouts."""

    script: list[object]

    def now_ms(self) -> int:
        return self.script.pop(0) if self.script else 0  # type: ignore[return-value]

    def call_later(
        self, seconds: float, callback: Callable[[], object]
    ) -> Callable[[], object] | None:
        return None


@pytest.mark.parametrize("stamp", [1.5, "1000", None, True, 10**3 * 1.0])
def test_clock_returning_non_int_makes_push_raise_and_store_nothing(stamp: object) -> None:
    inbox = Inbox(clock=ScriptedClock([5, stamp]))
    first = inbox.push("s", "k", "c", "src")
    with pytest.raises(TypeError, match="now_ms"):
        inbox.push("s", "k", "bad", "src")
    assert inbox.snapshot("s") == [first]
    assert inbox.sessions() == ["s"]
    assert inbox.push("s", "k", "c", "src").sequence == 2  # the failed push used no number


def test_clock_returning_non_int_leaves_a_new_session_absent() -> None:
    inbox = Inbox(clock=ScriptedClock([0.5]))
    with pytest.raises(TypeError, match="now_ms"):
        inbox.push("fresh", "k", "c", "src")
    assert inbox.sessions() == []
    assert inbox.pending_count("fresh") == 0
    assert inbox.push("fresh", "k", "c", "src").sequence == 1


class BrokenClock:
    def now_ms(self) -> int:
        raise OSError("clock source unavailable")

    def call_later(
        self, seconds: float, callback: Callable[[], object]
    ) -> Callable[[], object] | None:
        return None


def test_clock_raising_in_now_ms_propagates_and_stores_nothing() -> None:
    inbox = Inbox(clock=BrokenClock())
    with pytest.raises(OSError, match="unavailable"):
        inbox.push("s", "k", "c", "src")
    assert inbox.sessions() == []
    # The lock was released on the way out: the inbox still answers.
    run_bounded(lambda: inbox.pending_count("s"))


@pytest.mark.parametrize("clock", [object(), 5, "clock", ManualClock().now_ms])
def test_inbox_rejects_something_that_is_not_a_clock(clock: object) -> None:
    with pytest.raises(TypeError, match=r"^clock must be"):
        Inbox(clock=clock)  # type: ignore[arg-type]


# -- Huge but finite durations (see the report: these fail on round(seconds * 1e9) overflowing) --


def test_timer_with_a_huge_finite_delay_is_kept_and_never_fires_early() -> None:
    clock = ManualClock()
    fired: list[str] = []
    cancel = clock.call_later(1e300, lambda: fired.append("late"))
    clock.advance(10**9)
    assert fired == []
    assert cancel is not None
    cancel()


def test_advance_by_a_huge_finite_step_moves_time() -> None:
    clock = ManualClock()
    clock.advance(1e300)
    assert clock.now_ms() >= 10**302
