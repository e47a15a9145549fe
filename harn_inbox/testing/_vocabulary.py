"""The machine's vocabulary: what it pushes, the predicates it drains with, and their strategies.

Predicates are `Where` values that print as the lambdas they are, and a
push's keyword arguments are a `Keywords` value that prints as them, so that
a counterexample reads as code; `Judge` and `FailingJudge` wrap a predicate to
record what an inbox asked it, or to make it raise part-way.

Each of these is drawn with one integer, an index into a tuple of every
value, simplest first (hypothesis shrinks towards the front): each draw costs
a stateful step time, and a step's draws are most of it.
"""

from __future__ import annotations

import itertools
import math
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar, final

import attrs
from hypothesis import strategies as st

from .._entry import Delivery

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from .._entry import InboxEntry

T = TypeVar("T")

_KINDS = ("tool_result", "progress", "")
_SOURCES = ("worker", "mcp")
_CONTENTS = ("", "ok", "dône ✓")
#: JSON values; 1, 1.0 and True are equal to Python, and must come back as pushed all the same.
_PAYLOADS: tuple[object, ...] = (
    {"handle": "h1"},
    "h1",
    1,
    1.0,
    True,
    [],
    {"handle": "h2", "progress": [0.5, None, {"é": False}]},
)
_DELIVERIES = tuple(Delivery)
#: Expiries in seconds: at once, 1 ms (rounded up from 0.1 ms), 10.5 ms (11), 20 ms, never.
_EXPIRIES = (0, 0.0001, 0.0105, 0.02, math.inf)


def _by_index(values: Sequence[T]) -> st.SearchStrategy[T]:
    """One of *values*, drawn by index (see the module docstring)."""
    # Not sampled_from(): its repr lists every value, and hypothesis records the repr of the
    # machine's rule strategy (which includes it) in an event of every test case whose rule
    # draw it retried: spelled out, the predicates made a long run grow by 0.4 MB a case.
    return st.integers(min_value=0, max_value=len(values) - 1).map(values.__getitem__)


@final
@attrs.frozen(repr=False)
class Where:
    """A predicate over entries that prints as the lambda it is, for readable counterexamples."""

    expression: str
    test: Callable[[InboxEntry], object] = attrs.field(eq=False)

    def __call__(self, entry: InboxEntry) -> object:
        return self.test(entry)

    def __repr__(self) -> str:
        return f"lambda entry: {self.expression}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # hypothesis prints the steps of a counterexample with its own pretty
        # printer, which spells out attrs classes field by field unless told.
        printer.text(repr(self))


def _field_is(field: str, value: object) -> Where:
    get = attrgetter(field)
    return Where(f"entry.{field} == {value!r}", lambda entry: get(entry) == value)


def _negated(where: Where) -> Where:
    return Where(f"not {where.expression}", lambda entry: not where.test(entry))


def _both(left: Where, right: Where) -> Where:
    return Where(
        f"{left.expression} and {right.expression}",
        lambda entry: left.test(entry) and right.test(entry),
    )


def _either(left: Where, right: Where) -> Where:
    return Where(
        f"{left.expression} or {right.expression}",
        lambda entry: left.test(entry) or right.test(entry),
    )


_ATOMS = (
    Where("True", lambda entry: True),
    *(_field_is("kind", kind) for kind in _KINDS),
    *(_field_is("source", source) for source in _SOURCES),
    *(_field_is("content", content) for content in _CONTENTS),
    _field_is("payload", _PAYLOADS[0]),
    Where(
        "entry.delivery is Delivery.IMMEDIATE", lambda entry: entry.delivery is Delivery.IMMEDIATE
    ),
    # Truthy, not bool: an inbox must go by truth value, not `is True`.
    Where("entry.sequence % 2", lambda entry: entry.sequence % 2),
    Where("entry.sequence % 2 == 0", lambda entry: entry.sequence % 2 == 0),
    Where("entry.content", attrgetter("content")),
    Where("False", lambda entry: False),
)
# Every predicate the kit uses, simplest first.
_ALL_PREDICATES = (
    *_ATOMS,
    *map(_negated, _ATOMS),
    *(_both(left, right) for left in _ATOMS for right in _ATOMS if left != right),
    *(_either(left, right) for left in _ATOMS for right in _ATOMS if left != right),
)
PREDICATES = _by_index(_ALL_PREDICATES)
#: A claim's predicate: None (take everything) or one of `PREDICATES`.
CLAIM_PREDICATES = _by_index((None, *_ALL_PREDICATES))
KIND = st.sampled_from(_KINDS)
SOURCE = st.sampled_from(_SOURCES)
CONTENT = st.sampled_from(_CONTENTS)
#: Wait timeouts in whole milliseconds of the ManualClock: None waits for ever, 0 just looks.
TIMEOUT_MS = st.none() | st.integers(min_value=0, max_value=25)
#: wait_for's limit.
LIMIT = st.sampled_from((None, 1, 2))


@final
@attrs.frozen(repr=False)
class Keywords:
    """The keyword arguments of one push, printed as they are passed."""

    payload: object = None
    delivery: Delivery | None = None
    dedupe_key: str | None = None
    coalesce_key: str | None = None
    expires_in: float | None = None

    def push(self, push: Callable[..., InboxEntry], *arguments: str) -> InboxEntry:
        """Call *push* (an inbox's or the model's) with *arguments* and these keywords."""
        return push(*arguments, **self._given())

    def __repr__(self) -> str:
        return ", ".join(f"{name}={_code(value)}" for name, value in self._given().items())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(f"Keywords({self!r})")

    def _given(self) -> dict[str, object]:
        return {
            name: value
            for name, value in attrs.asdict(self, recurse=False).items()
            if value is not None
        }


def _code(value: object) -> str:
    return f"Delivery.{value.name}" if isinstance(value, Delivery) else repr(value)


def _keywords() -> tuple[Keywords, ...]:
    """Combinations of the keyword arguments, at least one given, those with fewer first.

    Repeated Nones make each argument absent more often than not where a
    value of it changes what a push does: with two dedupe keys given every
    time, most pushes would be duplicates.
    """
    choices = (
        (None, *_PAYLOADS),
        (None, *_DELIVERIES),
        (None, None, "d1", "d2"),
        (None, None, "c1", "c2"),
        (None, None, None, *_EXPIRIES),
    )
    every = [Keywords(*values) for values in itertools.product(*choices)]
    return tuple(
        sorted(
            (keywords for keywords in every if keywords._given()),
            key=lambda keywords: len(keywords._given()),
        )
    )


#: The keyword arguments of a push that has some.
KEYWORDS = _by_index(_keywords())


@final
class Judge:
    """Wraps a predicate and records the entries it was asked about."""

    def __init__(self, where: Where) -> None:
        self.where = where
        self.judged: list[InboxEntry] = []

    def __call__(self, entry: InboxEntry) -> object:
        self.judged.append(entry)
        return self.where.test(entry)


class PredicateFailed(Exception):
    """What the kit's failing predicate raises."""


class BlockFailed(Exception):
    """What the kit raises in a claim's block, so that the claim gives its entries back."""


@final
class FailingJudge:
    """A predicate that answers like *where* until it meets *culprit*, then raises."""

    def __init__(self, where: Where, culprit: InboxEntry) -> None:
        self.where = where
        self.culprit = culprit

    def __call__(self, entry: InboxEntry) -> object:
        if entry == self.culprit:
            raise PredicateFailed(f"the kit's predicate fails on {entry!r}")
        return self.where.test(entry)
