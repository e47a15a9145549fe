"""`RedisStore`: the sessions of every process that names the same Redis server and namespace.

Theory of operation
-------------------
Each session is a **log of operations** in Redis (a list), and each process
keeps a **replica** of the sessions it touches: a `LocalStore`, the very code
the in-memory store runs, into which it replays that log in order. An
operation (a push, a drain, a take at a cursor, a claim, a settle...) is
appended to its session's log by one script, which returns what this process
has not replayed yet, up to and including the operation itself; replaying
that gives the operation's result. Every replica replays the same operations
in the same order, each with its own clock reading and settings, so all of
them compute the same state, and each operation has one result wherever it
is computed:

1. A sequence number is issued by replay, once: sequences are gapless per
   session, whichever process pushed.
2. An entry is taken by the first operation in the log that takes it: a
   drain, a take at a cursor (refused if the version moved, as in memory) or
   a claim, from whichever process.
3. The script is one atomic round trip: nothing is half written, and no state
   is read, changed in Python and written back.
4. An operation carries (process id, counter). A retry after a dropped
   connection appends it again; replay skips the copy, so the operation is
   applied once and its result read from the first copy. A process whose
   last operation is both `REMEMBER_PROCESSES_FOR` older (by clock readings)
   and `REMEMBER_OPERATIONS` operations further back in the log than the
   operation being replayed is forgotten, in every replica at the same
   place, so a session that many processes wrote to over time does not
   carry each of them in its snapshot for ever. Its retried copies came
   long before: both would have to fail for one to apply twice (a clock a
   day off, and that many operations on the session while it retried).

A replica decides nothing of its own: its looks do not purge what expired by
this process's clock (a ``tick`` operation does, so every replica purges at
the same place in the log), and dedupe keys are forgotten per session, as its
log says, never across sessions.

Waits: the script publishes ``<index> <operation>`` on the session's own
channel after each append. The *listener* listens to the channels of the
sessions this process waits on (a wait's look asks for its session's), and
replays each operation it hears into the replica when it is the next one
(`_heard`), then passes the session to ``notify``. A session's replica is
*fresh* (`_Track.settled`, `_Track.listening`) while it holds every
operation of the log but those whose messages are still to come; a wait's
first look replays what the log holds (a round trip), and its later looks,
made armed, read a fresh replica without one (``has_pending_here``,
``read_here``, on the event loop). The argument, case by case:

- an operation heard when it is the next one is replayed before its notify,
  even while a reply of this process's that holds it too is on the wire:
  replies and messages replay by index, under the store's lock, and each
  skips what the other replayed first (`_absorb`);
- one heard after a gap (operations not heard), or one it cannot read, marks
  the session stale before its notify, and a stale session's looks go to
  the server;
- one appended before the subscription was confirmed may never be heard: the
  confirmation marks the session stale and notifies it;
- after a dropped subscription every session is stale and not listening
  until confirmed again, and ``notify_all`` follows the reconnection;
- a session no wait has looked at for `FORGET_AFTER` seconds, and none
  waits on, is forgotten (`_forget_idle`): stale and not listening, then
  unsubscribed and notified, so a wait that armed meanwhile looks again, at
  the server, and asks for the session anew;
- a look at the server settles the marks made before its round trip, and
  only once its reply is replayed (another thread's look must not read the
  replica before): an operation behind those marks was appended before the
  round trip, so it is in the reply; a mark made meanwhile stands.

So an armed waiter's look either sees an operation or is notified after it
(the parking lot's rule, ``harn_inbox._lot``). A process that only pushes
listens to nothing.

Listeners: the listener is the store's subscriber thread, or an event loop
that took the role from it (`LoopListener`, ``_loop_listener.py``): the
first trio or asyncio loop whose wait looks at a fresh copy, so that its
waits are woken with no hop between threads. One holds the role at a time
(`_holder`, under the role lock), and the role changes hands as a dropped
connection does:

1. Every step a listener takes (replaying what it heard, a confirmation,
   forgetting what is unused) runs under the role lock, and only if it
   still holds the role: one that lost it, still reading its old
   connection, changes nothing.
2. Taking the role (`_offer_role`), giving it up (`_listener_ends`), and
   having it taken back (`_revoke`, `_stop_listening`) each mark every
   session stale and not listening, under the role lock, as `_deaf` does
   after a dropped connection: no look trusts the replica again until the
   new listener's confirmations come.
3. A listener's connection begins (`_listening_begins`) by subscribing to
   every wanted session and, once that went out, unless it is the very
   first (`_listening_resumes`), by notifying every wait: an operation
   published while nobody listened, after a wait's look at a fresh
   replica, wakes that wait now. Not before: a wait woken while the server
   is away would fail its look.
4. A loop that holds the role must answer the thread's requests to tend
   (`_watch`) within `LOOP_PATIENCE`: else the thread takes the role back
   for good, so a blocked loop cannot keep the rest of the process deaf.

Copies are kept while they are used: a session's track and replica state
that no operation or look of this process has used for `FORGET_AFTER`
seconds, that no wait wants, and that holds no claim and no operation whose
caller gave up, are dropped (`_forget_copies`); its next use replays the log
again, from its snapshot or its start. So a long-lived process that pushed
into many sessions holds only those it uses. The rules that keep a drop from
losing anything:

1. Each use that replays into a copy, or reads it after a look at the
   server, holds a pin on its track (`_pin`), taken under the store's lock;
   a pinned track is never dropped, so no replay or read lands in a dropped
   copy. Other threads make tracks only under the lock.
2. The listener's own uses (`_heard`, `_received`) hold no pin: the drop
   is the listener's too, and all of them run under the role lock, one at a
   time. (For a session dropped, they may make a new track: stale, since a
   message after the log's start is not replayed into it, and dropped
   again later.)
3. A wanted session is never dropped, and `_want` makes a session wanted
   under the lock together with finding its track, so every wanted session
   has its track. A dropped track is not listening and is marked, so it is
   never fresh again; a look that found its track fresh checks, under the
   lock, that it is still the session's (`has_pending_here`, `read_here`).
4. A cursor read in a dropped copy names a session object that is no longer
   the replica's: its take is refused (the caller reads again), as after a
   snapshot that ended the cursor's life.
5. A copy read again does not report the clears it replays to the inbox's
   waits (`_Track.loaded`): it cannot tell them from clears long past.

Claims hold a lease. A claim operation records its deadline (the claimant's
clock plus the lease); replaying any later operation of that session whose
clock reading has passed the deadline first gives the entries back, at the
head, in order. Settling or releasing a claim that is no longer held changes
nothing (fencing): the entries went back once. The housekeeping thread appends
a ``tick`` to sessions whose leases it sees expire, so that waiters elsewhere
wake for the entries given back, and a ``renew`` for the claims its own
process still holds once half a lease is left (`_tend_leases`): a live
claimant keeps what it holds, however long its block runs.

Operations whose results are lost: a caller whose round trip failed gets
`StoreError`, though its operation may have reached the log, or may reach
it later (it sat in a paused server's socket). Each operation names the
earlier operations of its process on the session whose results the process
never learned (``lost``), and its replay gives back what they took, at the
head, in order (`_give_back_lost`). That is decided by replay, the same in
every replica, from state a snapshot keeps (each process's last take, every
claim held): a log compacted past a lost operation loses nothing. Each
operation settles every earlier one of its process, so only the last needs
keeping. The housekeeping thread appends a ``tick`` to such a session, so the
operations are named even if nothing else comes.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import itertools
import json
import os
import threading
import time
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, final

import attrs

from .._entry import Delivery, InboxEntry
from .._errors import InboxClosed, InboxFull, StoreError
from .._json import freeze, thaw
from .._lot import fallback_logger
from .._session import CLEARED, Cursor, PushNote, PushOptions, SessionState
from ._connections import Connections, Script
from ._local import LocalStore
from ._loop_listener import LoopListener
from ._protocol import ClaimRecord
from ._snapshots import dump_claim, dump_session, load_claim, load_session

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from .._statistics import SessionStatistics
    from ._protocol import StoreSettings

#: The layout of a namespace this code writes and reads. A namespace written by
#: a newer layout is refused (`StoreError`), never misread.
SCHEMA_VERSION = 1

# The operations of a session's log from index ARGV[2] on, as
# {base, snapshot, operations}: *base* is the index of the log's first
# operation kept (those before it were compacted into *snapshot*, sent only
# when ARGV[2] is below it, else ''); *base* alone when the rest is empty
# (the usual reply to a push: redis-py reads an integer in a fraction of the
# time of a nested array; benchmarks/README.md, scenario 12). KEYS: the log. ARGV: operation (for an
# append), first index wanted, namespace, session id, schema version. The
# other keys are the namespace's (its schema key, its sessions set) or the
# session's (base, snapshot, channel), named here from ARGV: fewer arguments
# to send on every push (a namespace lives on one server anyway: its schema
# key and sessions set span every session).
_SCHEMA_CHECK = """
local prefix, session = ARGV[3] .. ':', ARGV[4]
local schema = tonumber(redis.call('GET', prefix .. 'schema') or '0')
if schema > tonumber(ARGV[5]) then
    return redis.error_reply('HARN_SCHEMA ' .. schema)
end
local base = tonumber(redis.call('GET', prefix .. 'base:' .. session) or '0')
"""
_TAIL_REPLY = """
local from = tonumber(ARGV[2])
local snapshot = ''
if from < base then
    snapshot = redis.call('GET', prefix .. 'snapshot:' .. session) or ''
    from = base
end
local operations = redis.call('LRANGE', KEYS[1], from - base, %d)
if snapshot == '' and #operations == 0 then
    return base
end
return {base, snapshot, operations}
"""
# Append ARGV[1] to the log, publish "<its index> <operation>" on the
# session's channel, reply as above without the operation just appended
# (its sender has it).
_APPEND = (
    _SCHEMA_CHECK
    + """
local length = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('SADD', prefix .. 'sessions', session)
redis.call('PUBLISH', prefix .. 'wake:' .. session, (base + length - 1) .. ' ' .. ARGV[1])
"""
    + _TAIL_REPLY % -2
)
# Reply as above, appending nothing (a look).
_TAIL = _SCHEMA_CHECK + _TAIL_REPLY % -1

# Compact: the state after the operations before index ARGV[1] is ARGV[2];
# drop them from the log. Only forwards, and only a log whose operation before
# ARGV[1] is the one the snapshot's copy replayed there (ARGV[5]: the SHA1 of
# its text): a log that lost its operations (a flush, a failover) and was
# written again by others is not trimmed by a snapshot of the old one, however
# late it comes. A session with nothing left in its log and nothing pending or
# claimed in the snapshot (ARGV[4] is '1') leaves the namespace's sessions set;
# its next operation puts it back, in the same script as its append. KEYS: log,
# base key, snapshot key, sessions set. ARGV: position, snapshot, session id,
# whether the snapshot holds nothing, the last operation's SHA1.
_COMPACT = """
local base = tonumber(redis.call('GET', KEYS[2]) or '0')
local position = tonumber(ARGV[1])
if position <= base or position - base > redis.call('LLEN', KEYS[1]) then
    return 0  -- (beyond the log: it was lost, by a flush or a failover)
