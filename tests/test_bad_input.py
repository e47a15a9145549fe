"""Garbage in: every public call, fed arbitrary Python values, refuses clearly and changes nothing.

For each call, hypothesis draws every argument from a mix of valid values and
garbage (ints, floats with NaN and infinities, bools, None, bytes, containers,
str/int/float subclasses, decimals, fractions, odd objects). A small oracle says
which arguments are invalid, and so whether the call must be refused:

- a refused call raises only a documented exception (`TypeError` for a wrong
  type, `ValueError` for a wrong value, `InboxClosed`, `InboxFull`), its
  message names an offending argument, and the inbox (sessions, snapshots,
  pending counts, waiter counts, drop counts, the clock) is unchanged;
- a call with only valid arguments is accepted: no garbage slips through.

Documented acceptance: ``str`` subclasses are text; ``bool`` is never an
``int``; a timeout is ``None`` or a non-negative int or float, ``inf`` included.
"""

from __future__ import annotations

import asyncio
import enum
import math
import re
import sys
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

import attrs
import hypothesis
import pytest
import trio
from _support import parked_wait_sync
from hypothesis import given
from hypothesis import strategies as st

from harn_inbox import (
    Batches,
    Inbox,
    InboxClosed,
    InboxEntry,
    InboxFull,
    ManualClock,
    SessionStatistics,
    SystemClock,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from conftest import Backend

MAX_SEQUENCE = 2**64 - 1
FIELDS = ("sequence", "session_id", "kind", "content", "source", "ts_ms")
ALL_FIELDS = (*FIELDS, "payload", "delivery")


# -- Values ----------------------------------------------------------------------------------------


class Text(str):
    """A str subclass: accepted wherever text is."""


class Whole(int):
    """An int subclass (not bool): accepted wherever an int is."""


class Real(float):
    """A float subclass: accepted wherever a float is."""


class LyingReal(float):
    """A float subclass whose ``__float__`` answers another number: its value is what counts."""

    def __float__(self) -> float:
        return -5.0


class LyingWhole(int):
    """An int subclass whose ``__float__`` answers NaN: its value is what counts."""

    def __float__(self) -> float:
        return math.nan


class Colour(enum.IntEnum):
    RED = 1


class Strange:
    """An object with no useful protocol at all."""

    def __repr__(self) -> str:
        return "<strange>"


texts = st.one_of(
    st.sampled_from(["a", "b", "", "s"]),
    st.text(max_size=6),
    st.builds(Text, st.text(max_size=6)),
)
#: The mistakes a caller is most likely to make, drawn often.
likely_mistakes = st.sampled_from(
    [None, b"a", bytearray(b"a"), 1, 0, -1, 1.0, True, False, ["a"], ("a",), {"a": 1}, math.nan]
)
garbage = st.one_of(
    likely_mistakes,
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**64, 2**1024, 10**400, -(10**400)]),
    st.builds(Whole, st.integers(min_value=-5, max_value=10**6)),
    st.floats(),
    st.builds(Real, st.floats(min_value=-10.0, max_value=1e6)),
    st.builds(LyingReal, st.floats(min_value=-10.0, max_value=1e6)),
    st.builds(LyingWhole, st.integers(min_value=-5, max_value=10**6)),
    st.sampled_from([math.inf, -math.inf, -0.0, -1e-300, 1e300, Colour.RED]),
    st.binary(max_size=6),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    st.frozensets(st.integers(), max_size=2),
    st.complex_numbers(max_magnitude=1e6),
    st.fractions(),
    st.decimals(allow_nan=True),
    st.sampled_from(
        [Strange(), object(), Ellipsis, NotImplemented, Decimal("inf"), Fraction(1, 3)]
    ),
    st.sampled_from([int, str, float, InboxEntry, Inbox]),  # classes, callable ones at that
    st.from_type(object),
)
non_callable_garbage = garbage.filter(lambda value: not callable(value))
numbers_of_seconds = st.one_of(
    st.none(),
    st.sampled_from([0, 0.0, 1, 2.5, math.inf, 1e300, 2**1024, Whole(3), Real(0.5), Colour.RED]),
    st.sampled_from([LyingReal(0.5), LyingWhole(3)]),
    st.floats(min_value=0.0, max_value=1e6),
)
predicates = st.sampled_from(
    [lambda entry: True, lambda entry: False, lambda entry: entry.sequence % 2 == 0]
)

