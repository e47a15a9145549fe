"""`SqliteStore` under SIGKILL: what a killed process reported is in the file, exactly once.

A child process (``sqlite_child.py``) opens the store and works from several
threads, printing a line only after each operation returned; the parent kills
it with SIGKILL at a random moment (after a random number of lines, after a
random line of a given kind, or after a random real delay, which may land
while the child is still opening the file), then opens the file itself and
checks the invariant of the mode:

- pushes: every reported entry is pending exactly once, each session's
  entries are gapless and in the order each thread pushed them, and the next
  push gets the next sequence;
- drains (at-most-once): every entry is reported drained or still pending,
  never both; the only entries that are neither are one whole drain the child
  took but had not reported;
- claims (at-least-once): what a settled claim took is gone; a claim killed in
  its block gives its entries back at the head, in order.

Only when to kill is random; no verdict depends on timing. The seed of a run
is in every failure message (set ``SQLITE_CRASH_SEED`` to replay its plans).
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harn_inbox import Inbox, InboxEntry, StoreError
from harn_inbox.stores import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")

CHILD = Path(__file__).with_name("sqlite_child.py")
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
SESSIONS = ("s0", "s1")
#: A guard against a child that never reports; never a verdict.
HANG_GUARD_SECONDS = 60.0
SEED = int(os.environ.get("SQLITE_CRASH_SEED", random.randrange(2**32)))

#: Kill points per mode: 56 in all.
PUSH_KILLS, DRAIN_KILLS, CLAIM_KILLS = 22, 16, 18

Lines = list[list[str]]


# -- Running and killing a child -----------------------------------------------------------------


def kill_plan(
    rng: random.Random, kinds: tuple[str, ...]
) -> tuple[str, Callable[[Lines], bool] | float]:
    """When to kill: after some lines (of one of *kinds*, or any), or after a delay.

    A delay counts from the start of the process, so it may land while the
    child imports, makes the file or opens it; the other plans wait for it
    to report (its first line is ``ready``, printed once the file is open).
    """
    draw = rng.random()
    if draw < 0.2:
        delay = rng.uniform(0.1, 0.6)
        return f"{delay:.3f} s after its start", delay
    if draw < 0.6:
        kind, count = rng.choice(kinds), rng.randint(1, 3)
        return (
            f"after {count} {kind!r} lines",
            lambda lines: sum(line[0] == kind for line in lines) >= count,
        )
    count = rng.randint(0, 40)
    return f"after {count} reports", lambda lines: len(lines) > count  # "ready" is one


def run_and_kill(mode: str, path: Path, when: Callable[[Lines], bool] | float) -> Lines:
    """Run the child in *mode* on *path*, SIGKILL it *when* told; every whole line it printed."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), mode, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
    )
    assert child.stdout is not None
    assert child.stderr is not None
    output = b""
    try:
        if isinstance(when, float):
            time.sleep(when)
        else:
            give_up = time.monotonic() + HANG_GUARD_SECONDS
            while not when(parse(output)):
                assert time.monotonic() < give_up, f"the child never got there: {output[-500:]!r}"
                ready, _, _ = select.select([child.stdout], [], [], 1.0)
                chunk = os.read(child.stdout.fileno(), 1 << 16) if ready else b""
                assert chunk or not ready, f"the child exited: {child.stderr.read()!r}"
                output += chunk
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        # What it printed before it died is reported too: every whole line.
        output += child.stdout.read()
        errors = child.stderr.read()
        child.stdout.close()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL, (child.returncode, errors)
    assert not errors, errors.decode(errors="replace")  # no thread of the child failed
    return parse(output)


def parse(output: bytes) -> Lines:
    """The whole lines of *output*, split into fields (a line cut short by the kill is none)."""
    return [line.split() for line in output.decode().split("\n")[:-1]]


def opened(path: Path, context: str) -> tuple[SqliteStore, Inbox]:
    """The file a kill left, opened; a refusal fails with *context* (it names the seed)."""
    try:
        store = SqliteStore(path)
    except StoreError as error:
        pytest.fail(f"{context}: the file was refused: {error}")
    return store, Inbox(store=store)


def check_next_push(inbox: Inbox, session_id: str, last: int, context: str) -> InboxEntry:
    """The next push continues the session's sequence: no number issued twice."""
    assert inbox.statistics(session_id).last_sequence == last, context
    entry = inbox.push(session_id, "check", f"pushed by the parent after {context}", "parent")
    assert entry.sequence == last + 1, context
    return entry


def kill_points(mode: str, count: int) -> list[tuple[int, random.Random]]:
    """Each of *count* kill points of *mode*: its index and its own random source."""
    return [(index, random.Random(f"{SEED}-{mode}-{index}")) for index in range(count)]


# -- Pushes --------------------------------------------------------------------------------------


