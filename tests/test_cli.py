"""The store commands of ``python -m harn_inbox``: ``inspect``, ``push`` and ``drain``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest
from _redis_server import free_port

from harn_inbox import Inbox
from harn_inbox.__main__ import main
from harn_inbox.stores import RedisStore, SqliteStore

if TYPE_CHECKING:
    from pathlib import Path

    from _redis_server import RedisServer


def run(*argv: str) -> tuple[int, list[Any]]:
    """Run the command line in-process; its status and its output's JSON lines."""
    out = io.StringIO()
    status = main(list(argv), stdout=out)
    return status, [json.loads(line) for line in out.getvalue().splitlines()]


def test_push_makes_the_store_and_prints_the_stamped_entry(tmp_path: Path) -> None:
    store = str(tmp_path / "x.db")
    status, [entry] = run("push", store, "s1", "tool_result", "job 7: ok", "cli")
    assert status == 0
    assert (entry["sequence"], entry["session_id"], entry["content"]) == (1, "s1", "job 7: ok")
    assert (entry["payload"], entry["delivery"]) == (None, None)


def test_push_takes_a_json_payload(tmp_path: Path) -> None:
    store = str(tmp_path / "x.db")
    run("push", store, "s1", "k", "c", "cli", "--payload", '{"handle": "h7", "n": [1, 2.5]}')
    with SqliteStore(store) as opened:
        [entry] = Inbox(store=opened).snapshot("s1")
    assert entry.payload == {"handle": "h7", "n": [1, 2.5]}


def test_inspect_lists_sessions_with_entries_pending_and_their_counts(tmp_path: Path) -> None:
    store = str(tmp_path / "x.db")
    for session in ("b", "a", "b"):
        run("push", store, session, "k", "c", "cli")
    run("drain", store, "a")
    run("push", store, "c", "k", "c", "cli")
    status, lines = run("inspect", store)
    assert status == 0
    assert lines == [
        {"session_id": "b", "pending": 2, "last_sequence": 2},
        {"session_id": "c", "pending": 1, "last_sequence": 1},
    ]


def test_inspect_of_a_session_prints_its_entries_in_order_and_takes_nothing(
    tmp_path: Path,
) -> None:
    store = str(tmp_path / "x.db")
    for content in ("one", "two"):
        run("push", store, "s", "k", content, "cli")
    for _ in range(2):
        status, lines = run("inspect", store, "s")
        assert status == 0
        assert [(line["sequence"], line["content"]) for line in lines] == [(1, "one"), (2, "two")]


def test_drain_prints_what_it_took_and_the_sequence_carries_on(tmp_path: Path) -> None:
    store = str(tmp_path / "x.db")
    for content in ("one", "two"):
        run("push", store, "s", "k", content, "cli")
    status, lines = run("drain", store, "s")
    assert status == 0
    assert [line["content"] for line in lines] == ["one", "two"]
    assert run("drain", store, "s") == (0, [])
    assert run("push", store, "s", "k", "three", "cli")[1][0]["sequence"] == 3


def test_a_missing_store_is_refused_with_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = str(tmp_path / "missing.db")
    assert run("inspect", store) == (1, [])
    assert run("drain", store, "s") == (1, [])
    assert "no store at" in capsys.readouterr().err
    assert not (tmp_path / "missing.db").exists()


def test_a_store_open_elsewhere_is_refused_with_status_1_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "x.db"
    with SqliteStore(path):
        assert run("push", str(path), "s", "k", "c", "cli") == (1, [])
    error = capsys.readouterr().err
    assert str(path) in error
    assert "one owner at a time" in error


def test_a_payload_that_is_not_json_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        run("push", str(tmp_path / "x.db"), "s", "k", "c", "cli", "--payload", "{bad")
    assert exit_.value.code == 2


def test_the_commands_run_as_a_module(tmp_path: Path) -> None:
    store = str(tmp_path / "x.db")
    pushed = subprocess.run(
        [sys.executable, "-m", "harn_inbox", "push", store, "s", "k", "c", "cli"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(pushed.stdout)["sequence"] == 1


def test_the_commands_act_on_a_live_redis_deployment(redis_server: RedisServer) -> None:
    namespace = redis_server.namespace()
    flags = ("--namespace", namespace)
    with RedisStore(redis_server.url, namespace=namespace) as store, Inbox(store=store) as live:
        live.push("s", "k", "from the runtime", "loop")
        status, [entry] = run("push", redis_server.url, "s", "k", "from the cli", "cli", *flags)
        assert (status, entry["sequence"]) == (0, 2)
        # The runtime sees the operator's push at once: it shares the session.
        assert live.wait_sync("s", timeout=0)
        assert [e.content for e in live.snapshot("s")] == ["from the runtime", "from the cli"]
        status, lines = run("inspect", redis_server.url, *flags)
        assert lines == [{"session_id": "s", "pending": 2, "last_sequence": 2}]
        status, lines = run("drain", redis_server.url, "s", *flags)
        assert [line["content"] for line in lines] == ["from the runtime", "from the cli"]
        assert live.pending_count("s") == 0
    # Another namespace on the same server is another set of sessions.
    assert run("inspect", redis_server.url, "--namespace", redis_server.namespace()) == (0, [])


def test_an_unreachable_redis_server_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    status, _ = run("push", f"redis://127.0.0.1:{free_port()}/0", "s", "k", "c", "cli")
    assert status == 1
    assert "did not answer" in capsys.readouterr().err
