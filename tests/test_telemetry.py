"""Telemetry: one structlog event per operation with a logger, and silence without one."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from structlog.testing import capture_logs

from harn_inbox import Inbox, InboxEntry, ManualClock

if TYPE_CHECKING:
    from collections.abc import Iterator

#: How many looks `wait_parked` takes (yielding the GIL between them) before calling a thread lost.
PARK_LOOKS = 200_000
#: Seconds a thread that must finish may take before we call it hung (a guard, never a verdict).
HANG_GUARD = 30.0

Event = dict[str, Any]


def wait_parked(inbox: Inbox, session_id: str) -> None:
    for _ in range(PARK_LOOKS):
        if inbox.waiter_count(session_id):
            return
        time.sleep(0)  # only yields to the other threads
    raise AssertionError(f"no waiter ever parked on {session_id!r}")


class ThreadedWait:
    """``inbox.wait_sync(session_id, timeout)`` in a daemon thread, parked once constructed."""

    def __init__(self, inbox: Inbox, session_id: str, timeout: float | None) -> None:
        self.results: list[bool] = []
        self._thread = threading.Thread(
            target=lambda: self.results.append(inbox.wait_sync(session_id, timeout)),
            daemon=True,
        )
        self._thread.start()
        wait_parked(inbox, session_id)

    def outcome(self) -> bool:
        self._thread.join(HANG_GUARD)
        assert not self._thread.is_alive(), "wait_sync never returned"
        (result,) = self.results
        return result


@pytest.fixture
def logs() -> Iterator[list[Event]]:
    with capture_logs() as captured:
        yield captured


@pytest.fixture
def logged(clock: ManualClock) -> Iterator[Inbox]:
    with Inbox(clock=clock, logger=structlog.get_logger()) as inbox:
        yield inbox


def named(logs: list[Event], event: str) -> list[Event]:
    return [entry for entry in logs if entry["event"] == event]


def only(logs: list[Event], event: str) -> Event:
    (found,) = named(logs, event)
    return found


def has_fields(event: Event, **expected: object) -> bool:
    return all(key in event and event[key] == value for key, value in expected.items())


# -- Silence without a logger ----------------------------------------------------------------------


def test_inbox_without_logger_emits_nothing(
    inbox: Inbox, clock: ManualClock, logs: list[Event]
) -> None:
    entry = inbox.push("s", "k", "c", "src")
    inbox.push("s", "k2", "c", "src")
    inbox.pending_count("s")
    inbox.snapshot("s")
    inbox.sessions()
    inbox.waiter_count("s")
    inbox.drain_where("s", lambda queued: queued.kind == "k")
    inbox.requeue_front(entry)
    inbox.drain("s")
    inbox.wait_sync("s", 0)
    inbox.push("s", "k", "c", "src")
    inbox.wait_sync("s", 5)
    inbox.clear_session("s")
    timed_out = ThreadedWait(inbox, "s", 5)
    clock.advance(5)
    assert timed_out.outcome() is False
    cleared = ThreadedWait(inbox, "s", None)
    inbox.clear_session("s")
    assert cleared.outcome() is False
    assert logs == []


def test_only_the_inbox_with_a_logger_speaks(
    inbox: Inbox, logged: Inbox, logs: list[Event]
) -> None:
    inbox.push("quiet", "k", "c", "src")
    inbox.drain("quiet")
    logged.push("loud", "k", "c", "src")
    assert [event["session_id"] for event in logs] == ["loud"]


# -- One event per operation -----------------------------------------------------------------------


def test_push_emits_its_session_kind_source_and_sequence(logged: Inbox, logs: list[Event]) -> None:
    logged.push("s", "tool_result", "payload", "worker-1")
    logged.push("s", "mcp_progress", "payload", "worker-2")
    first, second = named(logs, "inbox.push")
    assert has_fields(first, session_id="s", kind="tool_result", source="worker-1", sequence=1)
    assert has_fields(second, session_id="s", kind="mcp_progress", source="worker-2", sequence=2)
    assert len(logs) == 2


def test_push_event_leaves_out_the_content(logged: Inbox, logs: list[Event]) -> None:
    logged.push("s", "k", "secret payload", "src")
    assert "secret payload" not in only(logs, "inbox.push").values()


def test_drain_emits_the_count_taken(logged: Inbox, logs: list[Event]) -> None:
    for _ in range(3):
        logged.push("s", "k", "c", "src")
    logged.drain("s")
    logged.drain("empty")
    full, empty = named(logs, "inbox.drain")
    assert has_fields(full, session_id="s", count=3)
    assert has_fields(empty, session_id="empty", count=0)


def test_drain_where_emits_how_many_were_taken(logged: Inbox, logs: list[Event]) -> None:
    for kind in "abab":
        logged.push("s", kind, "c", "src")
    logged.drain_where("s", lambda entry: entry.kind == "a")
    logged.drain_where("s", lambda entry: False)
    some, none = named(logs, "inbox.drain_where")
    assert has_fields(some, session_id="s", taken=2)
    assert has_fields(none, session_id="s", taken=0)


def test_requeue_front_emits_the_session_and_sequence(logged: Inbox, logs: list[Event]) -> None:
    logged.push("s", "k", "c", "src")
    (entry,) = logged.drain("s")
    logged.requeue_front(entry)
    logged.requeue_front(InboxEntry(9, "other", "k", "c", "src", 0))
    mine, other = named(logs, "inbox.requeue_front")
    assert has_fields(mine, session_id="s", sequence=1)
    assert has_fields(other, session_id="other", sequence=9)


def test_clear_session_emits_how_many_were_dropped(logged: Inbox, logs: list[Event]) -> None:
    logged.push("s", "k", "c", "src")
    logged.push("s", "k", "c", "src")
    logged.clear_session("s")
    logged.clear_session("s")
    first, second = named(logs, "inbox.clear_session")
    assert has_fields(first, session_id="s", dropped=2)
    assert has_fields(second, session_id="s", dropped=0)


def test_looking_emits_nothing(logged: Inbox, logs: list[Event]) -> None:
    logged.push("s", "k", "c", "src")
    logs.clear()
    logged.pending_count("s")
    logged.snapshot("s")
    logged.sessions()
    logged.waiter_count("s")
    assert logs == []


# -- inbox.wait outcomes ---------------------------------------------------------------------------

WAIT_KEYS = {"session_id", "outcome", "waited_ms", "timeout"}


def test_wait_on_pending_entry_reports_pending_at_once(logged: Inbox, logs: list[Event]) -> None:
    logged.push("s", "k", "c", "src")
    assert logged.wait_sync("s", 5) is True
    event = only(logs, "inbox.wait")
    assert event.keys() >= WAIT_KEYS
    assert has_fields(event, session_id="s", outcome="pending", waited_ms=0, timeout=5)


def test_wait_woken_by_push_reports_pending_and_the_time_waited(
    logged: Inbox, clock: ManualClock, logs: list[Event]
) -> None:
    wait = ThreadedWait(logged, "s", None)
    clock.advance(1.5)
    logged.push("s", "k", "c", "src")
    assert wait.outcome() is True
    event = only(logs, "inbox.wait")
    assert has_fields(event, session_id="s", outcome="pending", waited_ms=1_500, timeout=None)


def test_wait_that_times_out_reports_timeout(
    logged: Inbox, clock: ManualClock, logs: list[Event]
) -> None:
    wait = ThreadedWait(logged, "s", 5)
    clock.advance(5)
    assert wait.outcome() is False
    event = only(logs, "inbox.wait")
    assert has_fields(event, session_id="s", outcome="timeout", waited_ms=5_000, timeout=5)


def test_wait_ended_by_clear_session_reports_cleared(
    logged: Inbox, clock: ManualClock, logs: list[Event]
) -> None:
    wait = ThreadedWait(logged, "s", 30)
    clock.advance(2)
    logged.clear_session("s")
    assert wait.outcome() is False
    event = only(logs, "inbox.wait")
    assert has_fields(event, session_id="s", outcome="cleared", waited_ms=2_000, timeout=30)


def test_wait_ended_by_close_reports_closed(logged: Inbox, logs: list[Event]) -> None:
    wait = ThreadedWait(logged, "s", None)
    logged.close()
    assert wait.outcome() is False
    assert has_fields(only(logs, "inbox.wait"), session_id="s", outcome="closed")


def test_look_at_an_empty_session_reports_empty(logged: Inbox, logs: list[Event]) -> None:
    assert logged.wait_sync("s", 0) is False
    event = only(logs, "inbox.wait")
    assert event.keys() >= WAIT_KEYS
    assert has_fields(event, session_id="s", outcome="empty", waited_ms=0, timeout=0)


def test_rejected_wait_emits_nothing(logged: Inbox, logs: list[Event]) -> None:
    with pytest.raises(ValueError, match="timeout"):
        logged.wait_sync("s", -1)
    with pytest.raises(TypeError, match="session_id"):
        logged.wait_sync(3, 0)  # type: ignore[arg-type]
    assert logs == []