def test_every_reported_push_survives_sigkill_exactly_once_in_order(tmp_path: Path) -> None:
    path = tmp_path / "push.db"  # one file through every kill point: sequences keep continuing
    pushed: dict[str, dict[int, str]] = {sid: {} for sid in SESSIONS}
    for index, rng in kill_points("push", PUSH_KILLS):
        plan, when = kill_plan(rng, ("P",))
        context = f"push kill point {index} ({plan}, seed {SEED})"
        for fields in run_and_kill("push", path, when):
            if fields[0] == "P":
                _, sid, sequence, content = fields
                pushed[sid][int(sequence)] = content

        store, inbox = opened(path, context)
        try:
            for sid in SESSIONS:
                pending = inbox.snapshot(sid)
                in_file = {entry.sequence: entry.content for entry in pending}
                # Gapless and in order: nothing lost, nothing written twice (there are no drains).
                assert [entry.sequence for entry in pending] == list(range(1, len(pending) + 1))
                assert len(set(in_file.values())) == len(in_file), context
                missing = {seq: c for seq, c in pushed[sid].items() if in_file.get(seq) != c}
                assert not missing, f"{context}: reported but not in the file: {missing}"
                check_pushes_in_thread_order(pending, context)
                entry = check_next_push(inbox, sid, len(pending), context)
                pushed[sid][entry.sequence] = entry.content
        finally:
            store.close()


def check_pushes_in_thread_order(pending: list[InboxEntry], context: str) -> None:
    """Each pushing thread's entries (``<pid>-<name>-<n>``) are its pushes 0, 1, ... in order."""
    numbers: dict[str, list[int]] = defaultdict(list)
    for entry in pending:
        if entry.source != "parent":
            pusher, _, number = entry.content.rpartition("-")
            numbers[pusher].append(int(number))
    for pusher, seen in numbers.items():
        assert seen == list(range(len(seen))), f"{context}: {pusher} pushed {seen}"


# -- Drains (at-most-once) -----------------------------------------------------------------------


def test_an_entry_drained_before_sigkill_is_reported_or_gone_never_pending_again(
    tmp_path: Path,
) -> None:
    for index, rng in kill_points("drain", DRAIN_KILLS):
        plan, when = kill_plan(rng, ("D",))
        context = f"drain kill point {index} ({plan}, seed {SEED})"
        path = tmp_path / f"drain-{index}.db"
        lines = run_and_kill("drain", path, when)
        if not path.exists():  # killed before the file was made
            continue
        store, inbox = opened(path, context)
        try:
            for sid in SESSIONS:
                reported = reports(lines, sid)
                pending = [entry.sequence for entry in inbox.snapshot(sid)]
                last = inbox.statistics(sid).last_sequence
                drained = flat(reported["D"])
                assert drained == sorted(set(drained)), f"{context}: drained twice: {drained}"
                assert pending == sorted(set(pending)), context
                assert not set(drained) & set(pending), f"{context}: drained and still pending"
                assert set(flat(reported["P"])) <= set(range(1, last + 1)), context
                # Neither reported drained nor pending: only the drain in flight, taken whole.
                gone = sorted(set(range(1, last + 1)) - set(drained) - set(pending))
                if gone:
                    assert gone == list(range(gone[0], gone[-1] + 1)), f"{context}: {gone}"
                    assert max(drained, default=0) < gone[0], f"{context}: {gone}"
                    assert gone[-1] < min(pending, default=last + 1), f"{context}: {gone}"
                check_next_push(inbox, sid, last, context)
        finally:
            store.close()


def reports(lines: Lines, session_id: str) -> dict[str, list[list[int]]]:
    """The child's reports on *session_id*: kind (P, D, C, S) -> each line's sequences, in order."""
    found: dict[str, list[list[int]]] = defaultdict(list)
    for kind, *fields in lines:
        if fields and fields[0] == session_id:
            numbers = fields[1:2] if kind == "P" else fields[1:]  # P: sequence, content
            found[kind].append([int(number) for number in numbers])
    return found


def flat(batches: list[list[int]]) -> list[int]:
    return [sequence for batch in batches for sequence in batch]


# -- Claims (at-least-once) ----------------------------------------------------------------------


def test_a_claim_killed_in_its_block_gives_its_entries_back_at_the_head_after_sigkill(
    tmp_path: Path,
) -> None:
    for index, rng in kill_points("claim", CLAIM_KILLS):
        plan, when = kill_plan(rng, ("C", "S"))
        context = f"claim kill point {index} ({plan}, seed {SEED})"
        path = tmp_path / f"claim-{index}.db"
        lines = run_and_kill("claim", path, when)
        if not path.exists():
            continue
        store, inbox = opened(path, context)
        try:
            for sid in SESSIONS:
                reported = reports(lines, sid)
                pending = [entry.sequence for entry in inbox.snapshot(sid)]
                last = inbox.statistics(sid).last_sequence
                settled = flat(reported["S"])
                unsettled = reported["C"][len(reported["S"]) :]
                assert reported["C"][: len(reported["S"])] == reported["S"], context
                assert len(unsettled) <= 1, f"{context}: two claims in the block at once"
                held = unsettled[0] if unsettled else []
                assert pending == sorted(set(pending)), context
                assert not set(settled) & set(pending), f"{context}: settled, yet pending"
                assert set(flat(reported["P"])) <= set(range(1, last + 1)), context
                if set(held) & set(pending):
                    # Killed in the block: back at the head, in order, whole.
                    assert pending[: len(held)] == held, f"{context}: {held} vs {pending}"
                gone = set(range(1, last + 1)) - set(settled) - set(pending)
                # Nothing is lost but a claim that settled just before the kill could report it.
                assert not gone or gone == set(held), f"{context}: lost {sorted(gone)}"
                check_next_push(inbox, sid, last, context)
        finally:
            store.close()
