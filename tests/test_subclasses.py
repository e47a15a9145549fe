"""Subclasses of str and int are taken as plain values; none of their own code runs under the lock.

The inbox keeps sessions in dicts and compares sequences under its lock; a
subclass's own ``__hash__`` or ``__eq__`` would be user code running there
(a re-entrant push would deadlock). Every call takes a plain copy first, and
entries hold plain copies, so such methods are never called at all: the
subclasses below fail the test if they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import pytest

from harn_inbox import Inbox, InboxEntry, InboxFull, ManualClock

if TYPE_CHECKING:
    from conftest import Backend


class OwnComparisonForbidden:
    """Mixed into a subclass of str or int: its own comparison and hashing must never run."""

    def __hash__(self) -> int:
        raise AssertionError(f"{type(self).__name__}.__hash__ ran")

    def __eq__(self, other: object) -> bool:
        raise AssertionError(f"{type(self).__name__}.__eq__ ran")

    def __ne__(self, other: object) -> bool:
        raise AssertionError(f"{type(self).__name__}.__ne__ ran")


class Unhashed(OwnComparisonForbidden, str):
    """A str subclass whose own comparison and hashing must never be used."""


class Uncompared(OwnComparisonForbidden, int):
    """An int subclass whose own comparison and hashing must never be used."""


@pytest.mark.parametrize(
    "inbox",
    [Inbox(), Inbox(clock=ManualClock(start_ms=5)), Inbox(max_pending=1, overflow="drop_oldest")],
    ids=["system clock", "manual clock", "bounded"],
)
def test_push_stores_plain_copies_of_str_subclasses(inbox: Inbox) -> None:
    entry = inbox.push(Unhashed("s"), Unhashed("k"), Unhashed("c"), Unhashed("src"))
    fields = (entry.session_id, entry.kind, entry.content, entry.source)
    assert [type(field) for field in fields] == [str] * 4
    assert fields == ("s", "k", "c", "src")
    assert inbox.drain("s") == [entry]


def test_every_session_call_takes_a_str_subclass_as_the_plain_session() -> None:
    inbox = Inbox()
    inbox.push("s", "k", "c", "src")
    calls: dict[str, Any] = {
        "pending_count": lambda sid: inbox.pending_count(sid),
        "snapshot": lambda sid: len(inbox.snapshot(sid)),
        "waiter_count": lambda sid: inbox.waiter_count(sid),
        "dropped": lambda sid: inbox.dropped(sid),
        "wait_sync": lambda sid: inbox.wait_sync(sid, timeout=0),
    }
    answers = {name: call(Unhashed("s")) for name, call in calls.items()}
    assert answers == {
        "pending_count": 1,
        "snapshot": 1,
        "waiter_count": 0,
        "dropped": 0,
        "wait_sync": True,
    }
    assert inbox.sessions() == ["s"]
    assert [type(sid) for sid in inbox.sessions()] == [str]
    [entry] = inbox.drain_where(Unhashed("s"), lambda entry: True)
    inbox.requeue_front(entry)
    assert inbox.drain(Unhashed("s")) == [entry]
    inbox.push("s", "k", "c", "src")
    assert inbox.clear_session(Unhashed("s")) == 1
    assert inbox.sessions() == []


def test_an_entry_holds_plain_copies_of_subclassed_fields() -> None:
    entry = InboxEntry(
        Uncompared(3), Unhashed("s"), Unhashed("k"), Unhashed("c"), Unhashed("src"), Uncompared(9)
    )
    assert [type(value) for value in entry.to_dict().values()] == [
        *(int, str, str, str, str, int),
        type(None),
        type(None),
    ]
    assert entry == InboxEntry(3, "s", "k", "c", "src", 9)
    rebuilt = InboxEntry.from_dict({**entry.to_dict(), "sequence": Uncompared(3)})
    assert type(rebuilt.sequence) is int


def test_requeue_of_an_entry_built_from_subclasses_compares_only_plain_values() -> None:
    inbox = Inbox()
    first = inbox.push("s", "k", "c", "src")
    inbox.push("s", "k", "c", "src")
    made = InboxEntry(Uncompared(7), Unhashed("s"), "k", "c", "src", Uncompared(0))
    inbox.requeue_front(made)  # compared with the pending entries, under the lock
    with pytest.raises(ValueError, match="already pending"):
        inbox.requeue_front(
            InboxEntry(
                Uncompared(first.sequence), Unhashed("s"), "k", "c", "src", Uncompared(first.ts_ms)
            )
        )
    assert [entry.sequence for entry in inbox.drain("s")] == [7, 1, 2]


def test_bool_is_still_not_an_int_field() -> None:
    with pytest.raises(TypeError, match="sequence must be int, not bool"):
        InboxEntry(True, "s", "k", "c", "src", 0)  # type: ignore[arg-type]


def test_async_waits_park_and_wake_on_the_plain_session(backend: Backend) -> None:
    inbox = Inbox()

    async def main() -> None:
        async def push_once_parked() -> None:
            await backend.until(lambda: inbox.waiter_count("s") == 1)
            inbox.push("s", "k", "c", "src")

        async with backend.task_group() as group:
            group.start_soon(push_once_parked)
            assert await inbox.wait(Unhashed("s")) is True
        async with backend.task_group() as group:
            group.start_soon(push_once_parked)
            [entry] = await inbox.wait_for(Unhashed("s"), lambda entry: entry.sequence == 2)
        assert entry.sequence == 2
        assert [entry.sequence for entry in inbox.drain("s")] == [1]
        channel = inbox.batches(Unhashed("s"))
        assert type(channel.session_id) is str
        async with backend.task_group() as group:
            group.start_soon(push_once_parked)
            assert [entry.sequence for entry in await channel.receive()] == [3]
        assert inbox.sessions() == []

    backend.run(main)


def test_a_bound_given_as_an_int_subclass_is_compared_as_a_plain_int() -> None:
    for overflow in ("reject", "drop_oldest"):
        inbox = Inbox(max_pending=Uncompared(1), overflow=Unhashed(overflow))  # type: ignore[arg-type]
        inbox.push("s", "k", "c", "src")
        if overflow == "reject":
            with pytest.raises(InboxFull):
                inbox.push("s", "k", "c", "src")
        else:
            assert inbox.push("s", "k", "c", "src").sequence == 2
            assert inbox.dropped("s") == 1


def test_an_overflow_name_is_read_once_as_a_plain_str() -> None:
    class Truthy:
        def __bool__(self) -> bool:
            raise AssertionError("a user object's __bool__ ran")

    class Overflow(str):
        def __eq__(self, other: object) -> Any:
            return Truthy()

        __hash__ = str.__hash__

    inbox = Inbox(max_pending=1, overflow=Overflow("drop_oldest"))  # type: ignore[arg-type]
    inbox.push("s", "k", "c", "src")
    assert inbox.push("s", "k", "c", "src").sequence == 2


def test_requeue_refuses_an_entry_built_with_attrs_validators_off() -> None:
    # Converters still run with attrs' validators off, but pass a non-str
    # through: such a field would be compared under the lock, by its own __eq__.
    class Compared:
        calls = 0

        def __eq__(self, other: object) -> bool:
            Compared.calls += 1
            return False

        __hash__ = object.__hash__

    inbox = Inbox()
    inbox.push("s", "k", "c", "src")
    before = inbox.snapshot("s")
    with attrs.validators.disabled():
        odd = InboxEntry(1, "s", "k", Compared(), "src", 0)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^entry must be an InboxEntry of plain str and int"):
            inbox.requeue_front(odd)
    with pytest.raises(TypeError, match=r"^content must be str, not Compared$"):
        inbox.requeue_front(odd)  # validators on: the plain copy is refused by name
    assert inbox.snapshot("s") == before
    assert Compared.calls == 0


@pytest.mark.parametrize(("sequence", "ts_ms"), [(0, 0), (2**64, 0), (-1, 0), (1, -5)], ids=str)
def test_requeue_refuses_an_entry_out_of_range_built_with_attrs_validators_off(
    sequence: int, ts_ms: int
) -> None:
    # Sequences are the runtime's u64 and never 0; a requeue must not hand out one that isn't.
    inbox = Inbox()
    inbox.push("s", "k", "c", "src")
    before = inbox.snapshot("s")
    with attrs.validators.disabled():
        odd = InboxEntry(sequence, "s", "k", "c", "src", ts_ms)
        with pytest.raises(ValueError, match=r"^entry must have a sequence in 1 \.\. 2\*\*64-1"):
            inbox.requeue_front(odd)
    assert inbox.snapshot("s") == before


def test_requeue_makes_a_plain_copy_of_an_entry_that_bypassed_the_converters() -> None:
    # Unpickling sets fields without InboxEntry's converters.
    odd = InboxEntry.__new__(InboxEntry)
    fields = {"sequence": Uncompared(5), "session_id": Unhashed("s"), "ts_ms": 0}
    odd.__setstate__({**fields, "kind": "k", "content": "c", "source": "src"})  # type: ignore[attr-defined]
    inbox = Inbox()
    inbox.push("s", "k", "c", "src")
    inbox.requeue_front(odd)
    with pytest.raises(ValueError, match="already pending"):
        inbox.requeue_front(odd)
    [requeued, pushed] = inbox.drain("s")
    assert (type(requeued.session_id), type(requeued.sequence)) == (str, int)
    assert requeued == InboxEntry(5, "s", "k", "c", "src", 0)
    assert pushed.sequence == 1
