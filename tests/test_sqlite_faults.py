"""`SqliteStore` faults: each gives a clear `StoreError`, and nothing accepted is lost.

A clear error names the file and says why. Nothing accepted is lost: a file
the store refuses is left as it was (so undoing the fault gives every entry
back), and a change the store cannot write raises, is not half kept, and leaves
the inbox serving what it held. A full disk is SQLite's ``max_page_count`` on
the store's own connection (white-box: ``store._journal.connection``).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from _support import run_bounded

from harn_inbox import Inbox, InboxEntry, ManualClock, StoreError
from harn_inbox.stores import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: SQLite's page size, as the store makes its files (the default).
PAGE = 4096


def push(inbox: Inbox, session_id: str, content: str) -> InboxEntry:
    return inbox.push(session_id, "tool_result", content, "worker")


def fill(path: Path, count: int = 300) -> dict[str, list[InboxEntry]]:
    """Make an inbox file holding *count* entries over three sessions; return them."""
    with SqliteStore(path) as store:
        inbox = Inbox(store=store, clock=ManualClock(start_ms=1_000_000))
        for n in range(count):
            push(inbox, f"s{n % 3}", f"entry {n} " + "x" * 200)
        return {sid: inbox.snapshot(sid) for sid in inbox.sessions()}


def reopened(path: Path) -> dict[str, list[InboxEntry]]:
    """What a new store finds in *path*: every session's pending entries."""
    with SqliteStore(path) as store:
        inbox = Inbox(store=store)
        return {sid: inbox.snapshot(sid) for sid in inbox.sessions()}


def refusal(path: Path) -> StoreError:
    """The `StoreError` that opening *path* raises; fail if it opens."""
    try:
        store = SqliteStore(path)
    except StoreError as error:
        return error
    store.close()
    pytest.fail(f"{path} opened")


def reason(error: StoreError, path: Path) -> str:
    """*error*'s message with the path it names (it must) left out: what it says is wrong."""
    message = str(error)
    assert str(path) in message, f"{message!r} does not name {path}"
    return message.replace(str(path), "<file>")


def says(error: StoreError, path: Path, why: str) -> None:
    """Fail unless *error* names *path* and says *why* (a regular expression)."""
    message = reason(error, path)
    assert re.search(why, message), f"{message!r} does not say {why!r}"


def overwrite(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        file.write(data)


# -- Files the store refuses ---------------------------------------------------------------------


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"agent notes, not a database\n" * 200)