end
if redis.sha1hex(redis.call('LINDEX', KEYS[1], position - base - 1)) ~= ARGV[5] then
    return 0  -- (another log at this index: the one compacted was lost)
end
redis.call('LTRIM', KEYS[1], position - base, -1)
redis.call('SET', KEYS[2], position)
redis.call('SET', KEYS[3], ARGV[2])
if ARGV[4] == '1' and redis.call('LLEN', KEYS[1]) == 0 then
    redis.call('SREM', KEYS[4], ARGV[3])
end
return 1
"""

#: Seconds between the housekeeping thread's turns (`RedisStore._keep_house`: leases
#: passed or to renew, operations whose results were lost, the compaction of dropped
#: copies' logs), and between the listener's looks at what it no longer uses.
HOUSEKEEPING = 0.1

#: A session's log is compacted once this many operations follow its base, and
#: no fewer than the items its state holds: see `RedisStore._compaction`.
COMPACT_AFTER = 100

#: Seconds after its last wait looked at a session (and with none on it now)
#: that this process stops listening to the session's channel (`_forget_idle`),
#: and after its last use that it drops its copy of the session (`_forget_copies`).
FORGET_AFTER = 300.0

#: Seconds (of the operations' clock readings), and operations of its log, after
#: which a session forgets a process that has appended nothing since: both must
#: have passed. See rule 4 of the module docstring.
REMEMBER_PROCESSES_FOR = 86_400.0
REMEMBER_OPERATIONS = 10_000

#: Seconds an event loop holding the listener role may leave the thread's request
#: to tend unanswered before the thread takes the role back for good (`RedisStore._watch`).
LOOP_PATIENCE = 1.0

#: An operation or a snapshot as compact ASCII JSON: ``json.dumps`` with separators,
#: without making an encoder at every call.
_to_json = json.JSONEncoder(separators=(",", ":")).encode

#: How many sessions `RedisStore.sessions` reads in one round trip.
SESSIONS_PER_ROUND_TRIP = 500

# Claim the namespace for this schema, or say which schema holds it.
_SCHEMA = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return tonumber(redis.call('GET', KEYS[1]))
"""


