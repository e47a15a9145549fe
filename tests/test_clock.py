"""Clocks: ManualClock's virtual time and timers, SystemClock, user-written clocks in an Inbox."""

from __future__ import annotations

import math
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from _support import ThreadCall, join_all, run_bounded

from harn_inbox import Inbox, ManualClock, SystemClock

if TYPE_CHECKING:
    from collections.abc import Callable

    from harn_inbox import Clock


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
    run_bounded(clock.advance, 1)
    assert fired == ["first at 1000"]
    run_bounded(clock.advance, 1)
    assert fired == ["first at 1000", "second"]


def test_timers_registered_from_many_threads_each_fire_exactly_once() -> None:
    clock = ManualClock()
    fired: list[tuple[int, int]] = []
    barrier = threading.Barrier(8)

    def register(thread_id: int) -> None:
        barrier.wait()
        for i in range(200):
            clock.call_later(1 + i / 1000, lambda key=(thread_id, i): fired.append(key))

    join_all([ThreadCall(register, n) for n in range(8)])
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


def test_push_stamps_the_inbox_clock_time_and_sequences_rise_when_it_goes_back(
    inbox: Inbox, clock: ManualClock
) -> None:
    stamps = [1_000_000]
    entries = [inbox.push("s", "k", "c", "src")]
    for move, now in [
        (lambda: clock.advance(1.25), 1_001_250),
        (lambda: clock.set(400_000), 400_000),
        (lambda: clock.set(0), 0),
        (lambda: clock.advance(2), 2_000),
    ]:
        move()
        stamps.append(now)
        entries.append(inbox.push("s", "k", "c", "src"))
    assert [entry.ts_ms for entry in entries] == stamps
    # Time went back; sequences do not, and the order is the order of pushes.
    assert [entry.sequence for entry in entries] == [1, 2, 3, 4, 5]
    assert inbox.drain("s") == entries


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


class MisbehavingClock:
    """A `Clock` whose now_ms() answers what it is told: a stamp, garbage, or an error to raise."""

    def __init__(self) -> None:
        self.answer: Any = 1_000

    def now_ms(self) -> Any:
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    def call_later(self, seconds: float, callback: Callable[[], object]) -> None:
        return None


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (-1, ValueError),
        (1.5, TypeError),
        ("1000", TypeError),
        (None, TypeError),
        (True, TypeError),
        (10**3 * 1.0, TypeError),
        (OSError("clock source unavailable"), OSError),
    ],
    ids=repr,
)
def test_a_misbehaving_clock_makes_push_raise_and_store_nothing(
    answer: object, error: type[Exception]
) -> None:
    clock = MisbehavingClock()
    inbox = Inbox(clock=clock)
    first = inbox.push("s", "k", "c", "src")
    clock.answer = answer
    for session_id in ("s", "fresh"):
        with pytest.raises(error) as caught:
            inbox.push(session_id, "k", "bad", "src")
        if error is not OSError:  # the clock's own error passes through as it is
            assert "clock.now_ms()" in str(caught.value)
    assert inbox.snapshot("s") == [first]
    assert inbox.sessions() == ["s"]  # no record for the fresh session
    assert inbox.pending_count("fresh") == 0
    assert run_bounded(inbox.pending_count, "s") == 1  # no lock was left held
    clock.answer = 2_000
    assert inbox.push("s", "k", "c", "src").sequence == 2, "the refused push used no number"
    assert inbox.push("fresh", "k", "c", "src").sequence == 1


@pytest.mark.parametrize("clock", [object(), 5, "clock", ManualClock().now_ms])
def test_inbox_rejects_something_that_is_not_a_clock(clock: object) -> None:
    with pytest.raises(TypeError, match=r"^clock must be"):
        Inbox(clock=clock)  # type: ignore[arg-type]


# -- Huge but finite durations (round(seconds * 1e9) must not overflow) --------------------------


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