Spec = st.SearchStrategy[Any] | tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]


def arguments(**specs: Spec) -> st.SearchStrategy[dict[str, Any]]:
    """Valid arguments with garbage in a chosen few places: none, exactly one, or any subset.

    Each spec is the valid strategy, or a (valid, garbage) pair when the
    argument needs a garbage of its own (a predicate must not get a callable).
    """
    names = list(specs)
    pairs = {
        name: spec if isinstance(spec, tuple) else (spec, garbage) for name, spec in specs.items()
    }

    @st.composite
    def draw_arguments(draw: st.DrawFn) -> dict[str, Any]:
        spoiled = draw(
            st.one_of(
                st.just(frozenset[str]()),
                st.sampled_from(names).map(lambda name: frozenset([name])),
                st.frozensets(st.sampled_from(names)),
            )
        )
        return {name: draw(bad if name in spoiled else good) for name, (good, bad) in pairs.items()}

    return draw_arguments()


# -- The oracle ------------------------------------------------------------------------------------

Fault = Literal["type", "value", "either"]


def text_fault(value: object) -> Fault | None:
    return None if isinstance(value, str) else "type"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def timeout_fault(value: object) -> Fault | None:
    if value is None:
        return None
    if not _is_number(value):
        return "type"
    assert isinstance(value, (int, float))
    return "value" if value != value or value < 0 else None  # value != value: NaN


def predicate_fault(value: object) -> Fault | None:
    return None if callable(value) else "type"


def _int_fault(value: object, low: int, high: float = math.inf) -> Fault | None:
    if not isinstance(value, int) or isinstance(value, bool):
        return "type"
    return None if low <= value <= high else "value"


def _faults(**faults: Fault | None) -> dict[str, Fault]:
    return {name: fault for name, fault in faults.items() if fault is not None}


# -- Observing an inbox ----------------------------------------------------------------------------


def observe(inbox: Inbox, sessions: list[Any], clock: ManualClock | None = None) -> Any:
    """Everything a caller can see of the inbox, for the sessions of interest."""
    looked_at = sorted({*inbox.sessions(), *(s for s in sessions if isinstance(s, str))})
    return (
        inbox.closed,
        sorted(inbox.sessions()),
        [
            (
                inbox.snapshot(sid),
                inbox.pending_count(sid),
                inbox.waiter_count(sid),
                inbox.dropped(sid),
            )
            for sid in looked_at
        ],
        repr(inbox),
        None if clock is None else repr(clock),
    )


REFUSED = object()


def call_and_judge(
    call: Callable[[], Any],
    faults: Mapping[str, Fault],
    observed: Callable[[], Any],
    *,
    refusals: tuple[type[Exception], ...] = (),
) -> Any:
    """Run *call*; check it against the oracle's *faults*. Returns its result, or REFUSED.

    *refusals* are the state-dependent refusals the caller expects (InboxClosed,
    InboxFull) when every argument is valid. Any other exception escapes and
    fails the test: only documented exceptions may come out.
    """
    before = observed()
    outcome = _outcome(call)
    if not isinstance(outcome, Refusal):
        assert not faults, f"accepted invalid {sorted(faults)}: returned {outcome!r}"
        assert not refusals, f"expected a refusal {refusals}, got {outcome!r}"
        return outcome
    error = outcome.error
    if isinstance(error, (InboxClosed, InboxFull)):
        assert not faults, f"{error!r} although {sorted(faults)} are invalid"
        assert isinstance(error, refusals), f"unexpected {error!r}"
    else:
        assert faults, f"valid arguments refused: {error!r}"
        named = [name for name in faults if re.search(rf"\b{re.escape(name)}\b", str(error))]
        assert named, f"{error!r} names none of the offending arguments {sorted(faults)}"
        expected: dict[Fault, tuple[type[Exception], ...]] = {
            "type": (TypeError,),
            "value": (ValueError,),
            "either": (TypeError, ValueError),
        }
        assert any(isinstance(error, expected[faults[name]]) for name in named), (
            f"{type(error).__name__} for {named} ({[faults[name] for name in named]})"
        )
    assert observed() == before, f"refused {error!r}, but the inbox changed"
    return REFUSED


@attrs.frozen
class Refusal:
    """A documented exception a call raised (anything else is left to escape)."""

    error: Exception


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (TypeError, ValueError, InboxClosed, InboxFull) as error:
        return Refusal(error)


