"""What the machine saw: each rule records one, the invariants judge it.

Also `Parked`, the machine's note of a wait the model says is parked;
`Holding`, a claim it holds open across steps; and `same`, how it compares
what an inbox returned with what the model says.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from .._entry import InboxEntry

if TYPE_CHECKING:
    from .._errors import InboxError
    from .._protocol import ClaimLike
    from ._hosts import Outcome
    from ._model import Claimed
    from ._vocabulary import Keywords, PredicateFailed, Where


def same(returned: object, expected: object) -> bool:
    """Whether *returned* is *expected*: entries equal field by field, payloads as JSON too.

    ``==`` holds 1, 1.0 and True for equal payloads; the contract keeps a
    payload as it was pushed, so an inbox that turned one into another (a
    store that encodes payloads, say) must not pass.
    """
    return _exactly(returned) == _exactly(expected)


def _exactly(value: object) -> object:
    if isinstance(value, InboxEntry):
        if value.payload is None:
            return value
        return value, json.dumps(value.to_dict()["payload"], sort_keys=True)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_exactly(item) for item in value]
    return value


@attrs.define(eq=False)
class Parked:
    """A wait the model says is parked: which call, on which sessions, how long it has waited."""

    call: Outcome
    sessions: tuple[str, ...]
    timeout_ms: int | None
    #: wait_for's predicate and limit; None for the others.
    predicate: Where | None = None
    limit: int | None = None
    #: Whether it is a wait_any (or wait_any_sync): it returns a session id, or None.
    any: bool = False
    #: Its sessions cleared since it parked: a wait_any ends once all of them are.
    cleared: set[str] = attrs.Factory(set)
    elapsed_ms: int = 0

    def empty_handed(self, result: object) -> tuple[bool, str]:
        """Whether *result* is what this wait returns with nothing, and what that is."""
        if self.any:
            return result is None, "None"
        if self.predicate is None:
            return result is False, "False"
        return isinstance(result, Sequence) and not result, "[]"


@attrs.define(eq=False)
class Holding:
    """A claim whose block the machine holds open across steps: the inbox's and the model's."""

    description: str
    claim: ClaimLike
    claimed: Claimed


@attrs.frozen
class PushCall:
    """The arguments of a push with keywords, for a producer to retry it."""

    session: str
    kind: str
    content: str
    source: str
    keywords: Keywords


@attrs.frozen
class Pushed:
    call: str
    clock_ms: int
    returned: InboxEntry | InboxError
    expected: InboxEntry | InboxError
    #: Whether the model calls it a duplicate (its dedupe key is within its window).
    duplicate: bool


@attrs.frozen
class Pushes:
    pushes: list[Pushed]


@attrs.frozen
class Returned:
    """A call whose result must be the model's; *promise* says what that is."""

    call: str
    returned: object
    expected: object
    promise: str


@attrs.frozen
class Partitioned:
    session: str
    predicate: Where
    before: list[InboxEntry]
    taken: list[InboxEntry]
    kept: list[InboxEntry]
    judged: list[InboxEntry]


@attrs.frozen
class Aborted:
    session: str
    predicate: Where
    culprit: InboxEntry
    before: list[InboxEntry]
    outcome: list[InboxEntry] | PredicateFailed
    after: list[InboxEntry]


@attrs.frozen
class Requeued:
    entry: InboxEntry
    expected: ValueError | None
    raised: ValueError | None
    after: list[InboxEntry] | None  # None: a parked wait_for took it at once


@attrs.frozen
class ClockMoved:
    """The clock moved: the next step's operation must meet what expired meanwhile unlooked-at."""

    ms: int


Seen = Pushes | Returned | Partitioned | Aborted | Requeued | ClockMoved | None
