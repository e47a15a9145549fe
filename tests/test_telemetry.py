"""Telemetry: one structlog event per operation with a logger, and silence without one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import structlog
from _support import events, parked_wait_sync
from structlog.testing import capture_logs

from harn_inbox import Inbox, InboxEntry, ManualClock

if TYPE_CHECKING:
    from conftest import Backend

Event = dict[str, Any]


def only(logs: list[Event], event: str) -> Event:
    (found,) = events(logs, event)
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
    timed_out = parked_wait_sync(inbox, "s", 5)
    clock.advance(5)
    assert timed_out.outcome() is False
    cleared = parked_wait_sync(inbox, "s", None)
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
    first, second = events(logs, "inbox.push")
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
    full, empty = events(logs, "inbox.drain")
    assert has_fields(full, session_id="s", count=3)
    assert has_fields(empty, session_id="empty", count=0)


def test_drain_where_emits_how_many_were_taken(logged: Inbox, logs: list[Event]) -> None:
    for kind in "abab":
        logged.push("s", kind, "c", "src")
    logged.drain_where("s", lambda entry: entry.kind == "a")
    logged.drain_where("s", lambda entry: False)
    some, none = events(logs, "inbox.drain_where")
    assert has_fields(some, session_id="s", taken=2)
    assert has_fields(none, session_id="s", taken=0)


def test_requeue_front_emits_the_session_and_sequence(logged: Inbox, logs: list[Event]) -> None:
    logged.push("s", "k", "c", "src")
    (entry,) = logged.drain("s")
    logged.requeue_front(entry)
    logged.requeue_front(InboxEntry(9, "other", "k", "c", "src", 0))
    mine, other = events(logs, "inbox.requeue_front")
    assert has_fields(mine, session_id="s", sequence=1)
    assert has_fields(other, session_id="other", sequence=9)


def test_clear_session_emits_how_many_were_dropped(logged: Inbox, logs: list[Event]) -> None:
    logged.push("s", "k", "c", "src")
    logged.push("s", "k", "c", "src")
    logged.clear_session("s")
    logged.clear_session("s")
    first, second = events(logs, "inbox.clear_session")
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
    wait = parked_wait_sync(logged, "s", None)
    clock.advance(1.5)
    logged.push("s", "k", "c", "src")
    assert wait.outcome() is True
    event = only(logs, "inbox.wait")
    assert has_fields(event, session_id="s", outcome="pending", waited_ms=1_500, timeout=None)


def test_wait_that_times_out_reports_timeout(
    logged: Inbox, clock: ManualClock, logs: list[Event]
) -> None:
    wait = parked_wait_sync(logged, "s", 5)
    clock.advance(5)
    assert wait.outcome() is False
    event = only(logs, "inbox.wait")
    assert has_fields(event, session_id="s", outcome="timeout", waited_ms=5_000, timeout=5)


def test_wait_ended_by_clear_session_reports_cleared(
    logged: Inbox, clock: ManualClock, logs: list[Event]
) -> None:
    wait = parked_wait_sync(logged, "s", 30)
    clock.advance(2)
    logged.clear_session("s")
    assert wait.outcome() is False
    event = only(logs, "inbox.wait")
    assert has_fields(event, session_id="s", outcome="cleared", waited_ms=2_000, timeout=30)


def test_wait_ended_by_close_reports_closed(logged: Inbox, logs: list[Event]) -> None:
    wait = parked_wait_sync(logged, "s", None)
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


# -- A logger that fails ---------------------------------------------------------------------------


class BrokenLogger:
    """Raises on every event, as a PrintLogger on a closed stream does at shutdown."""

    def _fail(self, event: str, **fields: Any) -> None:
        raise ValueError("I/O operation on closed file")

    debug = info = warning = _fail


def test_a_raising_logger_loses_no_entry_and_fails_no_operation(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox(clock=clock, logger=BrokenLogger())  # type: ignore[arg-type]
    first = inbox.push("s", "k", "#1", "t")  # accepted: must not look refused
    second = inbox.push("s", "k", "#2", "t")
    assert inbox.drain_where("s", lambda entry: entry.content == "#1") == [first]
    assert inbox.wait_sync("s", 0) is True
    assert inbox.drain("s") == [second]
    inbox.requeue_front(second)
    assert inbox.clear_session("s") == 1
    inbox.close()
    assert "logging inbox.drain failed" in caplog.text


def test_a_raising_logger_does_not_lose_what_an_async_wait_took(
    backend: Backend, clock: ManualClock
) -> None:
    inbox = Inbox(clock=clock, logger=BrokenLogger())  # type: ignore[arg-type]
    entry = inbox.push("s", "k", "c", "t")

    async def main() -> list[InboxEntry]:
        return await inbox.wait_for("s", lambda e: True)

    assert backend.run(main) == [entry]


def test_a_structlog_logger_receives_the_events() -> None:
    with capture_logs() as logs:
        Inbox(logger=structlog.get_logger()).push("s", "k", "c", "t")
    assert [log["event"] for log in logs] == ["inbox.push"]
