"""`Store`: what an `Inbox` asks of the place its sessions live.

What a store must guarantee
---------------------------
The `Inbox` façade checks arguments, reads the clock, keeps the parking lot
and the telemetry; the store keeps the sessions. The two meet in the methods
below, and the lot (``harn_inbox._lot``) relies on four promises:

1. **Each method is atomic** with respect to every other method of the same
   store, from any thread (and, for a store shared between processes, from any
   process): it sees one state and leaves one state. A session's sequence
   numbers are issued once each, gaplessly; an entry is taken by exactly one
   consumer.
2. **A change is visible when the method returns.** The façade notifies the
   lot after a change that may give a waiter something (a push, a requeue);
   an armed waiter's look must see every change made before that notify. A
   store whose sessions also change elsewhere (another process) calls the
   ``notify`` it was given in `attach` after each such change reaches it, and
   ``notify_all`` when it may have missed some (a reconnect), and ``cleared``
   when a session was cleared elsewhere (its waits here end, as for a local
   `Inbox.clear_session`); all three come in the `StoreSettings` of
   `Store.attach`.
3. **Looks never block for long** and never call back into the inbox.
   ``has_pending``, ``read``, ``take`` and ``drain`` run inside wait calls.
4. **Versions move on every change but appends** (and but what pushes and
   the clock discard: ``drop_oldest``, coalescing, expiry):
   `harn_inbox._session.SessionState` defines it, and ``take`` refuses a
   cursor whose version has moved. That is what lets predicates run outside
   every lock (``harn_inbox._judging``). A cursor also says whether its
   session was cleared since (its life ended): a selective wait ends then.

A store serves one inbox (`attach` refuses a second), and durability, if it
has any, is its own: a durable store returns from a change once the change is
safe, and raises `harn_inbox.StoreError` (having changed nothing) when it
cannot make it safe. Every store is checked by the same conformance kit
(``harn_inbox.testing``); a store's own tests add only what is its own
(crashes, restarts, network faults).

The stores
----------
- `MemoryStore` and `SqliteStore` are `LocalStore` (``_local.py``): each
  session a `SessionState` under one lock, the durable one writing every change
  to its file before returning. Their looks are memory reads.
- `RedisStore` (``_redis.py``) keeps each session as a log of operations on
  a Redis server, each appended by one script (one round trip), and replays
  the logs into a `LocalStore` of its own: every process computes the same
  sessions. Changes from other processes reach it as notifications (a
  subscription), which it passes to ``notify``; after the subscription drops
  and returns, ``notify_all``. Because waiters are armed before they look, a
  look may take a round trip with no lock of ours held: a change it misses is
  notified after it. Its class attribute ``network = True`` tells the inbox
  that its looks go over the network: a wait's first look runs off the
  event loop (`harn_inbox._lot.Pause.LOOK`); its later looks, made armed,
  ask the store first what its process already holds (`NetworkStore`), on
  the loop, and go off it only where that is not enough.

This interface is how harn_inbox's own stores plug in; it is not yet a
promise to code outside the package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, final

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._entry import InboxEntry
    from .._session import Cursor, Meta, PushNote, PushOptions
    from .._statistics import SessionStatistics


@final
@attrs.frozen(kw_only=True)
class StoreSettings:
    """What an inbox tells the store it attaches."""

    #: The bound per session, or None.
    max_pending: int | None
    #: What a push to a full session does: drop the oldest entry (True) or raise `InboxFull`.
    drop_oldest: bool
    #: Call after a change made elsewhere (another process) that may give a waiter something.
    notify: Callable[[str], None]
    #: Call when changes made elsewhere may have been missed (a reconnect).
    notify_all: Callable[[], None]
    #: Call after a session was cleared elsewhere (another process): its waits end.
    cleared: Callable[[str], None]
    #: How many of the inbox's wait calls are on a session now (its ``waiter_count``).
    waiter_count: Callable[[str], int]
    #: How long a dedupe key holds (milliseconds on the inbox's clock).
    dedupe_window_ms: int
    #: The inbox's clock (a checked ``int``): when entries expire.
    now_ms: Callable[[], int]
    #: Call, with no lock held, with the entries that expired in an operation.
    expired: Callable[[list[InboxEntry]], None]
    #: ``emit(level, event, fields)`` for the store's own telemetry, or None (no logger).
    emit: Callable[[str, str, dict[str, object]], None] | None


@final
class ClaimRecord:
    """Entries a claim took, until it is settled (they are gone) or released (they go back)."""

    __slots__ = ("entries", "life", "metas", "session_id", "token")

    def __init__(
        self, session_id: str, entries: list[InboxEntry], metas: list[Meta], token: object
    ) -> None:
        self.session_id = session_id
        self.entries = entries
        #: What each entry carried (coalesce key, expiry), to put back with it.
        self.metas = metas
        #: What else the store needs to settle or release it (a row id, a lease), or None.
        self.token = token
        #: Which life of the session it was taken from (a store's own marker), so that
        #: entries given back after a clear count as older than the new life's.
        self.life: object = None

    def __len__(self) -> int:
        return len(self.entries)


class Store(Protocol):
    """The methods an `Inbox` calls on its store (see the module docstring)."""

    def attach(self, settings: StoreSettings) -> None:
        """Serve the one inbox that tells this; `ValueError` if another did already."""

    def push(
        self, session_id: str, kind: str, content: str, source: str, ts_ms: int
    ) -> InboxEntry | PushNote:
        """Stamp and append an entry; return it, or a `PushNote` if the push did more.

        Raises `InboxClosed` after `close`, `InboxFull` for a full session
        that rejects; either way nothing changed.
        """

    def push_with(
        self,
        session_id: str,
        kind: str,
        content: str,
        source: str,
        ts_ms: int,
        options: PushOptions,
    ) -> InboxEntry | PushNote:
        """`push` with a payload, a delivery class, dedupe and coalesce keys, an expiry."""

    def reserve_sequence(self, session_id: str) -> int:
        """Issue the session's next sequence number to no entry."""

    def requeue_front(self, entry: InboxEntry) -> None:
        """Put *entry* first in its session; `ValueError` if an equal one is pending."""

    def drain(self, session_id: str) -> list[InboxEntry]:
        """Take every pending entry, oldest first."""

    def read(self, session_id: str, cursor: Cursor | None) -> tuple[Cursor, list[InboxEntry], bool]:
        """What a judge has not read yet; see `harn_inbox._session.SessionState.read`."""

    def take(
        self, session_id: str, cursor: Cursor, chosen: list[InboxEntry]
    ) -> list[InboxEntry] | None:
        """Take those of *chosen* still pending; ``None`` if the version moved since *cursor*."""

    def claim(
        self, session_id: str, cursor: Cursor | None, chosen: list[InboxEntry] | None
    ) -> ClaimRecord | None:
        """Take every pending entry (no *cursor*), or *chosen* as `take` does, into a claim.

        ``None`` if the version moved since *cursor*. The entries stay the
        store's business until `settle` or `release`.
        """

    def settle(self, claim: ClaimRecord) -> None:
        """The claim's entries were handled: forget them."""

    def release(self, claim: ClaimRecord) -> int:
        """Put the claim's entries back at the head, in order, with all they carried."""

    def revoke(self, session_id: str, sequence: int) -> InboxEntry | None:
        """Remove the pending entry with *sequence* and return it; None if none is pending."""

    def clear(self, session_id: str) -> int:
        """Forget the session's entries and counters; return how many entries it held."""

    def refuse_pushes(self) -> None:
        """Refuse pushes (and reserved sequences) from now on: `Inbox.close`."""

    def has_pending(self, session_id: str) -> bool: ...

    def pending_count(self, session_id: str) -> int: ...

    def snapshot(self, session_id: str) -> list[InboxEntry]: ...

    def sessions(self) -> list[str]: ...

    def statistics(self, session_id: str) -> SessionStatistics:
        """The session's statistics, with ``waiters=0`` (the lot counts those)."""


class NetworkStore(Store, Protocol):
    """A store whose looks go over the network (``network = True``): what its waits ask first.

    A wait is armed before it looks (``harn_inbox._lot``), so it may look at
    what this process already holds of a session, on the event loop, as long
    as every change this process does not hold yet will still be notified to
    it. These two answer from there, or say ``None`` when they cannot (the
    wait then looks with `has_pending` or `read`, off the loop). Only waits
    call them: a plain call must see every change made before it, wherever.
    """

    def has_pending_here(self, session_id: str) -> bool | None:
        """`has_pending` from what this process holds, or None if that is not enough."""

    def read_here(
        self, session_id: str, cursor: Cursor | None
    ) -> tuple[Cursor, list[InboxEntry], bool] | None:
        """`read` from what this process holds, or None if that is not enough."""