# -- Inboxes to feed -------------------------------------------------------------------------------

Setup = Literal["unbounded", "reject-full", "drop_oldest-full", "closed"]
SETUPS: list[Setup] = ["unbounded", "reject-full", "drop_oldest-full", "closed"]


def seeded_inbox(setup: Setup, clock: ManualClock | None = None) -> Inbox:
    """An inbox with history: sessions "a" (3 pending) and "b" (1), drops, a requeue."""
    clock = clock or ManualClock(1_000_000)
    if setup == "reject-full":
        inbox = Inbox(clock=clock, max_pending=3, overflow="reject")
    elif setup == "drop_oldest-full":
        inbox = Inbox(clock=clock, max_pending=3, overflow="drop_oldest")
    else:
        inbox = Inbox(clock=clock)
    for n in range(4 if setup == "drop_oldest-full" else 3):
        inbox.push("a", "k", f"#{n}", "seed")
    [taken] = inbox.drain_where("a", lambda entry: entry.content == "#1")
    inbox.requeue_front(taken)
    inbox.push("b", "k", "#0", "seed")
    if setup == "closed":
        inbox.close()
    return inbox


def _full(inbox: Inbox, setup: Setup, session_id: str) -> bool:
    return setup == "reject-full" and inbox.pending_count(session_id) >= 3


def _run_async(framework: str, fn: Callable[[], Awaitable[Any]]) -> Any:
    if framework == "trio":
        return trio.run(fn)
    return asyncio.run(_awaited(fn))


async def _awaited(fn: Callable[[], Awaitable[Any]]) -> Any:
    return await fn()


frameworks = st.sampled_from(["trio", "asyncio"])


# -- Construction ----------------------------------------------------------------------------------


def clock_fault(value: object) -> Fault | None:
    if value is None or isinstance(value, (ManualClock, SystemClock)):
        return None
    return "type"


def _overflow_fault(value: object) -> Fault | None:
    if not isinstance(value, str):
        return "type"
    return None if value in ("reject", "drop_oldest") else "value"


@given(
    args=arguments(
        clock=st.sampled_from([None, ManualClock(5), SystemClock()]),
        max_pending=st.one_of(st.none(), st.integers(min_value=1, max_value=5), st.just(Whole(2))),
        overflow=st.sampled_from(["reject", "drop_oldest", Text("reject")]),
    )
)
def test_inbox_constructor_refuses_garbage(args: dict[str, Any]) -> None:
    clock, max_pending, overflow = args["clock"], args["max_pending"], args["overflow"]
    # Objects with a callable now_ms (clock classes) have a test of their own below.
    hypothesis.assume(not callable(getattr(clock, "now_ms", None)) or clock_fault(clock) is None)
    faults = _faults(
        clock=clock_fault(clock),
        max_pending=None if max_pending is None else _int_fault(max_pending, 1),
        overflow=_overflow_fault(overflow),
    )
    inbox = call_and_judge(
        lambda: Inbox(clock=clock, max_pending=max_pending, overflow=overflow),
        faults,
        lambda: None,
    )
    if inbox is not REFUSED:  # what it accepted, it can work with
        entry = inbox.push("s", "k", "c", "src")
        assert inbox.wait_sync("s", 0) is True
        assert inbox.drain("s") == [entry]
        inbox.close()


@pytest.mark.parametrize("logger", [42, "structlog", object(), [], print])
def test_inbox_constructor_refuses_a_logger_it_cannot_log_to(logger: Any) -> None:
    """A logger without debug/info/warning methods must be refused up front.

    Otherwise the inbox accepts it and then every operation fails *after* it
    took effect: push stores the entry and then raises AttributeError, so the
    producer believes it was refused and may push it again.
    """
    made = _outcome(lambda: Inbox(logger=logger))
    if isinstance(made, Inbox):
        pushed = _outcome_of_any(lambda: made.push("s", "k", "c", "src"))
        pytest.fail(
            f"Inbox(logger={logger!r}) was accepted; push then gave {pushed!r} "
            f"with {made.pending_count('s')} entry stored"
        )
    assert isinstance(made.error, TypeError)
    assert re.search(r"\blogger\b", str(made.error))