def _another_applications_sqlite(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (text TEXT)")
        connection.execute("INSERT INTO notes VALUES ('keep me')")
    connection.close()


def _newer_schema(path: Path) -> None:
    fill(path)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 2")
    connection.close()


def _truncated_to_half(path: Path) -> None:
    fill(path)
    os.truncate(path, path.stat().st_size // 2 // PAGE * PAGE)


def _truncated_by(cut: int) -> Callable[[Path], None]:
    def truncate(path: Path) -> None:
        fill(path)
        os.truncate(path, path.stat().st_size - cut)

    return truncate


def _page_overwritten(path: Path) -> None:
    fill(path)
    middle = path.stat().st_size // 2 // PAGE * PAGE
    overwrite(path, middle, b"garbage!" * (PAGE // 8))


def _content_overwritten(path: Path) -> None:
    fill(path)
    data = path.read_bytes()
    overwrite(path, data.index(b"entry 150 "), b"ENTRY 999 ")


def _xfail(reason: str, raises: type[BaseException] = AssertionError) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=raises, reason=reason)


#: A fault: (make the faulty file at a path, what the error must say besides the path).
FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "not sqlite": (_not_sqlite, "not a SQLite file"),
    "another application's sqlite": (_another_applications_sqlite, "not a harn_inbox store"),
    "newer schema": (_newer_schema, r"schema version 2, newer than .* \(1\): upgrade harn-inbox"),
    "truncated at a page": (_truncated_to_half, "truncated or corrupt"),
    "truncated within the last page": (_truncated_by(10), "malformed|truncated|corrupt"),
    "truncated by 1000 bytes": (_truncated_by(1000), "malformed|truncated|corrupt"),
    "a page overwritten": (_page_overwritten, "malformed|corrupt"),
    "an entry's bytes overwritten": (_content_overwritten, "malformed|corrupt|checksum"),
}


def _faults() -> list[Any]:
    return [pytest.param(name, id=name) for name in FAULTS]


@pytest.mark.parametrize("fault", _faults())
def test_a_faulty_file_is_refused_with_a_store_error_naming_it_and_why(
    tmp_path: Path, fault: str
) -> None:
    make, why = FAULTS[fault]
    path = tmp_path / "x.db"
    make(path)
    says(refusal(path), path, why)


@pytest.mark.parametrize("fault", _faults())
def test_a_refused_file_is_left_byte_for_byte_as_it_was(tmp_path: Path, fault: str) -> None:
    make, _ = FAULTS[fault]
    path = tmp_path / "x.db"
    make(path)
    before = path.read_bytes()
    refusal(path)
    assert path.read_bytes() == before
    assert sorted(tmp_path.iterdir()) == [path]


def test_a_file_from_a_newer_schema_opens_with_every_entry_once_its_version_is_ours(
    tmp_path: Path,
) -> None:
    path = tmp_path / "x.db"
    pushed = fill(path)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA user_version = 2")
    refusal(path)
    connection.execute("PRAGMA user_version = 1")
    connection.close()
    assert reopened(path) == pushed


def test_another_applications_sqlite_file_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    _another_applications_sqlite(path)
    refusal(path)
    connection = sqlite3.connect(path)
    assert connection.execute("SELECT text FROM notes").fetchall() == [("keep me",)]
    connection.close()


def test_a_file_whose_checkpoint_a_kill_cut_short_opens_with_every_entry(tmp_path: Path) -> None:
    """A checkpoint copies the log's pages into the file in page order, header first.

    Killed part way, it leaves a file whose header counts pages the file does
    not have yet; the log beside it still holds them. SQLite finishes the copy
    on the next open, so the store must not refuse that file as truncated.
    """
    path, cut, whole = tmp_path / "x.db", tmp_path / "cut.db", tmp_path / "whole.db"
    fill(path, 30)  # closed: checkpointed, the file alone
    with SqliteStore(path) as store:
        inbox = Inbox(store=store, clock=ManualClock(start_ms=2_000_000))
        for n in range(300):  # into the log: the file itself does not grow
            push(inbox, f"s{n % 3}", f"late {n} " + "y" * 200)
        expected = {sid: inbox.snapshot(sid) for sid in inbox.sessions()}
        for copy in (cut, whole):  # the files as a kill would leave them, before the checkpoint
            shutil.copy(path, copy)
            shutil.copy(f"{path}-wal", f"{copy}-wal")
    connection = sqlite3.connect(whole)  # what the whole checkpoint writes
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    header = whole.read_bytes()[:PAGE]
    assert whole.stat().st_size > cut.stat().st_size  # the checkpoint grows the file
    overwrite(cut, 0, header)  # killed after copying the header, before growing the file

    assert reopened(cut) == expected


def test_a_truncated_file_with_a_log_beside_it_is_still_refused(tmp_path: Path) -> None:
    """With a log beside the file its header's page count is not checked; reading it is."""
    path, cut = tmp_path / "x.db", tmp_path / "cut.db"
    fill(path)
    with SqliteStore(path) as store:
        push(Inbox(store=store), "s0", "in the log")
        shutil.copy(path, cut)
        shutil.copy(f"{path}-wal", f"{cut}-wal")
    os.truncate(cut, cut.stat().st_size // 2 // PAGE * PAGE)
    says(refusal(cut), cut, "malformed|truncated|corrupt")


# -- Permissions ---------------------------------------------------------------------------------


#: Where root tries what an unprivileged user would: uid and gid of ``nobody``.
NOBODY = 65534


@attrs.define
class Unprivileged:
    """Files and directories whose modes are enforced, and a refusal seen by a user they bind.

    For a user other than root, that user itself. The OS lets root write
    read-only files, so under root (CI, containers) `refusal` opens the store
    in a forked child that has dropped to ``nobody`` first, in a directory
    that ``nobody`` can reach.
    """

    directory: Path
    as_nobody: bool
    changed: list[tuple[Path, int]] = attrs.Factory(list)

    def chmod(self, path: Path, mode: int) -> None:
        """``path.chmod(mode)``, undone at teardown."""
        self.changed.append((path, path.stat().st_mode))
        path.chmod(mode)

    def refusal(self, path: Path) -> StoreError:
        """The `StoreError` that opening *path* raises for this user; fail if it opens."""
        if not self.as_nobody:
            return refusal(path)
        reader, writer = os.pipe()
        with warnings.catch_warnings():  # the child only opens a file, then exits
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover (the child)
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                try:
                    SqliteStore(path).close()
                    said = "opened"
                except StoreError as error:
                    said = "StoreError: " + str(error)
                os.write(writer, said.encode())
            finally:
                os._exit(0)
        os.close(writer)
        with os.fdopen(reader, "rb") as pipe:
            said = pipe.read().decode()
        os.waitpid(pid, 0)
        if not said.startswith("StoreError: "):
            pytest.fail(f"{path} opened as nobody, or the child failed: {said!r}")
        return StoreError(said.removeprefix("StoreError: "))


@pytest.fixture
def unprivileged(tmp_path: Path) -> Iterator[Unprivileged]:
    if os.geteuid() != 0:
        probe = tmp_path / "probe"
        probe.write_bytes(b"")
        probe.chmod(0o444)
        try:
            os.close(os.open(probe, os.O_WRONLY))
        except PermissionError:
            pass
        else:
            pytest.skip("this user may write read-only files: the OS would not refuse")
        finally:
            probe.unlink()
        shelf = Unprivileged(tmp_path, as_nobody=False)
    else:
        # pytest's tmp_path is root's alone (0700 above it): nobody needs a
        # directory it can reach, and write to until a test says otherwise.
        shelf = Unprivileged(Path(tempfile.mkdtemp(prefix="harn-inbox-faults-")), as_nobody=True)
        shelf.directory.chmod(0o777)
    try:
        yield shelf
    finally:
        for path, mode in reversed(shelf.changed):
            path.chmod(mode)
        if shelf.as_nobody:
            shutil.rmtree(shelf.directory)


#: Why a file cannot be written, in words a reader understands.
READ_ONLY = "read-only|readonly|permission|denied"


def test_a_read_only_file_is_refused_saying_so_and_keeps_every_entry(
    unprivileged: Unprivileged,
) -> None:
    path = unprivileged.directory / "x.db"
    pushed = fill(path)
    unprivileged.chmod(path, 0o444)
    error = unprivileged.refusal(path)
    path.chmod(0o644)
    assert reopened(path) == pushed
    says(error, path, READ_ONLY)


def test_a_file_in_a_read_only_directory_is_refused_saying_so_and_keeps_every_entry(
    unprivileged: Unprivileged,
) -> None:
    directory = unprivileged.directory / "shelf"
    directory.mkdir()
    path = directory / "x.db"
    pushed = fill(path)
    unprivileged.chmod(directory, 0o555)
    says(unprivileged.refusal(path), path, READ_ONLY)
    directory.chmod(0o755)
    assert reopened(path) == pushed


def test_a_new_file_in_a_read_only_directory_is_refused_saying_so(
    unprivileged: Unprivileged,
) -> None:
    unprivileged.chmod(unprivileged.directory, 0o555)
    path = unprivileged.directory / "x.db"
    says(unprivileged.refusal(path), path, READ_ONLY)


# -- A full disk ---------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[tuple[SqliteStore, Inbox]]:
    """A store whose file may not grow (SQLite's ``max_page_count``), holding entries 1-3."""
    store = SqliteStore(tmp_path / "x.db")
    inbox = Inbox(store=store, clock=ManualClock(start_ms=1_000_000))
    for content in ("1", "2", "3"):
        push(inbox, "s", content)
    set_page_limit(store, 0)
    yield store, inbox
    store.close()


def set_page_limit(store: SqliteStore, pages: int) -> None:
    """Let the file grow to *pages* pages (0: not beyond what it has)."""
    connection = store._journal.connection
    if not pages:
        (pages,) = connection.execute("PRAGMA page_count").fetchone()
    connection.execute(f"PRAGMA max_page_count = {pages}")


#: A push that needs new pages: more than a page of content.
BIG = "x" * (4 * PAGE)


def test_a_push_on_a_full_disk_raises_stores_nothing_and_the_inbox_goes_on_serving(
    full_disk: tuple[SqliteStore, Inbox],
) -> None:
    store, inbox = full_disk
    before = (inbox.snapshot("s"), inbox.statistics("s"))
    with pytest.raises(StoreError) as raised:
        push(inbox, "s", BIG)
    reason(raised.value, store.path)
    assert (inbox.snapshot("s"), inbox.statistics("s")) == before
    # Reads and drains go on.
    assert inbox.pending_count("s") == 3
    assert [entry.content for entry in inbox.drain_where("s", lambda e: e.content == "1")] == ["1"]
    # With room again, pushes go on where the counter was: the refused push took no number.
    set_page_limit(store, 1_000_000)
    assert push(inbox, "s", BIG).sequence == 4
    kept = inbox.snapshot("s")
    store.close()
    assert reopened(store.path) == {"s": kept}


def test_the_error_of_a_full_disk_says_the_disk_is_full(
    full_disk: tuple[SqliteStore, Inbox],
) -> None:
    store, inbox = full_disk
    with pytest.raises(StoreError) as raised:
        push(inbox, "s", BIG)
    says(raised.value, store.path, "full")


def test_a_refused_push_on_a_full_disk_is_not_in_the_file(
    full_disk: tuple[SqliteStore, Inbox],
) -> None:
    store, inbox = full_disk
    with pytest.raises(StoreError):
        push(inbox, "s", BIG)
    kept = inbox.snapshot("s")
    store.close()
    assert reopened(store.path) == {"s": kept}
    assert [entry.content for entry in kept] == ["1", "2", "3"]


# -- A logger that writes to the inbox -----------------------------------------------------------


class WritingLogger:
    """A logger that, told *event* for the first time, calls *then* (an inbox write, say)."""

    def __init__(self, event: str) -> None:
        self.event = event
        self.then: Callable[[], object] = lambda: None
        self.told = 0

    def _log(self, event: str, **fields: object) -> None:
        if event == self.event:
            self.told += 1
            if self.told == 1:
                self.then()

    debug = info = warning = error = exception = _log


def test_a_logger_that_pushes_when_told_of_a_commit_does_not_deadlock(tmp_path: Path) -> None:
    # The commit's event used to be told with the commit lock held: the
    # logger's own push then waited on that lock for ever, and so did every
    # other writer after it.
    logger = WritingLogger("inbox.commit")
    store = SqliteStore(tmp_path / "x.db")  # closed only if nothing hangs: close would too
    inbox = Inbox(store=store, logger=logger)
    logger.then = lambda: push(inbox, "audit", "a commit")
    run_bounded(push, inbox, "s", "first")
    assert [entry.content for entry in inbox.snapshot("audit")] == ["a commit"]
    assert run_bounded(push, inbox, "s", "second").sequence == 2
    store.close()


def test_a_push_whose_commit_fails_under_a_logger_that_writes_raises(tmp_path: Path) -> None:
    # Push B purges an expired A and reports it to the logger before waiting
    # for its commit; the logger pushes to another session, and the commit of
    # both fails (the disk fills). The push used to return B, rolled back:
    # the logger's push had taken the thread's ticket along with its own.
    clock = ManualClock(start_ms=1_000_000)
    logger = WritingLogger("inbox.expired")
    store = SqliteStore(tmp_path / "x.db")
    inbox = Inbox(store=store, clock=clock, logger=logger)

    def fill_the_disk_and_push() -> None:
        set_page_limit(store, 0)
        push(inbox, "audit", BIG)  # fails: told to the logger's caller, the telemetry

    logger.then = fill_the_disk_and_push
    inbox.push("s", "tool_result", "A", "worker", expires_in=1)
    clock.advance(2)
    with pytest.raises(StoreError):
        push(inbox, "s", "B")
    assert logger.told == 1
    assert inbox.snapshot("s") == []
    store.close()
    assert reopened(store.path) == {}


# -- The file deleted while open -----------------------------------------------------------------


def _delete(path: Path) -> None:
    path.unlink()


def _replace(path: Path) -> None:
    stranger = path.with_name("stranger.db")
    stranger.write_bytes(b"someone else's file")
    stranger.replace(path)


@pytest.mark.parametrize("remove", [_delete, _replace], ids=["deleted", "replaced"])
def test_a_change_after_the_file_was_removed_raises_saying_so_and_is_not_half_kept(
    tmp_path: Path, remove: Callable[[Path], None]
) -> None:
    path = tmp_path / "x.db"
    with SqliteStore(path) as store:
        inbox = Inbox(store=store, clock=ManualClock(start_ms=1_000_000))
        for content in ("1", "2"):
            push(inbox, "s", content)
        before = inbox.snapshot("s")
        remove(path)
        after_removal = path.read_bytes() if path.exists() else None
        for change in (lambda: push(inbox, "s", "3"), lambda: inbox.drain("s")):
            with pytest.raises(StoreError) as raised:
                change()
            says(raised.value, path, "deleted or replaced while open")
            assert inbox.snapshot("s") == before
        assert inbox.statistics("s").last_sequence == 2
    # Whatever is at the path now is not the store's to write.
    assert (path.read_bytes() if path.exists() else None) == after_removal


def test_a_new_store_where_the_file_was_deleted_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with SqliteStore(path) as store:
        push(Inbox(store=store), "s", "deleted with the file")
        path.unlink()
    with SqliteStore(path) as store:
        inbox = Inbox(store=store)
        assert inbox.sessions() == []
        assert push(inbox, "s", "new").sequence == 1