@final
class _Replica(LocalStore):
    """This process's copy of the sessions it touched, changed only by replaying their logs."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        super().__init__("Redis store's replica")
        #: The clock reading of the operation being replayed (or of the last one, for a look).
        self.now = 0

    def _forget_closed_windows(self, now_ms: int) -> None:
        # Only the session's own log may forget its keys (its pushes do, in
        # SessionState.push_with): other sessions' clocks are other processes'.
        self._key_windows.clear()

    def forget(self, session_id: str) -> SessionState | None:
        """Drop the copy of *session_id* (under the store's lock); return what it was."""
        self._active.pop(session_id, None)
        self._expiring.pop(session_id, None)
        return self._sessions.pop(session_id, None)


@final
class _Track:
    """Where this process's replica of one session stands in the session's log."""

    __slots__ = (
        "applied",
        "base",
        "claims",
        "last",
        "life",
        "listening",
        "loaded",
        "lock",
        "looked",
        "marks",
        "now",
        "pins",
        "position",
        "settled",
        "taken",
        "used",
        "used_position",
    )

    def __init__(self) -> None:
        #: Held by this process's round trip and replay of the session, so that
        #: its operations on it reach the log in the order of their numbers, and a
        #: compaction never jumps over an operation whose caller waits. (Messages
        #: replay without it: see `_absorb`.)
        self.lock = threading.Lock()
        #: The index of the next operation to replay.
        self.position = 0
        #: The index of the log's first operation kept, as last seen.
        self.base = 0
        #: The text of the operation at ``position - 1``, once one was replayed
        #: into this copy (a compaction names it: see ``_COMPACT``).
        self.last: bytes | None = None
        #: Process id -> (the counter of its last operation applied, that
        #: operation's clock reading, its index in the log), least recently
        #: applied first: retried copies are skipped (see `RedisStore._apply`).
        self.applied: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        #: How many times the session was cleared: a cursor names the life it read.
        self.life = 0
        #: The clock reading of the last operation replayed.
        self.now = 0
        #: Claim id -> (the replica's record, lease deadline): the claims still held.
        self.claims: dict[str, tuple[ClaimRecord, int]] = {}
        #: Process id -> (counter, record) of the take (a drain, a take at a
        #: cursor) that is its last operation applied: given back if its next
        #: operation says it never learned the result.
        self.taken: dict[str, tuple[int, ClaimRecord]] = {}
        #: The copy has been brought to the log's present once (by a reply, or
        #: by a message with no gap before it): see rule 5 of the module docstring.
        self.loaded = False
        #: The listener hears the session's channel (its subscription is confirmed).
        self.listening = False
        #: When a wait last looked at the session (monotonic seconds): see `_forget_idle`.
        self.looked = 0.0
        #: How many uses hold the track (`_pin`): a pinned track is never dropped.
        self.pins = 0
        #: When a use last let go of the track (monotonic seconds), and its
        #: position then: see `_forget_copies`.
        self.used = 0.0
        self.used_position = 0
        #: How many times the session was marked stale: an operation may be in the
        #: log that the replica lacks and whose message was heard or lost. Counted
        #: under the store's lock, as is `settled`.
        self.marks = 1
        #: The marks that a look at the server has made good: it read `marks`, then
        #: replayed the log, so every operation behind those marks is replayed.
        #: While listening and ``settled == marks`` (*fresh*), the replica holds
        #: every operation of the log but those whose messages are still to come.
        self.settled = 0


@attrs.frozen
class _Compaction:
    """A snapshot of a session's copy at *position*, to replace the log before it."""

    position: int
    snapshot: str
    #: Nothing pending or claimed: the session may leave the sessions set.
    empty: bool
    #: The SHA1 (hex) of the operation at ``position - 1`` (see ``_COMPACT``).
    last: str


@final
class _Taken:
    """What a drain or a take took, as the replica's claim record (with what each entry carried)."""

    __slots__ = ("record",)

    def __init__(self, record: ClaimRecord) -> None:
        self.record = record


@attrs.define
class _Outcome:
    #: Whether this process replayed the operation (so the rest is its result).
    replayed: bool = False
    value: Any = None
    error: BaseException | None = None
    #: Entries this operation's replay found expired (reported by its own process only).
    expired: list[InboxEntry] = attrs.Factory(list)


@final
class RedisStore:
    """Sessions kept on a Redis server, shared by every inbox that names it and the namespace.

    ``Inbox(store=RedisStore("redis://localhost:6379/0"))``. Any number of
    inboxes, in any processes on any machines, see one set of sessions: a
    session's sequence numbers are issued once each, gaplessly; each entry is
    taken by one consumer, wherever it runs; waits wake on pushes made
    anywhere. Needs the ``redis`` extra: ``pip install 'harn-inbox[redis]'``.

    Every operation is one round trip to the server (see the module
    docstring); from an event loop, use the inbox's awaitable forms
    (``await inbox.apush(...)``, ``await inbox.adrain(...)``), which run it
    off the loop, and wait with ``await inbox.wait(...)`` as usual.

    Args:
        url: A ``redis://`` (or ``rediss://``, ``unix://``) URL. Its query
            may set redis-py's connection options, but not ``encoding``,
            ``encoding_errors`` or ``decode_responses``: the store writes its
            keys as UTF-8 and reads bytes (`ValueError`).
        namespace: The prefix of every key: inboxes share sessions exactly
            when they share the server and the namespace.
        claim_lease: Seconds (on the inbox's clock) after which entries taken
            by a claim that was neither settled nor released go back to the
            head of their session, as if released: the claimant died. A live
            claimant's store renews the lease once half of it is left.
        retries: How many times an operation is sent again when the
            connection fails, before `StoreError`.

    Raises:
        ImportError: The ``redis`` package is not installed.
        TypeError, ValueError: An argument is invalid.
    """

    #: Its looks go over the network: async waits run them off the event loop.
    network: ClassVar[bool] = True

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "harn_inbox",
        claim_lease: float = 60.0,
        retries: int = 3,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"url must be str, not {type(url).__name__}")
        if not isinstance(namespace, str):
            raise TypeError(f"namespace must be str, not {type(namespace).__name__}")
        if not namespace:
            raise ValueError("namespace must not be empty")
        _check_encodable("namespace", namespace)
        if isinstance(claim_lease, bool) or not isinstance(claim_lease, (int, float)):
            raise TypeError(f"claim_lease must be a number, not {type(claim_lease).__name__}")
        if not 0 < claim_lease < float("inf"):
            raise ValueError(f"claim_lease must be positive and finite, not {claim_lease!r}")
        if isinstance(retries, bool) or not isinstance(retries, int):
            raise TypeError(f"retries must be int, not {type(retries).__name__}")
        if retries < 0:
            raise ValueError(f"retries must be at least 0, not {retries!r}")
        try:
            import redis
        except ImportError as error:  # pragma: no cover - the extra installs it
            raise ImportError(
                "RedisStore needs the redis client: pip install 'harn-inbox[redis]'"
            ) from error
        self._redis: Any = redis
        self.url = url
        self.namespace = namespace
        self._lease_ms = round(claim_lease * 1000)
        self._retries = retries
        self._client: Any = redis.Redis.from_url(
            url, socket_timeout=5.0, socket_connect_timeout=2.0, health_check_interval=0
        )
        decoding = _decoding_asked(self._client.connection_pool.connection_kwargs)
        if decoding:
            self._client.close()
            raise ValueError(
                f"url {self._safe_url()!r} sets {decoding}: the store writes its keys and "
                "channels as UTF-8 and reads its replies as bytes; leave it out of the URL"
            )
        # Scripts run on connections of the store's own (`call_script`); the
        # client's own pool serves pipelines and the subscriber.
        self._connections = Connections(self._client)
        self._append = Script(self._connections, self._client.register_script(_APPEND))
        self._tail = Script(self._connections, self._client.register_script(_TAIL))
        self._compact_script = Script(self._connections, self._client.register_script(_COMPACT))
        self._schema = Script(self._connections, self._client.register_script(_SCHEMA))
        self._replica = _Replica()
        self._tracks: dict[str, _Track] = {}
        #: Under it: the replica, the tracks, the outcomes. Never held over the network.
        self._lock = threading.Lock()
        #: This object's id in every log: operations are (process id, counter).
        self._process = f"{os.getpid():x}.{os.urandom(6).hex()}"
        self._counter = itertools.count(1)
        self._outcomes: dict[int, _Outcome] = {}
        #: Operations of ours that may have taken entries and whose results we
        #: never learned (their callers got an exception) -> their session: our
        #: next operation on the session names them, and its replay gives back
        #: what they took (`_give_back_lost`; the housekeeping thread appends a tick).
        #: Changed under the session's lock and self._lock.
        self._lost: dict[int, str] = {}
        #: What expired in the operation being replayed.
        self._expired_now: list[InboxEntry] = []
        #: (max_pending, drop_oldest, dedupe window) -> the replica's settings for a push.
        self._push_settings: dict[tuple[Any, ...], StoreSettings] = {}
        self._closed = False
        self._settings: StoreSettings | None = None
        self._attaching = False
        #: COMPACT_AFTER; the tests compact after every few operations.
        self._compact_after = COMPACT_AFTER
        #: FORGET_AFTER; the tests forget at once.
        self._forget_after = FORGET_AFTER
        #: REMEMBER_PROCESSES_FOR, in milliseconds; REMEMBER_OPERATIONS.
        self._remember_processes_ms = round(REMEMBER_PROCESSES_FOR * 1000)
        self._remember_operations = REMEMBER_OPERATIONS
        #: HOUSEKEEPING; the tests keep house at every turn of the threads.
        self._housekeeping = HOUSEKEEPING
        self._subscriber: threading.Thread | None = None
        self._keeper: threading.Thread | None = None
        #: Set by `refuse_pushes` and `close`: the subscriber stops (waits no longer park).
        self._stopping = threading.Event()
        #: Set by `close` only: the housekeeping thread stops (blocks of claims taken
        #: before the inbox closed may still run, and their leases are renewed).
        self._closing = threading.Event()
        #: The ids of the claims of this process whose blocks still run -> their
        #: session: the leases `_tend_leases` renews.
        self._held: dict[str, str] = {}
        #: Under it: who holds the listener role, and every step a listener takes (see
        #: "Listeners" in the module docstring). Taken before self._lock, never held
        #: over the network.
        self._role_lock = threading.Lock()
        #: The listener: `_THREAD`, a `LoopListener`, or None (the thread takes it next).
        self._holder: object | None = None
        #: Whether a listener has begun before: the next one wakes every wait.
        self._listened = False
        #: Whether an event loop may take the role: not over TLS (a socket that
        #: may hold decrypted data unseen by the loop), nor after one that did
        #: stopped answering (`_watch`).
        self._loops_may_listen = not issubclass(
            self._client.connection_pool.connection_class, redis.SSLConnection
        )
        #: When the listener next forgets what is unused (monotonic), and last scanned copies.
        self._housekeeping_due = 0.0
        self._copies_scanned = 0.0
        #: When the thread next asks a listening loop to tend.
        self._next_poke = 0.0
        #: How many loops were seen stopped while they listened (`_watch`).
        self._loops_stopped = 0
        #: LOOP_PATIENCE; the tests take the role back sooner.
        self._loop_patience = LOOP_PATIENCE
        #: The sessions whose channels the listener listens to (changed under self._lock).
        self._wanted: set[str] = set()
        #: Sessions wanted since the listener last looked (appended and popped lock-free).
        self._requests: deque[str] = deque()
        #: How long a session's channel name is before its id.
        self._channel_prefix = len(self._wake_channel(""))
        #: The compactions of copies the listener dropped, for the housekeeping
        #: thread to send (appended and popped lock-free).
        self._dropped: deque[tuple[str, _Compaction]] = deque()

    def __repr__(self) -> str:
        return f"<RedisStore {self._safe_url()!r} namespace={self.namespace!r}>"

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening for other processes' changes and close this object's connections.

        What the server holds stays for every other inbox. Operations whose
        results were lost are named to the server a last time, so what they
        took goes back (if it answers now). Idempotent.
        """
        self._stopping.set()
        self._closing.set()
        self._stop_listening()
        for thread in (self._subscriber, self._keeper):
            if thread is not None and thread is not threading.current_thread():
                thread.join(timeout=5)
        try:
            if self._lost and self._settings is not None:
                self._name_lost(closing=True)
            self._compact_dropped_copies()  # (queued since the housekeeping thread's last turn)
        finally:
            self._connections.close()
            self._client.close()

    # -- The seam -----------------------------------------------------------------------------

    def attach(self, settings: StoreSettings) -> None:
        """Serve the inbox whose *settings* these are; once only. Checks the namespace's schema.

        Raises:
            ValueError: Another inbox uses this store already.
            StoreError: The server cannot be reached, or the namespace was
                written by a newer schema.
        """
        with self._lock:
            if self._settings is not None or self._attaching:
                raise ValueError("store is already used by another Inbox; make one store per inbox")
            self._attaching = True
        try:
            schema = self._call(
                lambda: self._schema(keys=[self._key("schema")], args=[SCHEMA_VERSION])
            )
            if int(schema) > SCHEMA_VERSION:
                raise StoreError(self._newer_schema(int(schema)))
        finally:
            self._attaching = False
        # Only now: a store whose attach failed may be attached again.
        self._settings = settings
        self._replica.attach(
            attrs.evolve(
                settings,
                now_ms=self._replay_now,
                expired=self._collect_expired,
                notify=_ignore,
                notify_all=_ignore_all,
                cleared=_ignore,
                emit=None,
            )
        )
        self._subscriber = threading.Thread(
            target=self._listen, name=f"harn_inbox redis subscriber {self.namespace}", daemon=True
        )
        self._keeper = threading.Thread(
            target=self._keep_house,
            name=f"harn_inbox redis housekeeper {self.namespace}",
            daemon=True,
        )
        self._subscriber.start()
        self._keeper.start()

    def push(
        self, session_id: str, kind: str, content: str, source: str, ts_ms: int
    ) -> InboxEntry | PushNote:
        return self._push(session_id, kind, content, source, ts_ms, None)

    def push_with(
        self,
        session_id: str,
        kind: str,
        content: str,
        source: str,
        ts_ms: int,
        options: PushOptions,
    ) -> InboxEntry | PushNote:
        return self._push(session_id, kind, content, source, ts_ms, options)

    def _push(
        self,
        session_id: str,
        kind: str,
        content: str,
        source: str,
        ts_ms: int,
        options: PushOptions | None,
    ) -> InboxEntry | PushNote:
        if self._closed:
            raise InboxClosed(f"push to session {session_id!r} after the inbox was closed")
        settings = self._settings
        assert settings is not None
        operation: dict[str, Any] = {
            "o": "push",
            "t": ts_ms,
            "kind": kind,
            "content": content,
            "source": source,
            "max": settings.max_pending,
            "drop": settings.drop_oldest,
        }
        if options is not None:
            operation["opt"] = _options_out(options)
            operation["window"] = settings.dedupe_window_ms
        pushed: InboxEntry | PushNote = self._run(session_id, operation)
        return pushed

    def reserve_sequence(self, session_id: str) -> int:
        if self._closed:
            raise InboxClosed(
                f"reserve_sequence for session {session_id!r} after the inbox was closed"
            )
        sequence: int = self._run(session_id, {"o": "reserve", "t": self._now()})
        return sequence

    def requeue_front(self, entry: InboxEntry) -> None:
        self._run(entry.session_id, {"o": "requeue", "t": self._now(), "entry": entry.to_dict()})

    def drain(self, session_id: str) -> list[InboxEntry]:
        entries: list[InboxEntry] = self._run(session_id, {"o": "drain", "t": self._now()})
        return entries

    def read(self, session_id: str, cursor: Cursor | None) -> tuple[Cursor, list[InboxEntry], bool]:
        self._want(session_id)  # (a wait_for's look; or a drain_where, which may wait next)
        with self._looking(session_id):
            return self._replica.read(session_id, cursor)

    def take(
        self, session_id: str, cursor: Cursor, chosen: list[InboxEntry]
    ) -> list[InboxEntry] | None:
        taken: list[InboxEntry] | None = self._run(
            session_id,
            {"o": "take", "t": self._now(), **self._cursor_out(session_id, cursor, chosen)},
        )
        return taken

    def claim(
        self, session_id: str, cursor: Cursor | None, chosen: list[InboxEntry] | None
    ) -> ClaimRecord | None:
        operation: dict[str, Any] = {"o": "claim", "t": self._now()}
        if cursor is not None:
            assert chosen is not None
            operation.update(self._cursor_out(session_id, cursor, chosen))
        operation["deadline"] = operation["t"] + self._lease_ms
        record: ClaimRecord | None = self._run(session_id, operation)
        if record is not None and isinstance(record.token, str):
            with self._lock:
                self._held[record.token] = session_id  # (its lease is renewed from now on)
        return record

    def settle(self, claim: ClaimRecord) -> None:
        if claim.token is not None:
            self._let_go(claim)
            self._run(claim.session_id, {"o": "settle", "t": self._now(), "claim": claim.token})

    def release(self, claim: ClaimRecord) -> int:
        if claim.token is None:
            return 0
        self._let_go(claim)
        restored: int = self._run(
            claim.session_id, {"o": "release", "t": self._now(), "claim": claim.token}
        )
        return restored

    def _let_go(self, claim: ClaimRecord) -> None:
        # Before the settle or release is sent: should it fail, the lease is no
        # longer renewed, and the entries come back when it passes (at least once).
        with self._lock:
            self._held.pop(str(claim.token), None)

    def revoke(self, session_id: str, sequence: int) -> InboxEntry | None:
        entry: InboxEntry | None = self._run(
            session_id, {"o": "revoke", "t": self._now(), "sequence": sequence}
        )
        return entry

    def clear(self, session_id: str) -> int:
        dropped: int = self._run(session_id, {"o": "clear", "t": self._now()})
        return dropped

    def refuse_pushes(self) -> None:
        """Refuse this inbox's pushes from now on; other processes' inboxes go on.

        Its waits no longer park, so it stops listening for other processes'
        changes. Its housekeeping goes on until `close`: the blocks of claims
        taken before may still run, and their leases are renewed.
        """
        self._closed = True
        self._stopping.set()
        self._stop_listening()

    def has_pending(self, session_id: str) -> bool:
        # Only waits ask (wait, wait_any): listen to the session from now on.
        self._want(session_id)
        return self.pending_count(session_id) > 0

    def has_pending_here(self, session_id: str) -> bool | None:
        """`has_pending` from the replica, for a wait's look; None if that needs the server.

        The replica is enough while the session's channel is heard and no
        operation was missed (`_Track.settled`): an operation it lacks then is
        one whose message is still to come, and that message notifies the
        session after the listener has replayed it (`_heard`). The waiter
        was armed before it looked, so it is woken and looks again.
        """
        track = self._fresh(session_id)
        if track is None:
            return None
        with self._lock:
            if self._tracks.get(session_id) is not track or not track.loaded:
                return None  # dropped since (rule 3 of the module docstring), or reset
            self._look_at(track)
            return self._replica.has_pending(session_id)

    def read_here(
        self, session_id: str, cursor: Cursor | None
    ) -> tuple[Cursor, list[InboxEntry], bool] | None:
        """`read` from the replica, for a wait's look; None if that needs the server.

        See `has_pending_here`.
        """
        track = self._fresh(session_id)
        if track is None:
            return None
        with self._lock:
            if self._tracks.get(session_id) is not track or not track.loaded:
                return None  # dropped since (rule 3 of the module docstring), or reset
            self._look_at(track)
            return self._replica.read(session_id, cursor)

    def pending_count(self, session_id: str) -> int:
        with self._looking(session_id):
            return self._replica.pending_count(session_id)

    def snapshot(self, session_id: str) -> list[InboxEntry]:
        with self._looking(session_id):
            return self._replica.snapshot(session_id)

    def sessions(self) -> list[str]:
        # Every session the namespace has held is read: a round trip per
        # SESSIONS_PER_ROUND_TRIP of them, not one each.
        known = sorted(
            member.decode()
            for member in self._call(lambda: self._client.smembers(self._key("sessions")))
        )
        pending = []
        for first in range(0, len(known), SESSIONS_PER_ROUND_TRIP):
            chunk = known[first : first + SESSIONS_PER_ROUND_TRIP]
            tracks = self._pin(*chunk)
            try:
                self._catch_up(*chunk)
                with self._lock:
                    self._check_replayed(chunk, tracks)
                    for session_id, track in zip(chunk, tracks, strict=True):
                        self._look_at(track)
                        if self._replica.pending_count(session_id) > 0:
                            pending.append(session_id)
            finally:
                self._unpin(tracks)
        return pending

    def statistics(self, session_id: str) -> SessionStatistics:
        with self._looking(session_id):
            statistics = self._replica.statistics(session_id)
        return attrs.evolve(statistics, durable=True)

    # -- Operations ---------------------------------------------------------------------------

    def _run(self, session_id: str, operation: dict[str, Any], *, once: bool = False) -> Any:
        """Append *operation* to the session's log, replay up to it, return its result.

        Sent again on a connection failure (`_call`), unless *once*.
        """
        outcome = _Outcome()
        (track,) = self._pin(session_id)
        try:
            with track.lock:
                # Numbered under the session's lock: this process's operations
                # reach the session's log in the order of their numbers, which is
                # what lets replay tell a retried copy (a number not above the last
                # applied) from a new operation.
                counter = next(self._counter)
                operation["p"] = self._process
                operation["n"] = counter
                # Our earlier operations on the session whose results we never
                # learned: its replay gives back what they took (`_apply`). Added
                # to under this lock only, so none is missed here.
                lost = self._lost_in(session_id)
                if lost:
                    operation["lost"] = lost
                text = _to_json(operation)
                self._outcomes[counter] = outcome
                # The reply starts here (hearers may replay on meanwhile: see `_absorb`).
                start = track.position
                learned = False
                try:
                    try:
                        reply = self._call(
                            lambda: self._append(
                                keys=[self._log_key(session_id)],
                                args=[text, start, self.namespace, session_id, SCHEMA_VERSION],
                            ),
                            retries=0 if once else self._retries,
                        )
                    except StoreError:
                        # Its message may have been heard and replayed: then it ran,
                        # once, and its result is in hand. If not, it may reach the
                        # log after all (it sat in a paused server's socket, say).
                        if not outcome.replayed:
                            raise
                    else:
                        # (The reply ends before the operation itself: it is *text*.)
                        base, snapshot, log = _tail_parts(reply)
                        self._absorb(
                            session_id, track, start, base, snapshot, [*log, text.encode()]
                        )
                    learned = outcome.replayed
                finally:
                    # Whatever was raised (a garbled reply, an interrupt...): with
                    # the session's lock still held, so the next operation names it.
                    self._settle_outcome(session_id, operation, outcome.replayed, learned, lost)
        finally:
            self._unpin([track])
        if not outcome.replayed:
            # Sent again after a failed connection, its first copy was replayed
            # by another process only, into a snapshot of the compacted log.
            raise StoreError(
                f"{self!r}: an operation on session {session_id!r} was applied, but its "
                "result is lost: its connection failed and another process compacted the "
                "log past it before it was read (what it took goes back at the head), or "
                "this process could not replay the log"
            )
        settings = self._settings
        if outcome.expired and settings is not None:
            try:
                settings.expired(outcome.expired)
            except Exception:  # (the operation is done and its result learned: never lost)
                fallback_logger.exception("harn_inbox: could not report entries that expired")
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    def _lost_in(self, session_id: str) -> list[int]:
        """Our operations on *session_id* whose results we never learned (under its lock)."""
        if not self._lost:  # (the usual case, read without the store's lock)
            return []
        with self._lock:
            return sorted(
                counter for counter, lost_in in self._lost.items() if lost_in == session_id
            )

    def _settle_outcome(
        self,
        session_id: str,
        operation: dict[str, Any],
        replayed: bool,
        learned: bool,
        lost: list[int],
    ) -> None:
        """After an operation's round trip (under its session's lock), with replay shut out.

        Replayed, it gave back what the operations it named as *lost* took:
        they are settled. Its result not *learned* (its round trip failed, it
        was compacted past, or something was raised after its replay), it is
        lost itself if it may have taken entries: the next operation on the
        session names it.
        """
        counter = operation["n"]
        if learned and not lost:
            # Every operation's path: nothing to settle but its outcome (a dict's
            # del is atomic; a copy heard later finds none, and is skipped).
            del self._outcomes[counter]
            return
        with self._lock:
            del self._outcomes[counter]
            if replayed:
                for earlier in lost:
                    self._lost.pop(earlier, None)
            if not learned and operation["o"] in _TAKING:
                self._lost[counter] = session_id

    def _catch_up(self, *session_ids: str) -> None:
        """Replay what the sessions' logs hold beyond this replica: a look's round trip.

        Several sessions (distinct, sorted) share one round trip. Their locks
        are taken in that order; no other caller holds two, so none waits in
        a cycle.
        """
        tracks = self._pin(*session_ids)  # (kept until the ticks are appended)
        try:
            with contextlib.ExitStack() as held:
                for track in tracks:
                    held.enter_context(track.lock)
                with self._lock:
                    marks = [track.marks for track in tracks]
                    starts = [track.position for track in tracks]
                replies = self._call(lambda: self._tails(session_ids, starts))
                for session_id, track, start, reply in zip(
                    session_ids, tracks, starts, replies, strict=True
                ):
                    self._absorb(session_id, track, start, *_tail_parts(reply))
                with self._lock:
                    # Settled only now that the reply is replayed (a look on another
                    # thread must not read the replica before), and only as far as the
                    # marks made before the round trip: an operation behind them was
                    # appended before it, so it is in the reply. A later mark stands.
                    for track, read in zip(tracks, marks, strict=True):
                        track.settled = max(track.settled, read)
            for session_id, track in zip(session_ids, tracks, strict=True):
                if self._due(session_id, track):
                    # Purge by this process's clock, and give back claims whose lease
                    # passed, through the log: for every replica alike.
                    self._run(session_id, {"o": "tick", "t": self._now()})
        finally:
            self._unpin(tracks)

    def _tails(self, session_ids: tuple[str, ...], starts: list[int]) -> list[Any]:
        """The replies of `_TAIL` for each session from its start: one round trip."""
        if len(session_ids) == 1:
            return [self._tail_of(session_ids[0], starts[0], None)]
        pipeline = self._client.pipeline(transaction=False)
        for session_id, start in zip(session_ids, starts, strict=True):
            self._tail_of(session_id, start, pipeline)
        return list(pipeline.execute())

    def _tail_of(self, session_id: str, start: int, pipeline: Any) -> Any:
        keys = [self._log_key(session_id)]
        return self._tail(keys, ["", start, self.namespace, session_id, SCHEMA_VERSION], pipeline)

    def _absorb(
        self,
        session_id: str,
        track: _Track,
        start: int,
        base: int,
        snapshot: bytes,
        log: list[bytes],
        compact: bool = True,
    ) -> None:
        """Replay a script's reply, or a message.

        *log* holds the operations from index *start* on: a reply's from the
        position its request sent (see ``_TAIL_REPLY``), or from *base* after
        a snapshot of what came before it; a message's, its own. Replies and
        messages replay by index, under the store's lock, whichever comes
        first: the other skips what is replayed. A log that starts beyond the
        replica (a message after one not heard) is not replayed: the session
        is marked stale instead.
        """
        cleared = False
        with self._lock:
            # Rule 5 of the module docstring: a copy that knew nothing of the
            # session before (new, or read again after it was dropped) cannot
            # tell a clear that came after a wait of this inbox began from one
            # long before, so it reports none. A wait can be parked on such a
            # copy only if the copy was dropped as the wait began (between its
            # first look and its parking); its looks then read the session
            # after those clears, as a wait that began after them would.
            news = track.loaded
            if snapshot and start < base:
                start = base
                if track.position < base:
                    # Compacted past us (by another process): what it replayed
                    # there is in the snapshot. No operation of ours is skipped:
                    # each is in the reply to its own append.
                    cleared = self._load(session_id, track, json.loads(snapshot), base)
            track.base = max(track.base, base)
            if start > track.position:
                track.marks += 1
                log = []
            else:
                track.loaded = True  # (what follows is replayed: the copy has the log's present)
            for index, text in enumerate(log, start):
                if index < track.position:
                    continue
                track.position = index + 1
                try:
                    # (Decoded here: given bytes, json.loads first guesses their
                    # encoding, in Python, on every call. An operation is ASCII JSON.)
                    operation = json.loads(text.decode())
                    track.last = text
                    self._apply(session_id, track, operation)
                    cleared |= operation["o"] == "clear" and operation["p"] != self._process
                except BaseException as error:
                    # (Refusals are results, not raised: this is an operation this
                    # code cannot replay.) The copy may be half changed: it is read
                    # again from the log at its next use, never compacted from.
                    self._reset(session_id, track)
                    if isinstance(error, (StoreError, KeyboardInterrupt, SystemExit)):
                        raise
                    raise StoreError(
                        f"{self!r}: operation {index} of session {session_id!r}'s log "
                        f"cannot be replayed ({error!r})"
                    ) from error
            compaction = None
            if compact:
                try:
                    compaction = self._compaction(session_id, track, self._compact_after)
                except Exception:  # (housekeeping: the operations are replayed, their results due)
                    fallback_logger.exception("harn_inbox: could not compact %r", session_id)
        if compaction is not None:
            self._compact(session_id, track, compaction)
        if cleared and news and self._settings is not None:
            # Cleared by another process: this inbox's waits on it end, as its
            # own clear_session ends them (which tells its lot itself). The
            # lot's lock is never held around a look, and waking calls no user code.
            self._settings.cleared(session_id)

    def _apply(self, session_id: str, track: _Track, operation: dict[str, Any]) -> None:
        """Replay one operation (under self._lock, in log order)."""
        process, counter, now = operation["p"], operation["n"], operation["t"]
        index = track.position - 1  # (`_absorb` moved past it)
        applied = track.applied
        if applied.get(process, (0, 0, 0))[0] >= counter:
            # A retried copy: applied once already, its result given then. (Or
            # an operation whose caller gave up, overtaken by a later one:
            # skipped, in every replica alike, so it took nothing.)
            return
        applied[process] = (counter, now, index)
        applied.move_to_end(process)
        # Forget the processes that have appended nothing for a long time (rule
        # 4): the same in every replica, which replay the same operations.
        before_clock = now - self._remember_processes_ms
        before_index = index - self._remember_operations
        while True:
            first = next(iter(applied))  # (at the latest, the process just applied)
            _, clock, last = applied[first]
            if clock >= before_clock or last >= before_index:
                break
            del applied[first]
            track.taken.pop(first, None)
        track.now = now
        self._replica.now = now
        outcome = self._outcomes.get(counter) if process == self._process else None
        self._expired_now = []
        failure: BaseException | None = None
        value = None
        try:
            if track.claims:
                self._expire_leases(track, now)
            self._give_back_lost(session_id, track, operation)
            self._purge(session_id)
            value = self._dispatch(session_id, track, operation)
        except (InboxFull, ValueError) as error:
            # Refused (a full session, an equal entry already pending): the
            # same in every replica, and the operation changed nothing.
            failure = error
        expired, self._expired_now = self._expired_now, []
        if isinstance(value, _Taken):
            if value.record.entries:
                # Kept until the process's next operation here says whether it
                # learned this one's result (see `_give_back_lost`).
                track.taken[process] = (counter, value.record)
            value = value.record.entries
        if outcome is not None:
            outcome.replayed = True
            outcome.value, outcome.error, outcome.expired = value, failure, expired

    def _give_back_lost(self, session_id: str, track: _Track, operation: dict[str, Any]) -> None:
        """Give back what the process's earlier operations named as lost took (in every replica).

        A process names, in each operation, its earlier operations on the
        session whose results it never learned (its caller got an exception):
        what they took goes back to the head, in order, as a release would
        put it. Each operation of a process settles all of its earlier ones,
        so a replica keeps only the last take of each (`_Track.taken`), until
        the process is forgotten (rule 4 of the module docstring): by the log
        alone, so alike in every replica, whatever the processes' clocks.
        """
        process = operation["p"]
        last = track.taken.pop(process, None)
        lost = operation.get("lost")
        if lost is None:
            return
        # The latest first: each goes to the head, so what was taken first ends there.
        if last is not None and last[0] in lost:
            self._give_back(session_id, last[1])
        for counter in sorted(lost, reverse=True):
            held = track.claims.pop(f"{process}/{counter}", None)
            if held is not None:
                self._give_back(session_id, held[0])

    def _dispatch(self, session_id: str, track: _Track, operation: dict[str, Any]) -> Any:
        replica = self._replica
        kind = operation["o"]
        now = operation["t"]
        if kind == "push":
            replica._settings = self._settings_for(
                operation["max"], operation["drop"], operation.get("window", 0)
            )
            options = operation.get("opt")
            if options is None:
                # (The in-memory store's own fast path: the replica has no hooks to run.)
                return replica.push(
                    session_id, operation["kind"], operation["content"], operation["source"], now
                )
            return replica.push_with(
                session_id,
                operation["kind"],
                operation["content"],
                operation["source"],
                now,
                _options_in(options),
            )
        if kind == "reserve":
            return replica.reserve_sequence(session_id)
        if kind == "requeue":
            replica.requeue_front(InboxEntry.from_dict(operation["entry"]))
            return None
        if kind == "drain":
            # As a claim, which changes the session as a drain does, to know what
            # each entry carried should it have to go back (see `_apply`).
            record = replica.claim(session_id, None, None)
            assert record is not None
            return _Taken(record)
        if kind == "take":
            cursor, chosen = self._cursor_in(session_id, track, operation)
            record = replica.claim(session_id, cursor, chosen)
            return None if record is None else _Taken(record)
        if kind == "restore":
            # (Written by this layout before lost operations were named: what
            # one took, given back by its own process once it replayed it.)
            session = replica._sessions.get(session_id)
            record = ClaimRecord(
                session_id,
                [InboxEntry.from_dict(data) for data in operation["entries"]],
                [(key, expires) for key, expires in operation["metas"]],
                None,
            )
            if session is not None and operation["life"] == track.life:
                record.life = session
            return self._give_back(session_id, record)
        if kind == "claim":
            if "version" in operation:
                cursor, chosen = self._cursor_in(session_id, track, operation)
                record = replica.claim(session_id, cursor, chosen)
            else:
                record = replica.claim(session_id, None, None)
            if record is None:
                return None
            if not record.entries:
                return record
            claim_id = f"{operation['p']}/{operation['n']}"
            track.claims[claim_id] = (record, operation["deadline"])
            # The caller's record: the replica's entries, and the claim's id to settle it by.
            return ClaimRecord(session_id, record.entries, record.metas, claim_id)
        if kind == "renew":
            for claim_id in operation["claims"]:
                held = track.claims.get(claim_id)
                if held is not None:  # (else settled, released, or its lease passed: fenced)
                    track.claims[claim_id] = (held[0], max(held[1], operation["deadline"]))
            return None
        if kind == "settle":
            track.claims.pop(operation["claim"], None)  # not held (its lease passed): fenced
            return None
        if kind == "release":
            held = track.claims.pop(operation["claim"], None)
            return 0 if held is None else self._give_back(session_id, held[0])
        if kind == "revoke":
            return replica.revoke(session_id, operation["sequence"])
        if kind == "clear":
            track.life += 1
            return replica.clear(session_id)
        if kind == "tick":
            replica.pending_count(session_id)  # purges at the tick's clock reading
            return None
        raise StoreError(f"{self!r}: unknown operation {kind!r} in session {session_id!r}'s log")

    def _purge(self, session_id: str) -> None:
        # Purged at every operation's clock reading, in every replica (and after
        # a give-back: `_give_back`): a look (at the last one's, `_look_at`) then
        # changes nothing.
        if session_id in self._replica._expiring:
            self._replica.pending_count(session_id)

    def _give_back(self, session_id: str, record: ClaimRecord) -> int:
        # What a release or a lost take's give-back puts back may have expired by now.
        restored = self._replica.release(record)
        self._purge(session_id)
        return restored

    def _settings_for(
        self, max_pending: int | None, drop_oldest: bool, window: int
    ) -> StoreSettings:
        # A push is replayed with the settings of the inbox that made it.
        key = (max_pending, drop_oldest, window)
        settings = self._push_settings.get(key)
        if settings is None:
            assert self._replica._settings is not None
            settings = self._push_settings[key] = attrs.evolve(
                self._replica._settings,
                max_pending=max_pending,
                drop_oldest=drop_oldest,
                dedupe_window_ms=window,
            )
        return settings

    def _expire_leases(self, track: _Track, now: int) -> None:
        for claim_id, (record, deadline) in list(track.claims.items()):
            if deadline <= now:
                del track.claims[claim_id]
                self._replica.release(record)

    # -- Cursors in the log -------------------------------------------------------------------

    def _cursor_out(
        self, session_id: str, cursor: Cursor, chosen: list[InboxEntry]
    ) -> dict[str, Any]:
        # A cursor names the session's life, its version and the last key read;
        # an entry chosen, its sequence (entries are the same in every replica)
        # and, where entries of an earlier life share it, which of them from
        # the head ("nth": the pending order is the same in every replica).
        with self._lock:
            track = self._tracks.get(session_id)
            session = self._replica._sessions.get(session_id)
            if track is None or session is None or cursor.session is not session:
                # Read in a life that has ended, or of no record, or in a copy
                # dropped since (its session object is not the replica's): refused.
                life, nth = -1, []
            else:
                life = track.life
                nth = [_nth(session, entry) for entry in chosen]
        out = {
            "life": life,
            "version": cursor.version,
            "last": cursor.last,
            "chosen": [entry.sequence for entry in chosen],
        }
        if any(nth):
            out["nth"] = nth
        return out

    def _cursor_in(
        self, session_id: str, track: _Track, operation: dict[str, Any]
    ) -> tuple[Cursor, list[InboxEntry]]:
        session = self._replica._sessions.get(session_id)
        if session is None or operation["life"] != track.life:
            # Read in a life that has ended: a cursor of no current session, refused.
            gone = SessionState()
            gone.version = CLEARED
            return Cursor(gone, operation["version"], operation["last"]), []
        nth = operation.get("nth")
        if nth is None:
            chosen = [
                entry
                for sequence in operation["chosen"]
                if (entry := session._find_sequence(sequence)) is not None
            ]
        else:
            chosen = []
            for sequence, index in zip(operation["chosen"], nth, strict=True):
                found = session._with_sequence(sequence)
                if 0 <= index < len(found):
                    chosen.append(found[index])
        return Cursor(session, operation["version"], operation["last"]), chosen

    # -- Inside -------------------------------------------------------------------------------

    def _track(self, session_id: str) -> _Track:
        # With or without self._lock held: setdefault is atomic, so two threads
        # that find none get the same one. (Without a pin, the track may be
        # dropped at any time: see the module docstring's rules.)
        track = self._tracks.get(session_id)
        if track is None:
            # Every use of a session makes its track first: a session id that
            # cannot name a key is refused here, before any operation is numbered,
            # any pin taken, or its channel wanted.
            _check_encodable("session_id", session_id)
            track = self._tracks.setdefault(session_id, _Track())
        return track

    def _pin(self, *session_ids: str) -> list[_Track]:
        """The sessions' tracks, kept (never dropped) until `_unpin`."""
        with self._lock:
            tracks = [self._track(session_id) for session_id in session_ids]
            for track in tracks:
                track.pins += 1
        return tracks

    def _unpin(self, tracks: list[_Track]) -> None:
        used = time.monotonic()
        with self._lock:
            for track in tracks:
                track.pins -= 1
                track.used = used
                track.used_position = track.position

    @contextlib.contextmanager
    def _looking(self, session_id: str) -> Iterator[None]:
        """A look: the session caught up, then the block under the store's lock (copy kept)."""
        tracks = self._pin(session_id)
        try:
            self._catch_up(session_id)
            with self._lock:
                self._check_replayed([session_id], tracks)
                self._look_at(tracks[0])
                yield
        finally:
            self._unpin(tracks)

    def _check_replayed(self, session_ids: Sequence[str], tracks: list[_Track]) -> None:
        """Raise if a copy just caught up was reset since (under self._lock): see `_reset`."""
        for session_id, track in zip(session_ids, tracks, strict=True):
            if not track.loaded:
                raise StoreError(
                    f"{self!r}: session {session_id!r} holds an operation this process "
                    "could not replay: is its namespace written by a newer harn_inbox?"
                )

    def _look_at(self, track: _Track) -> None:
        # A look purges nothing of its own: the replica's clock reads the log's.
        self._replica.now = track.now

    def _replay_now(self) -> int:
        return self._replica.now

    def _collect_expired(self, entries: list[InboxEntry]) -> None:
        # From the replica, after an operation replayed (under self._lock, on this thread).
        self._expired_now += entries

    def _due(self, session_id: str, track: _Track) -> bool:
        """Whether an entry's expiry or a claim's lease has passed by this process's clock."""
        if not track.claims and session_id not in self._replica._expiring:
            # (Read without the lock, as the look that follows reads under it: an
            # operation replayed in between is one this look may see or not.)
            return False
        now = self._now()  # the inbox's clock: read with no lock held
        with self._lock:
            if track.claims and min(deadline for _, deadline in track.claims.values()) <= now:
                return True
            if session_id not in self._replica._expiring:
                return False
            session = self._replica._sessions.get(session_id)
            extras = None if session is None else session.extras
            return extras is not None and bool(extras.expiry) and bool(extras.expiry[0][0] <= now)

    # -- Compaction ---------------------------------------------------------------------------
    #
    # A log would grow for as long as its session lives. Once COMPACT_AFTER
    # operations follow its base, and no fewer than the items its state holds
    # (entries pending, claimed, and taken by each process's last take: see
    # `_give_back_lost`; processes remembered; dedupe keys), the process that
    # replayed it writes that state down as the log's snapshot
    # (`harn_inbox.stores._snapshots`), at its position, and drops the
    # operations before it (one script, only forwards). Every replica computes
    # the same state there, so a replica further back loads the snapshot and
    # replays on from it. Writing a snapshot costs what the state holds, and
    # happens once per that many operations: a constant share of each. A
    # process that drops its copy of a session compacts the log as far as the
    # copy goes (after any number of operations), so that an idle session's
    # log is empty and, with nothing pending or claimed, `sessions` no longer
    # reads it (see `_COMPACT`).

    def _compaction(
        self, session_id: str, track: _Track, after: int, *, sized: bool = True
    ) -> _Compaction | None:
        """The compaction of the log up to the copy's position, if *after* operations
        follow the log's base and, if *sized*, no fewer than the items the snapshot
        would hold (under self._lock)."""
        operations = track.position - track.base
        if operations < after or track.last is None:
            return None
        session = self._replica._sessions.get(session_id)
        pending = 0 if session is None else session.pending_count()
        held = sum(len(record.entries) for record, _ in track.claims.values())
        if sized and operations < pending + held + self._kept(session, track):
            return None  # (see the comment above)
        state: dict[str, Any] = {
            "life": track.life,
            "now": track.now,
            "applied": [[process, *last] for process, last in track.applied.items()],
            "record": session is not None,
            "claims": [
                [claim_id, deadline, *dump_claim(record, session)]
                for claim_id, (record, deadline) in track.claims.items()
            ],
            "taken": [
                [process, counter, *dump_claim(record, session)]
                for process, (counter, record) in track.taken.items()
            ],
        }
        if session is not None:
            state.update(dump_session(session))
        snapshot = _to_json(state)
        last = hashlib.sha1(track.last, usedforsecurity=False).hexdigest()
        return _Compaction(track.position, snapshot, not pending and not held, last)

    @staticmethod
    def _kept(session: SessionState | None, track: _Track) -> int:
        """What else a snapshot of the session holds, in items: takes, processes, dedupe keys."""
        kept = sum(len(record.entries) for _, record in track.taken.values()) + len(track.applied)
        if session is not None and session.extras is not None:
            kept += len(session.extras.dedupe_order)
        return kept

    def _compact(self, session_id: str, track: _Track, compaction: _Compaction) -> None:
        try:
            done = self._call(lambda: self._compact_at(session_id, compaction, None))
        except StoreError:  # compaction is housekeeping: the next one will do
            return
        if done:
            with self._lock:
                track.base = max(track.base, compaction.position)

    def _compact_at(self, session_id: str, compaction: _Compaction, pipeline: Any) -> Any:
        keys = [
            self._log_key(session_id),
            self._key(f"base:{session_id}"),
            self._key(f"snapshot:{session_id}"),
            self._key("sessions"),
        ]
        args = [
            compaction.position,
            compaction.snapshot,
            session_id,
            int(compaction.empty),
            compaction.last,
        ]
        return self._compact_script(keys, args, pipeline)

    def _compact_dropped_copies(self) -> None:
        """Send the compactions `_forget_copies` queued (by the housekeeping thread, or close)."""
        # (Close may run it while a housekeeping thread that outlived its join does.)
        dropped = _take_all(self._dropped)
        if dropped:
            self._compact_dropped(dropped)

    def _compact_dropped(self, compactions: list[tuple[str, _Compaction]]) -> None:
        """Compact the logs of copies just dropped: a round trip per `SESSIONS_PER_ROUND_TRIP`."""
        for first in range(0, len(compactions), SESSIONS_PER_ROUND_TRIP):
            pipeline = self._client.pipeline(transaction=False)
            for compaction in compactions[first : first + SESSIONS_PER_ROUND_TRIP]:
                self._compact_at(*compaction, pipeline)
            try:
                pipeline.execute()
            except self._redis.RedisError:  # housekeeping: a later use compacts them
                return

    def _load(self, session_id: str, track: _Track, state: dict[str, Any], base: int) -> bool:
        """Make the replica of the session what *state* says it is at *base* (under self._lock).

        Returns whether the session was cleared meanwhile (a life ended).
        """
        replica = self._replica
        old = replica.forget(session_id)
        ended = bool(state["life"] != track.life)
        if old is not None and ended:
            old.version = CLEARED  # cursors read in that life see it end
        session = None
        if state["record"]:
            # The same object within one life, and the same entries in it: cursors
            # read in it stay valid, and what they read is still found.
            session = SessionState() if old is None or ended else old
            load_session(state, session)
            replica._sessions[session_id] = session
            replica._settle(session_id, session)
        track.life = state["life"]
        track.now = state["now"]
        applied = state["applied"]
        if isinstance(applied, dict):  # (written before processes were forgotten)
            applied = [[process, counter, state["now"]] for process, counter in applied.items()]
        track.applied = OrderedDict()
        for process, counter, clock, *index in applied:
            # (An entry written before its index was kept: the last index it can
            # have, so that the process is remembered the longest.)
            track.applied[process] = (counter, clock, index[0] if index else base - 1)
        track.claims = {
            claim_id: (load_claim(session_id, record, session), deadline)
            for claim_id, deadline, *record in state.get("claims", ())
        }
        track.taken = {
            process: (counter, load_claim(session_id, record, session))
            for process, counter, *record in state.get("taken", ())
        }
        track.position = track.base = base
        track.last = None  # (compacted away: a compaction needs an operation replayed after)
        return ended

    def _reset(self, session_id: str, track: _Track) -> None:
        """Make the session's copy a new one, read from the log's start (under self._lock)."""
        self._replica.forget(session_id)
        track.position = track.base = track.life = track.now = 0
        track.last = None
        track.applied = OrderedDict()
        track.claims = {}
        track.taken = {}
        track.loaded = False
        track.marks += 1

    def _now(self) -> int:
        settings = self._settings
        assert settings is not None
        return settings.now_ms()

    def _key(self, name: str) -> str:
        return f"{self.namespace}:{name}"

    def _log_key(self, session_id: str) -> str:
        # The scripts name the session's other keys from the namespace and the id.
        return self._key(f"log:{session_id}")

    def _wake_channel(self, session_id: str) -> str:
        # One per session: a process hears only the sessions it waits on.
        return f"{self.namespace}:wake:{session_id}"

    def _safe_url(self) -> str:
        # No password in reprs and messages.
        kwargs = self._client.connection_pool.connection_kwargs
        if "path" in kwargs:
            return f"unix://{kwargs['path']}"
        return f"redis://{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"

    def _newer_schema(self, schema: int) -> str:
        return (
            f"{self!r}: namespace {self.namespace!r} was written by schema {schema}; this "
            f"harn_inbox reads schema {SCHEMA_VERSION} "
            "(upgrade harn_inbox, or use another namespace)"
        )

    def _call(self, command: Any, retries: int | None = None) -> Any:
        """Run *command* (a round trip), sending it again on a connection failure (up to
        *retries* times, the store's by default), then give up.

        Safe to repeat: an append carries its operation's id (replay skips a
        second copy), and the rest only read.
        """
        redis = self._redis
        limit = self._retries if retries is None else retries
        delay = 0.05
        for attempt in itertools.count():
            try:
                return command()
            except redis.ResponseError as error:
                if str(error).startswith("HARN_SCHEMA"):
                    raise StoreError(self._newer_schema(int(str(error).split()[1]))) from None
                raise StoreError(f"{self!r}: the server refused: {error}") from error
            except (redis.ConnectionError, redis.TimeoutError) as error:
                if attempt >= limit:
                    raise StoreError(
                        f"{self!r}: the server did not answer after {attempt + 1} tries ({error}); "
                        "an operation that changes a session may or may not have been applied"
                    ) from error
                time.sleep(delay)
                delay *= 2
            except redis.RedisError as error:  # (a reply it cannot read, say: not sent again)
                raise StoreError(
                    f"{self!r}: {error}; "
                    "an operation that changes a session may or may not have been applied"
                ) from error
        raise AssertionError("unreachable")  # pragma: no cover

    # -- Listeners -----------------------------------------------------------------------------

    def _listen(self) -> None:
        """The subscriber thread: listen while no event loop does, and watch one that does.

        It listens to the channels of the sessions this process has looked at
        for a wait (`_want`), subscribing to new ones as they come. A
        subscription's confirmation notifies its session: a look made before it
        may have missed a change whose message went out before it, so the
        session's waiters look again. After a reconnect every wanted channel is
        subscribed again, and every parked wait looks again. While an event
        loop holds the role (`LoopListener`), it only asks that loop to tend
        (`_watch`), and takes the role back when the loop ends or stops answering.
        """
        redis = self._redis
        pubsub = None
        while not self._stopping.is_set():
            holder = self._holder
            if pubsub is not None and holder is not _THREAD:
                # The role left the thread (and may be back with nobody): what
                # this connection hears counts for nothing any more.
                _close_quietly(pubsub)
                pubsub = None
            if isinstance(holder, LoopListener):
                self._watch(holder)
                self._stopping.wait(0.02)
                continue
            try:
                if pubsub is None:
                    pubsub = self._client.pubsub()
                    wanted = self._listening_begins(_THREAD)
                    if wanted is None:
                        continue
                    if wanted:
                        pubsub.subscribe(*map(self._wake_channel, wanted))  # (connects)
                    self._listening_resumes(_THREAD)
                work = self._listener_tends(_THREAD, True)
                if work is None:
                    continue
                requested, forgotten = work
                if requested:
                    pubsub.subscribe(*map(self._wake_channel, requested))
                if forgotten:
                    pubsub.unsubscribe(*map(self._wake_channel, forgotten))
                message = pubsub.get_message(timeout=0.02)
                if message is not None:
                    reply = [message["type"].encode(), message["channel"], message["data"]]
                    unsubscribe = self._listener_hears(_THREAD, reply)
                    if unsubscribe:
                        pubsub.unsubscribe(*map(self._wake_channel, unsubscribe))
            except Exception as error:
                if not isinstance(error, (redis.ConnectionError, redis.TimeoutError, StoreError)):
                    fallback_logger.exception("harn_inbox: the Redis subscriber starts again")
                with self._role_lock:
                    if self._holder is _THREAD:
                        self._deaf()
                if pubsub is not None:
                    _close_quietly(pubsub)
                    pubsub = None
                self._stopping.wait(0.1)
        self._stop_listening()
        if pubsub is not None:
            _close_quietly(pubsub)

    def _keep_house(self) -> None:
        """Tend leases (`_tend_leases`), name lost operations (`_name_lost`) and compact
        the logs of dropped copies (`_forget_copies`), every `HOUSEKEEPING` seconds, on a
        thread of their own.

        Each makes round trips (one per session concerned; the compactions, one
        per `SESSIONS_PER_ROUND_TRIP`): on the listener's thread, they would hold
        up the messages that wake this process's waits.
        """
        while not self._closing.wait(max(self._housekeeping, 0.005)):
            try:
                self._tend_leases()
                self._name_lost()
                self._compact_dropped_copies()
            except Exception as error:
                if not isinstance(error, (StoreError, self._redis.RedisError)):
                    fallback_logger.exception("harn_inbox: the Redis store's housekeeping failed")

    def _offer_role(self) -> None:
        """Let the event loop running here take the listener role, if nobody but the
        thread holds it (see "Listeners" in the module docstring)."""
        if not self._loops_may_listen or self._stopping.is_set():
            return
        listener = LoopListener.here(self)
        if listener is None:
            return
        with self._role_lock:
            if isinstance(self._holder, LoopListener) or self._stopping.is_set():
                return
            # From here on the thread's connection counts for nothing: every
            # session is stale until the loop's subscriptions are confirmed.
            self._holder = listener
            self._deaf()
        listener.start()

    def _watch(self, listener: LoopListener) -> None:
        """Ask the listening loop to tend every `HOUSEKEEPING` seconds; take the role back
        from a loop that is not running (stopped or closed), or that has not answered for
        `LOOP_PATIENCE` seconds (blocked: then no loop listens again)."""
        now = time.monotonic()
        poked = listener.poked
        if listener.gone():
            # (A loop seen stopped twice, run piecemeal by run_until_complete, would
            # move the role at each call: then no loop listens again.)
            self._loops_stopped += 1
            twice = self._loops_stopped >= 2
            self._revoke(listener, for_good="was stopped while it listened, twice" if twice else "")
        elif poked is not None and now - poked > self._loop_patience:
            self._revoke(listener, for_good=f"did not answer for {self._loop_patience} s")
        elif poked is None and now >= self._next_poke:
            self._next_poke = now + self._housekeeping
            listener.poked = now
            if not listener.poke():
                self._revoke(listener)

    def _revoke(self, listener: LoopListener, *, for_good: str = "") -> None:
        """Take the role from *listener*; and from every loop, saying why, *for_good*."""
        with self._role_lock:
            if self._holder is not listener:
                return
            self._holder = None
            self._deaf()
            if for_good:
                self._loops_may_listen = False
        listener.abandoned()  # (it ends when its loop runs again, if it does)
        if for_good:
            fallback_logger.warning(
                "harn_inbox: the event loop listening to %r %s; "
                "the store's thread listens from now on",
                self,
                for_good,
            )

    def _stop_listening(self) -> None:
        """Nobody listens any more (the store stops): waits look at the server."""
        with self._role_lock:
            holder, self._holder = self._holder, None
            self._deaf()
        if isinstance(holder, LoopListener):
            holder.abandoned()

    # The listener's side (`ListenerHost`): each step runs under the role lock,
    # and only for the listener holding the role.

    def _holds(self, listener: object) -> bool:
        return self._holder is listener

    def _connect_listener(self, listener: object, again: bool) -> Any:
        redis = self._redis
        if again:
            time.sleep(0.1)
        connection = self._connections.new()
        try:
            connection.connect()
            wanted = self._listening_begins(listener)
            if wanted is None:
                connection.disconnect()
                return None
            if wanted:
                # Here, blocking (in a worker thread): it names every wanted channel,
                # which may be more than the socket takes at once.
                connection.send_command("SUBSCRIBE", *map(self._wake_channel, wanted))
        except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
            connection.disconnect()
            raise ConnectionError(f"{self!r}: the listener cannot connect ({error})") from error
        except BaseException:
            connection.disconnect()
            raise
        if not self._listening_resumes(listener, connection):
            connection.disconnect()  # (the role was lost meanwhile: never left subscribed)
            return None
        return connection

    def _listening_begins(self, listener: object) -> list[str] | None:
        with self._role_lock:
            if listener is _THREAD and self._holder is None:
                self._holder = _THREAD
            if self._holder is not listener:
                return None
            self._deaf()
            self._requests.clear()
            return list(self._wanted)

    def _listening_resumes(self, listener: object, connection: Any = None) -> bool:
        """*listener*'s subscriptions went out on its new *connection*; whether it still
        holds the role."""
        with self._role_lock:
            if self._holder is not listener:
                return False
            if isinstance(listener, LoopListener):
                listener.holds(connection)  # (so that `_revoke` can close it: see `abandoned`)
            again, self._listened = self._listened, True
            if again:
                # Messages may have been lost while nobody listened: everyone looks again.
                # (Only now: a wait woken while the server is away would fail its look.)
                self._notify_all()
        return True

    def _listener_disconnected(self, listener: object) -> None:
        """*listener*'s connection dropped: nothing is heard until it subscribes again."""
        if self._holder is not listener:
            # (Tested first, without the lock: a loop's listener whose loop closed may
            # end in a collection of garbage on any thread, even one holding the lock.
            # A listener never gets the role back once it lost it.)
            return
        with self._role_lock:
            if self._holder is listener:
                self._deaf()

    def _listener_hears(self, listener: object, reply: list[Any]) -> list[str] | None:
        prefix = self._channel_prefix
        with self._role_lock:
            if self._holder is not listener:
                return None
            if len(reply) != 3 or not isinstance(reply[1], bytes):
                return []
            kind, channel, data = reply
            session_id = channel.decode()[prefix:]
            if kind == b"message" and isinstance(data, bytes):
                self._heard(session_id, data)
            elif kind in (b"subscribe", b"unsubscribe") and self._received(
                session_id, kind == b"subscribe"
            ):
                return [session_id]
        return []

    def _listener_tends(
        self, listener: object, connected: bool
    ) -> tuple[list[str], list[str]] | None:
        with self._role_lock:
            if self._holder is not listener:
                return None
            requested = _take_all(self._requests) if connected else []
            forgotten: list[str] = []
            now = time.monotonic()
            if now >= self._housekeeping_due:
                # Not after every message: a loop just woken waits for the GIL.
                self._housekeeping_due = now + self._housekeeping
                forgotten = self._forget_idle()
                for session_id in forgotten:
                    self._notify(session_id)
                if now >= self._copies_scanned + self._forget_after / 10:
                    # Every track is looked at: not at every tick.
                    self._copies_scanned = now
                    self._forget_copies()
        return requested, forgotten if connected else []

    def _listener_ends(self, listener: object, failed: bool) -> None:
        if self._holder is not listener and not failed:
            return  # (see `_listener_disconnected`)
        with self._role_lock:
            if failed:
                # (An error of its own, which the next loop would meet too: say a loop
                # whose reader callbacks are not supported.)
                self._loops_may_listen = False
            if self._holder is listener:
                self._holder = None
                self._deaf()

    def _received(self, session_id: str, subscribed: bool) -> bool:
        """A subscription's confirmation (or an unsubscribe's); whether to unsubscribe."""
        track = self._track(session_id)
        with self._lock:
            if not subscribed:
                # Confirmations come in the order of the commands: one for a
                # subscription sent before this unsubscribe may have said
                # listening; a later subscribe's says so again.
                track.listening = False
                return False
            # From now on the session's operations are heard; those before
            # may not have been: its waiters look at the server.
            track.marks += 1
            # (Not for a subscription forgotten since it was asked for: that one
            # is dropped, unless wanted again meanwhile. Wanted again, it may say
            # listening while an unsubscribe sent after it is outstanding:
            # wanting again also sent a subscribe after that one, whose
            # confirmation marks the session and notifies it once more.)
            track.listening = session_id in self._wanted
        self._notify(session_id)
        return not track.listening

    def _heard(self, session_id: str, data: bytes) -> None:
        """Replay an operation heard on its session's channel, then notify the session.

        The message is ``<index> <operation>``. Replayed here, a wait's look
        needs no round trip (`has_pending_here`). A reply of this process's
        may be on the wire and hold the same operation: whichever is replayed
        first counts (`_absorb`). After a gap (operations before it not
        heard), or for a message it cannot read, the session is marked stale
        and its waits look at the server.
        """
        track = self._track(session_id)
        index_text, _, text = data.partition(b" ")
        try:
            index = int(index_text)
            if not text.startswith(b"{"):
                raise ValueError("not an operation")
        except ValueError:  # not a message of this layout (an older process's)
            self._mark(track)
        else:
            try:
                self._absorb(session_id, track, index, 0, b"", [text], compact=False)
            except Exception:  # (not ours to raise: the listener must go on)
                self._mark(track)
                fallback_logger.exception(
                    "harn_inbox: could not replay a message of %r", session_id
                )
        self._notify(session_id)

    def _deaf(self) -> None:
        """The listener changed or its connection dropped: messages may be lost from now
        until it subscribes again (under the role lock)."""
        for track in list(self._tracks.values()):
            track.listening = False
            self._mark(track)

    def _mark(self, track: _Track) -> None:
        """The replica may lack an operation of *track* that will not be heard: look again."""
        with self._lock:
            track.marks += 1

    def _fresh(self, session_id: str) -> _Track | None:
        """The session's track if the replica may answer a wait's look (see `_Track.settled`)."""
        if not isinstance(self._holder, LoopListener):
            self._offer_role()
        track = self._want(session_id)  # (only waits look here)
        if (
            self._stopping.is_set()  # nothing is heard any more
            or not track.listening
            or track.settled != track.marks
            or self._due(session_id, track)
        ):
            return None
        return track

    def _want(self, session_id: str) -> _Track:
        """Listen to *session_id*'s channel from now on (a wait looks at it); its track. Any thread.

        Nothing waits for the subscription: its confirmation notifies the
        session (see `_received`), which covers any change this look misses.
        """
        # Stamped before the test: `_forget_idle` checks the stamp again under
        # the lock before it forgets, so a look either keeps the session wanted
        # or finds it gone and asks again.
        track = self._tracks.get(session_id)
        if track is not None:
            track.looked = time.monotonic()
            if session_id in self._wanted:
                return track
        with self._lock:
            # A track is made, and a session made wanted, with the lock held:
            # every wanted session has its track (rule 3 of the module docstring).
            track = self._track(session_id)
            track.looked = time.monotonic()
            if session_id in self._wanted:
                return track
            self._wanted.add(session_id)
        self._requests.append(session_id)
        holder = self._holder
        if isinstance(holder, LoopListener):
            holder.poke()  # (the subscription goes out at once; the thread polls for it)
        return track

    def _forget_idle(self) -> list[str]:
        """Stop wanting the sessions no wait has looked at for `FORGET_AFTER` seconds.

        By the listener, which then unsubscribes their channels and
        notifies them. Each is stale from here on (not listening), so a look
        goes to the server. A wait that arms meanwhile, whose look found the
        session still wanted, is armed before that notify: it is woken, looks
        again and wants the session again, and that subscription's
        confirmation notifies it once more (see `_received`). (In practice the
        second check of `looked` keeps any wait that looked since: see `_want`.)
        The lot's count only spares a long parked wait that spurious wake.
        """
        settings = self._settings
        if settings is None:
            return []
        cutoff = time.monotonic() - self._forget_after
        with self._lock:
            idle = [
                session_id
                for session_id in self._wanted
                if self._tracks[session_id].looked <= cutoff
            ]
        # (The lot's lock is taken with no lock of ours held.)
        idle = [session_id for session_id in idle if not settings.waiter_count(session_id)]
        forgotten = []
        with self._lock:
            for session_id in idle:
                track = self._tracks[session_id]
                if track.looked <= cutoff:  # (else a wait looked meanwhile)
                    self._wanted.discard(session_id)
                    track.listening = False
                    track.marks += 1
                    forgotten.append(session_id)
        return forgotten

    def _forget_copies(self) -> list[str]:
        """Drop the copies of the sessions this process has not used for `FORGET_AFTER` seconds.

        By the listener only (rule 2 of the module docstring). A
        session is kept while a use holds its track (rule 1), while a wait
        wants it (rule 3), while a claim is held in it (this process ticks its
        lease) and while an operation of ours whose result was lost is still to
        be named (see `_name_lost`). The logs of the
        sessions dropped are compacted as far as their copies go, if nothing
        was heard since this process last used them, by the housekeeping
        thread (compaction only goes forwards: sent late, it changes nothing
        that another compaction or a new copy relies on).
        """
        cutoff = time.monotonic() - self._forget_after
        with self._lock:
            lost = set(self._lost.values())
            idle = [
                session_id
                # (A copy: the listener's own uses make tracks without the lock.)
                for session_id, track in list(self._tracks.items())
                if not track.pins
                and track.used <= cutoff
                and track.looked <= cutoff
                and not track.claims
                and session_id not in self._wanted
                and session_id not in lost
            ]
            compactions = []
            for session_id in idle:
                track = self._tracks.pop(session_id)
                # Never fresh again, should a look still hold it (rule 3).
                track.listening = False
                track.marks += 1
                # Compacted only as far as this process used it, long ago: an
                # operation heard since may be one whose sender is still
                # retrying, and needs its result from the log.
                if track.position == track.used_position:
                    compaction = self._compaction(session_id, track, 1, sized=False)
                    if compaction is not None:
                        compactions.append((session_id, compaction))
                self._replica.forget(session_id)
        # (Their round trip is the housekeeping thread's: none on the listener's.)
        self._dropped.extend(compactions)
        return idle

    def _notify(self, session_id: str) -> None:
        settings = self._settings
        if settings is not None:
            settings.notify(session_id)

    def _notify_all(self) -> None:
        settings = self._settings
        if settings is not None:
            settings.notify_all()

    def _name_lost(self, *, closing: bool = False) -> None:
        """Append a tick to each session holding operations of ours whose results were lost.

        The tick names them (see `_run`), so its replay gives back, in every
        replica, what those that reached the log took. The housekeeping
        thread tries at every turn until the server answers; `close` tries
        once, each session's tick sent once, and stops at the first that
        fails. Operations on a session whose log this code cannot replay are
        given up: nothing can be given back from here.
        """
        if not self._lost:
            return
        with self._lock:
            sessions = sorted(set(self._lost.values()))
        for session_id in sessions:
            if self._closing.is_set() and not closing:
                return  # (`close` tries a last time)
            with self._lock:
                named = [
                    counter for counter, lost_in in self._lost.items() if lost_in == session_id
                ]
            now = self._now()  # (raised, it ends this turn: nothing is given up)
            (track,) = self._pin(session_id)
            try:
                self._run(session_id, {"o": "tick", "t": now}, once=closing)
            except Exception as error:
                if isinstance(error.__cause__, self._redis.RedisError) or track.loaded:
                    # The server left again, or refused; or this copy replays the
                    # log (another process compacted past the tick): next turn.
                    if closing:
                        return
                    continue
                # Reset (see `_reset`), or never read (a newer schema's namespace).
                with track.lock, self._lock:
                    for counter in named:
                        self._lost.pop(counter, None)
                fallback_logger.exception(
                    "harn_inbox: could not give back what operations on %r took", session_id
                )
            finally:
                self._unpin([track])

    def _tend_leases(self) -> None:
        """Renew the leases of this process's claims whose blocks run, and tick the sessions
        whose leases passed.

        A renewal extends the lease of each claim this process still holds
        (`_held`: a settle or release not yet sent) once half of it is left,
        or sooner for a lease of a few turns: only a claimant that died, whose
        store closed, or that could not reach the server for the rest of its
        lease, loses what it holds. A renewal replayed after a lease passed
        (by its own clock reading) finds the claim given back already: it
        changes nothing. A tick's replay gives back what a claim whose lease
        passed held, in every replica, so waiters elsewhere wake for it.
        """
        now = self._now()  # the inbox's clock: read with no lock held
        window = max(self._lease_ms // 2, round(self._housekeeping * 5000))
        due = []
        renewals: dict[str, list[str]] = {}
        with self._lock:
            for session_id, track in list(self._tracks.items()):
                if not track.claims:
                    continue
                if min(deadline for _, deadline in track.claims.values()) <= now:
                    due.append(session_id)
                renewing = [
                    claim_id
                    for claim_id, (_, deadline) in track.claims.items()
                    if claim_id in self._held and now < deadline <= now + window
                ]
                if renewing:
                    renewals[session_id] = renewing
        for session_id, claims in renewals.items():  # (first: a tick may wait on a round trip)
            if self._closing.is_set():
                return
            now = self._now()
            operation = {"o": "renew", "t": now, "claims": claims, "deadline": now + self._lease_ms}
            with contextlib.suppress(StoreError):  # (the server left: the next turn tries again)
                self._run(session_id, operation)
        for session_id in due:
            if self._closing.is_set():
                return
            with contextlib.suppress(StoreError):
                self._run(session_id, {"o": "tick", "t": self._now()})


_T = TypeVar("_T")

#: The subscriber thread, as the holder of the listener role.
_THREAD = object()

#: The operations that may take entries: those a process names when their results are lost.
_TAKING = frozenset(("drain", "take", "claim"))


def _nth(session: SessionState, entry: InboxEntry) -> int:
    """Which of the pending entries with *entry*'s sequence it is, from the head; -1 if none."""
    for index, held in enumerate(session._with_sequence(entry.sequence)):
        if held is entry:
            return index
    return -1


def _tail_parts(reply: Any) -> tuple[int, bytes, list[bytes]]:
    """(base, snapshot, operations) of a reply of ``_TAIL_REPLY``."""
    if isinstance(reply, int):
        return reply, b"", []
    base, snapshot, operations = reply
    return int(base), snapshot, operations


def _check_encodable(name: str, text: str) -> None:
    """Refuse *text* that cannot be part of a key (UTF-8): a lone surrogate."""
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            raise ValueError(
                f"{name} {text!r} cannot name a Redis key: it is not valid Unicode "
                "(a lone surrogate)"
            ) from None


def _decoding_asked(kwargs: dict[str, Any]) -> str:
    """The connection settings of a URL that change how keys are encoded or replies
    decoded (redis-py reads them from its query), or ''."""
    encoding = kwargs.get("encoding", "utf-8")
    try:
        utf8 = codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        utf8 = False
    if not utf8:
        return f"encoding={encoding!r}"
    if kwargs.get("encoding_errors", "strict") != "strict":
        return f"encoding_errors={kwargs['encoding_errors']!r}"
    if kwargs.get("decode_responses"):
        return "decode_responses"
    return ""


def _take_all(queue: deque[_T]) -> list[_T]:
    """What *queue* holds, taken from its head (its other consumers take the rest)."""
    taken = []
    while True:
        try:
            taken.append(queue.popleft())
        except IndexError:
            return taken


def _close_quietly(pubsub: Any) -> None:
    try:
        pubsub.close()
    except Exception:  # (closing a connection that failed)
        pass


def _ignore(session_id: str) -> None:
    pass


def _ignore_all() -> None:
    pass


def _options_out(options: PushOptions) -> dict[str, Any]:
    return {
        "payload": thaw(options.payload),
        "delivery": None if options.delivery is None else options.delivery.value,
        "dedupe": options.dedupe_key,
        "coalesce": options.coalesce_key,
        "expires": options.expires_in_ms,
    }


def _options_in(data: dict[str, Any]) -> PushOptions:
    return PushOptions(
        payload=freeze(data["payload"]),
        delivery=None if data["delivery"] is None else Delivery(data["delivery"]),
        dedupe_key=data["dedupe"],
        coalesce_key=data["coalesce"],
        expires_in_ms=data["expires"],
    )