@pytest.mark.parametrize("clock_class", [ManualClock, SystemClock])
def test_inbox_constructor_refuses_a_clock_class_instead_of_a_clock(clock_class: type) -> None:
    """``Inbox(clock=ManualClock)`` (the class, a common slip) must be refused, naming ``clock``.

    It has callable ``now_ms``/``call_later`` attributes, so the duck-typed
    check lets it in, and every push then raises a TypeError about a missing
    ``self`` that names none of push's arguments.
    """
    made = _outcome(lambda: Inbox(clock=clock_class))  # type: ignore[arg-type]
    if isinstance(made, Inbox):
        pushed = _outcome_of_any(lambda: made.push("s", "k", "c", "src"))
        pytest.fail(f"Inbox(clock={clock_class.__name__}) was accepted; push then gave {pushed!r}")
    assert isinstance(made.error, TypeError)
    assert re.search(r"\bclock\b", str(made.error))


def _outcome_of_any(call: Callable[[], Any]) -> Any:
    """The result of *call*, or whatever it raised (for a failure message)."""
    try:
        return call()
    except Exception as error:  # reported in the failure message, not handled
        return error


# -- Producing and consuming -----------------------------------------------------------------------


@given(
    setup=st.sampled_from(SETUPS),
    args=arguments(session_id=texts, kind=texts, content=texts, source=texts),
)
def test_push_refuses_garbage_and_stores_nothing_when_it_refuses(
    setup: Setup, args: dict[str, Any]
) -> None:
    session_id, kind, content, source = args.values()
    inbox = seeded_inbox(setup)
    faults = _faults(
        session_id=text_fault(session_id),
        kind=text_fault(kind),
        content=text_fault(content),
        source=text_fault(source),
    )
    refusals: tuple[type[Exception], ...] = ()
    if not faults and setup == "closed":
        refusals = (InboxClosed,)
    elif not faults and _full(inbox, setup, session_id):
        refusals = (InboxFull,)
    previous = inbox.snapshot(session_id) if isinstance(session_id, str) else []
    entry = call_and_judge(
        lambda: inbox.push(session_id, kind, content, source),
        faults,
        lambda: observe(inbox, [session_id]),
        refusals=refusals,
    )
    if entry is REFUSED:
        return
    assert type(entry) is InboxEntry
    assert (entry.session_id, entry.kind, entry.content, entry.source) == (
        session_id,
        kind,
        content,
        source,
    )
    assert inbox.snapshot(session_id)[-1] == entry
    last = max((e.sequence for e in previous), default=0)
    assert entry.sequence > last


@given(
    setup=st.sampled_from(SETUPS),
    method=st.sampled_from(
        [
            "drain",
            "pending_count",
            "snapshot",
            "clear_session",
            "waiter_count",
            "dropped",
            "statistics",
        ]
    ),
    args=arguments(session_id=texts),
)
def test_single_session_calls_refuse_a_session_id_that_is_not_text(
    setup: Setup, method: str, args: dict[str, Any]
) -> None:
    session_id = args["session_id"]
    inbox = seeded_inbox(setup)
    result = call_and_judge(
        lambda: getattr(inbox, method)(session_id),
        _faults(session_id=text_fault(session_id)),
        lambda: observe(inbox, [session_id]),
    )
    if result is not REFUSED:
        expected = {"drain": list, "snapshot": list, "statistics": SessionStatistics}
        assert isinstance(result, expected.get(method, int))


@given(
    setup=st.sampled_from(SETUPS),
    args=arguments(session_id=texts, predicate=(predicates, non_callable_garbage)),
)
def test_drain_where_refuses_garbage(setup: Setup, args: dict[str, Any]) -> None:
    session_id, predicate = args["session_id"], args["predicate"]
    inbox = seeded_inbox(setup)
    result = call_and_judge(
        lambda: inbox.drain_where(session_id, predicate),
        _faults(session_id=text_fault(session_id), predicate=predicate_fault(predicate)),
        lambda: observe(inbox, [session_id]),
    )
    if result is not REFUSED:
        assert all(type(entry) is InboxEntry for entry in result)


class EntryLookalike:
    """Has every field of an InboxEntry, and is not one."""

    def __init__(self, entry: InboxEntry) -> None:
        for name in FIELDS:
            setattr(self, name, getattr(entry, name))


entries = st.builds(
    InboxEntry,
    sequence=st.integers(min_value=1, max_value=6),
    session_id=st.sampled_from(["a", "b", "c"]),
    kind=st.just("k"),
    content=st.text(max_size=3),
    source=st.just("src"),
    ts_ms=st.integers(min_value=0, max_value=10**13),
)
entry_arguments = st.one_of(
    entries,
    entries.map(InboxEntry.to_dict),
    entries.map(EntryLookalike),
    entries.map(lambda entry: tuple(entry.to_dict().values())),
    garbage,
)


