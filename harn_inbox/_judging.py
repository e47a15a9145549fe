"""`Judge`: selective consumption (``drain_where``, ``wait_for``), judged outside every lock.

A user's predicate may be slow, or call the inbox, so it never runs under a
lock. A judge reads the session (`SessionState.read`), judges what it read
with no lock held, and asks the store to take the matches
(`SessionState.take`), which succeeds if the session's version has not moved
since the read: nothing judged was taken by another consumer and nothing was
put ahead of it. Entries appended meanwhile are simply later: they are not
taken this time, and the next look (of a ``wait_for`` that found no match)
reads just them. If the version did move, the judge reads the session again;
verdicts carry over by entry, so each entry that stays pending is judged once.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Sized
from typing import TYPE_CHECKING, Generic, TypeVar, final

from ._arguments import type_error
from ._lot import Look

if TYPE_CHECKING:
    from ._entry import InboxEntry
    from ._session import Cursor
    from .stores._protocol import Store

Predicate = Callable[["InboxEntry"], object]
#: A network store's ``read_here``: `Store.read` from what this process holds, or None.
ReadHere = Callable[[str, "Cursor | None"], "tuple[Cursor, list[InboxEntry], bool] | None"]
#: What a take returns: the entries taken, or a claim on them (falsy when empty).
Taken = TypeVar("Taken", bound=Sized)


def check_predicate(predicate: object) -> Predicate:
    """*predicate* if it is a plain callable; refuse an ``async def`` one by name."""
    if not callable(predicate):
        type_error("predicate", "callable", predicate)
    if inspect.iscoroutinefunction(predicate) or inspect.iscoroutinefunction(
        getattr(type(predicate), "__call__", None)  # noqa: B004 (the type's, not the instance's)
    ):
        raise TypeError(
            "predicate must be a plain function returning a truth value, not a coroutine "
            f"function ({predicate!r}): it runs without awaiting"
        )
    return predicate


def truth(verdict: object) -> bool:
    """The truth of what a predicate returned; an awaitable is refused (it would always be true)."""
    if inspect.isawaitable(verdict):
        close = getattr(verdict, "close", None)
        if close is not None:
            close()  # a coroutine never awaited must not warn later
        raise TypeError(
            f"predicate returned an awaitable ({type(verdict).__name__}), not a truth value: "
            "it must be a plain function"
        )
    return bool(verdict)


@final
class Judge(Generic[Taken]):
    """What one ``drain_where``, ``wait_for`` or ``claim`` call has read and judged of its session.

    It takes the first *limit* matches (all, if None) with *take*.
    """

    __slots__ = (
        "_cursor",
        "_limit",
        "_matches",
        "_predicate",
        "_read_here",
        "_seen",
        "_session_id",
        "_store",
        "_take",
        "_to_take",
        "_verdicts",
    )

    def __init__(
        self,
        store: Store,
        session_id: str,
        predicate: Predicate,
        take: Callable[[str, Cursor, list[InboxEntry]], Taken | None],  # Store.take or .claim
        limit: int | None = None,
        read_here: ReadHere | None = None,
    ) -> None:
        self._store = store
        self._session_id = session_id
        self._predicate = predicate
        self._take = take
        self._limit = limit
        #: A wait's read of what this process holds (a network store's ``read_here``), or None.
        self._read_here = read_here
        #: `look_here` found matches: the next `look` takes them, reading "here" if it can.
        self._to_take = False
        self._cursor: Cursor | None = None
        #: Every entry read since the last restart, in pending order, and its verdict.
        self._seen: list[InboxEntry] = []
        self._verdicts: list[bool] = []
        #: How many of the verdicts are true.
        self._matches = 0

    def look(self) -> Taken | Look:
        """Take the matches (the first *limit*) if there are any; else say whether it judged any.

        `Look.CLEARED` if the session was cleared since this call first read
        it. Raises whatever the predicate raises, having taken nothing.
        """
        return self._look(here=False)

    def look_here(self) -> Taken | Look:
        """`look` on the event loop, for a wait on a network store: it never goes over the network.

        It judges what the store already holds (``read_here``) and says
        `Look.AWAY` when the store cannot answer here or when there are
        matches to take (a round trip): `look`, run off the loop, goes on from
        where this one stopped, with its verdicts.
        """
        return self._look(here=True)

    def _look(self, here: bool) -> Taken | Look:
        judged_any = False
        # On the loop (a wait looks there only after its first look, at the
        # store); off it only right after a look here that found matches: any
        # other look off the loop reads the store (a first look, a last one).
        read_here = self._read_here if here or self._to_take else None
        self._to_take = False
        while True:
            previous = self._cursor
            read = None if read_here is None else read_here(self._session_id, previous)
            if read is None:
                if here:
                    return Look.AWAY
                read = self._store.read(self._session_id, previous)
            cursor, entries, restarted = read
            known = None
            if restarted and previous is not None and previous.cleared():
                # Cleared while this call judged it: the session it was
                # waiting on is gone, as for a wait parked on it.
                return Look.CLEARED
            if restarted:
                # `earlier` keeps the entries judged so far alive while `known`
                # is used: their ids stay theirs.
                earlier = self._seen
                known = _verdicts_by_identity(earlier, self._verdicts)
                self._seen, self._verdicts, self._matches = [], [], 0
            if entries:
                judged_any = True
                fresh = self._judge(entries, known)
                self._seen += entries
                self._verdicts += fresh
                self._matches += sum(fresh)
            if not self._matches or here:
                self._cursor = cursor
                if self._matches:
                    self._to_take = True
                    return Look.AWAY  # the take goes over the network
                return Look.JUDGED if judged_any else Look.NOTHING
            chosen = list(
                itertools.islice(itertools.compress(self._seen, self._verdicts), self._limit)
            )
            taken = self._take(self._session_id, cursor, chosen)
            if taken:
                return taken
            if cursor.cleared():
                return Look.CLEARED
            # The version moved (None), or every match went meanwhile (dropped by
            # a push, say): read everything again; verdicts carry over.
            self._cursor = None

    def _judge(self, entries: list[InboxEntry], known: dict[int, bool] | None) -> list[bool]:
        # Outside every lock. Comprehensions, not map(): a StopIteration from
        # the predicate must propagate, not end the iteration and shorten the
        # verdicts. A verdict that is not a bool has its truth taken (`truth`).
        predicate = self._predicate
        if known is None:
            return [
                verdict
                if (verdict := predicate(entry)) is True or verdict is False
                else truth(verdict)
                for entry in entries
            ]
        return [
            known[id(entry)]
            if id(entry) in known
            else (
                verdict
                if (verdict := predicate(entry)) is True or verdict is False
                else truth(verdict)
            )
            for entry in entries
        ]


def _verdicts_by_identity(seen: list[InboxEntry], verdicts: list[bool]) -> dict[int, bool] | None:
    """The verdicts of *seen*, by the identity of each entry judged.

    Entries are immutable, so a verdict holds for as long as its entry is
    pending, wherever a change moved it. The ids are safe keys: *seen* keeps
    every entry alive until the mapping has been used.
    """
    if not seen:
        return None
    return {id(entry): verdict for entry, verdict in zip(seen, verdicts, strict=True)}