@given(setup=st.sampled_from(SETUPS), entry=entry_arguments, data=st.data())
def test_requeue_front_refuses_what_is_not_an_entry_and_duplicates(
    setup: Setup, entry: Any, data: st.DataObject
) -> None:
    inbox = seeded_inbox(setup)
    if data.draw(st.booleans(), label="an equal copy of a pending entry"):
        pending = inbox.snapshot("a") + inbox.snapshot("b")
        entry = InboxEntry.from_dict(data.draw(st.sampled_from(pending)).to_dict())
    fault: Fault | None = None if type(entry) is InboxEntry else "type"
    if fault is None and entry in inbox.snapshot(entry.session_id):
        fault = "value"  # already pending: requeueing it would deliver it twice
    sessions = [entry.session_id] if fault is None else []
    result = call_and_judge(
        lambda: inbox.requeue_front(entry),
        _faults(entry=fault),
        lambda: observe(inbox, [*sessions, "a", "b"]),
    )
    if result is not REFUSED:
        assert inbox.snapshot(entry.session_id)[0] is entry  # even after close, or past the bound


@given(setup=st.sampled_from(SETUPS), args=arguments(session_id=texts))
def test_batches_refuses_a_session_id_that_is_not_text(setup: Setup, args: dict[str, Any]) -> None:
    session_id = args["session_id"]
    inbox = seeded_inbox(setup)
    result = call_and_judge(
        lambda: inbox.batches(session_id),
        _faults(session_id=text_fault(session_id)),
        lambda: observe(inbox, [session_id]),
    )
    if result is not REFUSED:
        assert isinstance(result, Batches)


# -- Predicates that are coroutines ----------------------------------------------------------------
# A predicate runs without being awaited: an async one would answer with a
# coroutine, which is true, and take everything. Each is refused with a
# TypeError naming the predicate, before anything is taken, and leaves no
# coroutine unawaited to warn later (warnings are errors in this suite).


async def _coroutine_verdict() -> bool:
    return False


class _AsyncCall:
    async def __call__(self, entry: InboxEntry) -> bool:
        return False


class _Pending:
    """An awaitable that is not a coroutine."""

    def __await__(self) -> Any:
        yield


async def _async_predicate(entry: InboxEntry) -> bool:
    return False


ASYNC_PREDICATES: dict[str, Callable[[InboxEntry], object]] = {
    "an async def": _async_predicate,
    "an object with an async __call__": _AsyncCall(),
    "a function returning a coroutine": lambda entry: _coroutine_verdict(),
    "a function returning an awaitable": lambda entry: _Pending(),
    "a function returning a coroutine for its second entry only": (
        lambda entry: True if entry.content == "#0" else _coroutine_verdict()
    ),
}


@pytest.mark.parametrize("call", ["drain_where", "wait_for", "claim", "async claim"])
@pytest.mark.parametrize("predicate", list(ASYNC_PREDICATES.values()), ids=list(ASYNC_PREDICATES))
def test_a_coroutine_predicate_is_refused_before_anything_is_taken(
    backend: Backend, call: str, predicate: Callable[[InboxEntry], object]
) -> None:
    inbox = Inbox(clock=ManualClock())
    entries = [inbox.push("s", "k", f"#{n}", "seed") for n in range(3)]

    async def take() -> None:
        if call == "drain_where":
            inbox.drain_where("s", predicate)
        elif call == "wait_for":
            await inbox.wait_for("s", predicate)
        elif call == "claim":
            with inbox.claim("s", predicate):
                pytest.fail("the claim was entered")
        else:
            async with inbox.claim("s", predicate):
                pytest.fail("the claim was entered")

    async def main() -> None:
        with pytest.raises(TypeError, match=r"^predicate "):
            await take()

    # A coroutine left unawaited would warn as it is freed, failing the test.
    backend.run(main)
    assert inbox.snapshot("s") == entries
    assert inbox.waiter_count("s") == 0


# -- Waiting ---------------------------------------------------------------------------------------
# Valid waits run on a closed inbox (or with timeout 0), where they return at once.


wait_clocks = st.sampled_from(["manual", "system"])


def _closed_inbox_for_waits(which: str) -> tuple[Inbox, ManualClock | None]:
    clock = ManualClock(1_000_000) if which == "manual" else None
    inbox = seeded_inbox("closed", clock) if clock else _seeded_system_inbox()
    return inbox, clock


def _seeded_system_inbox() -> Inbox:
    inbox = Inbox()
    inbox.push("a", "k", "#0", "seed")
    inbox.close()
    return inbox


@given(
    framework=st.sampled_from(["a thread", "trio", "asyncio"]),
    which=wait_clocks,
    args=arguments(session_id=texts, timeout=numbers_of_seconds),
)
def test_wait_and_wait_sync_refuse_garbage_and_register_nothing(
    framework: str, which: str, args: dict[str, Any]
) -> None:
    session_id, timeout = args["session_id"], args["timeout"]
    inbox, clock = _closed_inbox_for_waits(which)

    async def wait() -> bool:
        return await inbox.wait(session_id, timeout)

    def call() -> bool:
        if framework == "a thread":
            return inbox.wait_sync(session_id, timeout)
        result: bool = _run_async(framework, wait)
        return result

    result = call_and_judge(
        call,
        _faults(session_id=text_fault(session_id), timeout=timeout_fault(timeout)),
        lambda: observe(inbox, [session_id], clock),
    )
    if result is not REFUSED:
        assert result is (session_id in inbox.sessions())
    assert clock is None or "timers=0" in repr(clock)


@given(
    framework=frameworks,
    which=wait_clocks,
    args=arguments(
        session_id=texts,
        predicate=(predicates, non_callable_garbage),
        timeout=numbers_of_seconds,
    ),
)
def test_wait_for_refuses_garbage_under_trio_and_asyncio(
    framework: str, which: str, args: dict[str, Any]
) -> None:
    session_id, predicate, timeout = args["session_id"], args["predicate"], args["timeout"]
    inbox, clock = _closed_inbox_for_waits(which)

    async def wait_for() -> list[InboxEntry]:
        return await inbox.wait_for(session_id, predicate, timeout)

    result = call_and_judge(
        lambda: _run_async(framework, wait_for),
        _faults(
            session_id=text_fault(session_id),
            predicate=predicate_fault(predicate),
            timeout=timeout_fault(timeout),
        ),
        lambda: observe(inbox, [session_id], clock),
    )
    if result is not REFUSED:
        assert isinstance(result, list)
    assert clock is None or "timers=0" in repr(clock)


HUGE_TIMEOUTS = [1e300, 1.7976931348623157e308, 2**1024, 10**400]


@pytest.mark.parametrize("which", ["manual", "system"])
@pytest.mark.parametrize("timeout", HUGE_TIMEOUTS, ids=["1e300", "max-float", "2**1024", "1e400"])
def test_wait_sync_accepts_a_huge_finite_timeout(which: str, timeout: float) -> None:
    """A timeout is any non-negative int or float; a huge one just means "practically never".

    (math.isnan on an int too large for a float, or round(seconds * 1e9) in
    ManualClock.call_later above ~1.8e299 s, would raise OverflowError.)
    """
    inbox, clock = _closed_inbox_for_waits(which)
    assert inbox.wait_sync("a", timeout) is True
    assert inbox.wait_sync("empty", timeout) is False
    assert clock is None or "timers=0" in repr(clock)


@pytest.mark.parametrize("framework", ["trio", "asyncio"])
@pytest.mark.parametrize("timeout", HUGE_TIMEOUTS, ids=["1e300", "max-float", "2**1024", "1e400"])
def test_async_waits_accept_a_huge_finite_timeout_on_a_manual_clock(
    framework: str, timeout: float
) -> None:
    inbox, clock = _closed_inbox_for_waits("manual")

    async def main() -> tuple[bool, list[InboxEntry]]:
        return await inbox.wait("a", timeout), await inbox.wait_for("empty", bool, timeout)

    assert _run_async(framework, main) == (True, [])
    assert "timers=0" in repr(clock)


def test_a_huge_timeout_on_a_parked_wait_just_never_fires(clock: ManualClock) -> None:
    inbox = Inbox(clock=clock)
    wait = parked_wait_sync(inbox, "s", 1e300)  # fails if the wait raised instead
    clock.advance(10**6)
    assert "timers=1" in repr(clock)
    inbox.push("s", "k", "c", "src")
    assert wait.outcome() is True


# -- Entries ---------------------------------------------------------------------------------------


def field_faults(values: Mapping[str, Any]) -> dict[str, Fault]:
    return _faults(
        sequence=_int_fault(values["sequence"], 1, MAX_SEQUENCE),
        session_id=text_fault(values["session_id"]),
        kind=text_fault(values["kind"]),
        content=text_fault(values["content"]),
        source=text_fault(values["source"]),
        ts_ms=_int_fault(values["ts_ms"], 0),
    )


field_values = arguments(
    sequence=st.one_of(
        st.integers(min_value=1, max_value=MAX_SEQUENCE), st.sampled_from([1, MAX_SEQUENCE])
    ),
    session_id=texts,
    kind=texts,
    content=texts,
    source=texts,
    ts_ms=st.integers(min_value=0, max_value=10**15),
)


@given(values=field_values)
def test_inbox_entry_refuses_garbage_fields(values: dict[str, Any]) -> None:
    entry = call_and_judge(lambda: InboxEntry(**values), field_faults(values), lambda: None)
    if entry is not REFUSED:
        assert entry.to_dict() == {**values, "payload": None, "delivery": None}
        assert InboxEntry.from_dict(entry.to_dict()) == entry


@given(
    values=field_values,
    drop=st.sets(st.sampled_from(FIELDS), max_size=2),
    extra=st.dictionaries(
        st.one_of(st.text(max_size=8), st.integers(), st.none(), st.binary(max_size=3)),
        st.one_of(texts, garbage),
        max_size=2,
    ),
)
def test_inbox_entry_from_dict_refuses_bad_shapes_and_values(
    values: dict[str, Any], drop: set[str], extra: dict[Any, Any]
) -> None:
    data = {name: value for name, value in values.items() if name not in drop}
    unknown = {key: value for key, value in extra.items() if key not in ALL_FIELDS}
    data.update(unknown)
    if drop or unknown:
        faults: dict[str, Fault] = {"data": "value"}
    else:
        faults = dict.fromkeys(field_faults(values), "value")  # from_dict says ValueError
    entry = call_and_judge(lambda: InboxEntry.from_dict(data), faults, lambda: None)
    if entry is not REFUSED:
        assert entry.to_dict() == {**values, "payload": None, "delivery": None}


@given(data=st.one_of(garbage, texts).filter(lambda value: not isinstance(value, Mapping)))
def test_inbox_entry_from_dict_refuses_what_is_not_a_mapping(data: Any) -> None:
    call_and_judge(lambda: InboxEntry.from_dict(data), {"data": "type"}, lambda: None)


# -- ManualClock -----------------------------------------------------------------------------------


@given(args=arguments(start_ms=st.integers(min_value=0, max_value=10**15)))
def test_manual_clock_refuses_a_bad_start(args: dict[str, Any]) -> None:
    start_ms = args["start_ms"]
    clock = call_and_judge(
        lambda: ManualClock(start_ms), _faults(start_ms=_int_fault(start_ms, 0)), lambda: None
    )
    if clock is not REFUSED:
        assert clock.now_ms() == start_ms


def seconds_fault(value: object) -> Fault | None:
    """A step for advance(): like a timeout, but never None and never infinite.

    An int beyond the range of floats counts as infinite (as for timeouts,
    where it means "no limit").
    """
    fault = timeout_fault(value)
    if value is None:
        return "type"
    if fault is not None:
        return fault
    assert isinstance(value, (int, float))
    if isinstance(value, int):
        return "value" if value > sys.float_info.max else None
    return "value" if math.isinf(value) else None


@given(
    args=arguments(
        seconds=st.one_of(
            st.floats(min_value=0, max_value=1e6),
            st.sampled_from([0, 3, 10**6, 1e300, Real(1.5), LyingReal(1.5), LyingWhole(3)]),
        )
    )
)
def test_manual_clock_advance_refuses_garbage_and_stays_put(args: dict[str, Any]) -> None:
    seconds = args["seconds"]
    clock = ManualClock(1_000)
    fired: list[int] = []
    clock.call_later(1e6, lambda: fired.append(1))
    result = call_and_judge(
        lambda: clock.advance(seconds), _faults(seconds=seconds_fault(seconds)), lambda: repr(clock)
    )
    if result is REFUSED:
        assert clock.now_ms() == 1_000
        assert fired == []
    else:
        expected = 1_000 + Fraction(seconds) * 1_000
        assert abs(clock.now_ms() - expected) <= max(Fraction(1), expected / 10**12)
        due = round(Fraction(seconds) * 10**9) >= 10**15  # time is kept in whole nanoseconds
        assert fired == ([1] if due else [])


@given(args=arguments(ms=st.integers(min_value=0, max_value=10**15)))
def test_manual_clock_set_refuses_garbage_and_stays_put(args: dict[str, Any]) -> None:
    ms = args["ms"]
    clock = ManualClock(1_000)
    result = call_and_judge(
        lambda: clock.set(ms), _faults(ms=_int_fault(ms, 0)), lambda: repr(clock)
    )
    assert clock.now_ms() == (1_000 if result is REFUSED else ms)


@pytest.mark.parametrize("seconds", [1e300, 1.7976931348623157e308, 10**400])
def test_manual_clock_advance_by_a_huge_step_raises_only_documented_errors(
    seconds: float,
) -> None:
    """A huge finite step may be accepted or refused with ValueError; never OverflowError."""
    clock = ManualClock(0)
    outcome = _outcome(lambda: clock.advance(seconds))
    if isinstance(outcome, Refusal):
        assert isinstance(outcome.error, ValueError)
        assert "seconds" in str(outcome.error)
        assert clock.now_ms() == 0
    else:
        assert clock.now_ms() > 10**200


# -- A live inbox under a hail of refused calls ----------------------------------------------------


_bad_text = garbage.filter(lambda value: not isinstance(value, str))
_bad_timeout = garbage.filter(lambda value: timeout_fault(value) is not None)
_bad_predicate = non_callable_garbage
_bad_ms = garbage.filter(lambda value: _int_fault(value, 0) is not None)
_ok_text = st.sampled_from(["a", "b", "parked"])


def _call(name: str, *arguments: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.tuples(st.just(name), st.tuples(*arguments))


#: (call, arguments) pairs in which at least one argument is certainly invalid.
REFUSED_CALLS = st.one_of(
    _call("push", _bad_text, _ok_text, _ok_text, _ok_text),
    _call("push", _ok_text, _ok_text, _bad_text, _ok_text),
    _call("drain", _bad_text),
    _call("drain_where", _ok_text, _bad_predicate),
    _call("requeue_front", garbage),
    _call("clear_session", _bad_text),
    _call("snapshot", _bad_text),
    _call("wait_sync", _ok_text, _bad_timeout),
    _call("wait_sync", _bad_text, st.none()),
    _call("batches", _bad_text),
    _call("advance", _bad_timeout),
    _call("set", _bad_ms),
    _call("trio wait", _ok_text, _bad_timeout),
    _call("asyncio wait_for", _ok_text, _bad_predicate, st.none()),
)


def invoke(inbox: Inbox, clock: ManualClock, name: str, arguments: tuple[Any, ...]) -> Any:
    if name == "trio wait":

        async def wait() -> bool:
            return await inbox.wait(*arguments)

        return _run_async("trio", wait)
    if name == "asyncio wait_for":

        async def wait_for() -> list[InboxEntry]:
            return await inbox.wait_for(*arguments)

        return _run_async("asyncio", wait_for)
    target: Any = clock if name in ("advance", "set") else inbox
    return getattr(target, name)(*arguments)


@pytest.fixture
def live_inbox(clock: ManualClock) -> Iterator[Inbox]:
    """An inbox in use: entries pending, drops counted, a thread parked with a timer running."""
    inbox = Inbox(clock=clock, max_pending=3, overflow="drop_oldest")
    for n in range(5):
        inbox.push("a", "k", f"#{n}", "seed")
    inbox.push("b", "k", "#0", "seed")
    wait = parked_wait_sync(inbox, "parked", 30)
    yield inbox
    inbox.push("parked", "k", "release", "test")
    assert wait.outcome() is True, "the parked thread was disturbed"


@hypothesis.settings(suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_refused_calls_leave_a_live_inbox_exactly_as_it_was(
    live_inbox: Inbox, clock: ManualClock, data: st.DataObject
) -> None:
    name, arguments = data.draw(REFUSED_CALLS)
    before = observe(live_inbox, ["a", "b", "parked"], clock)
    with pytest.raises((TypeError, ValueError)):
        invoke(live_inbox, clock, name, arguments)
    assert observe(live_inbox, ["a", "b", "parked"], clock) == before, name
    assert live_inbox.waiter_count("parked") == 1
    assert "timers=1" in repr(clock)
