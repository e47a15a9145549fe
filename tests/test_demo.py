"""``python -m harn_inbox demo``: a Harn-style story that passes its own checks and repeats.

Every run here passes ``--pace 0``: virtual time with no real sleeping, so no
verdict depends on the wall clock. The Harn-style behaviours are read off the
printed timeline, which is the demo's promise to a newcomer.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from harn_inbox import InboxEntry, _demo
from harn_inbox.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
SEEDS = range(6)
LANDED = re.compile(r"^t=\+\S+\s+(push|retry)\s+#(\d+)\s+(\w+)\s+(.*)$")
AGENT = re.compile(r"^t=\+\S+\s+agent\s+(.*)$")
TAKEN = re.compile(r"^t=\+\S+\s+agent\s+(.*) -> (.*)$")
QUEUED = re.compile(r"^\s+still queued: (.*)$")
MORE = re.compile(r"^\s+(\S.*)$")


@attrs.frozen
class Line:
    """One line of a turn, parsed: a push (or retry) landing, or the agent taking entries."""

    what: str  # "push", "retry", "take", "queued", "agent" or "more" (a line continued)
    text: str
    sequences: tuple[int, ...] = ()  # what landed, was taken, or is still queued
    kinds: tuple[str, ...] = ()


def listed(text: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """``"#1 mcp_progress, #2 tool_result"`` -> ``((1, 2), ("mcp_progress", "tool_result"))``."""
    if text == "nothing":
        return (), ()
    pairs = [item.split(" ") for item in text.split(", ")]
    return tuple(int(number.lstrip("#")) for number, _ in pairs), tuple(kind for _, kind in pairs)


def parse(line: str) -> Line:
    if landed := LANDED.match(line):
        return Line(landed[1], landed[4], (int(landed[2]),), (landed[3],))
    if taken := TAKEN.match(line):
        return Line("take", taken[1], *listed(taken[2]))
    if queued := QUEUED.match(line):
        return Line("queued", "", *listed(queued[1]))
    if more := MORE.match(line):
        return Line("more", more[1])
    said = AGENT.match(line)
    assert said is not None, line
    return Line("agent", said[1])


def turns(output: str) -> list[list[Line]]:
    """The parsed lines of each "== turn N of M" section, and of the end of the session."""
    sections: list[list[Line]] = []
    current: list[Line] | None = None
    for line in output.splitlines():
        if line.startswith("== "):
            current = [] if line.startswith(("== turn ", "== end of session")) else None
            if current is not None:
                sections.append(current)
        elif current is not None and line:
            current.append(parse(line))
    return sections


def replaced(timed: list[Line]) -> set[int]:
    """The entries that pushes among *timed* replaced (coalesce_key)."""
    return {int(m[1]) for line in timed if (m := re.search(r"; replaces #(\d+)", line.text))}


def lines(output: str) -> list[Line]:
    return [line for section in turns(output) for line in section]


def run_demo(*arguments: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(["demo", *arguments, "--pace", "0"], stdout=out)
    return status, out.getvalue()


def timeline(backend_name: str, seed: int) -> str:
    status, output = run_demo("--backend", backend_name, "--seed", str(seed))
    assert status == 0, output
    return output


@pytest.fixture(params=["trio", "asyncio"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# -- The run as a whole ---------------------------------------------------------------------------


def test_demo_exits_zero_and_its_summary_finds_nothing_lost(backend_name: str) -> None:
    output = timeline(backend_name, 0)
    assert output.startswith(f"harn_inbox demo -- backend: {backend_name}, seed: 0\n")
    pushed = [line.sequences[0] for line in lines(output) if line.what == "push"]
    assert pushed == list(range(1, len(pushed) + 1))
    summary = output.split("== summary ")[1].splitlines()[1:]
    assert summary[0].startswith(f"{len(pushed)} entries stored, ")
    assert [line.split()[0] for line in summary[1:-1]] == ["ok"] * 4
    assert f"sequences #1..#{len(pushed)}: no gaps, no duplicates" in output
    assert summary[-1] == "result OK"


@pytest.mark.parametrize("seed", range(20))
def test_every_seed_passes_its_checks(seed: int, backend_name: str) -> None:
    assert timeline(backend_name, seed).endswith("\nresult OK\n")


def test_same_seed_prints_the_same_timeline(backend_name: str) -> None:
    assert timeline(backend_name, 11) == timeline(backend_name, 11)


@pytest.mark.parametrize("seed", [2, 7])
def test_trio_and_asyncio_print_the_same_timeline_but_for_the_header(seed: int) -> None:
    on_trio, on_asyncio = timeline("trio", seed), timeline("asyncio", seed)
    assert on_trio.splitlines()[0] != on_asyncio.splitlines()[0]
    assert on_trio.splitlines()[1:] == on_asyncio.splitlines()[1:]


def test_another_seed_prints_another_timeline() -> None:
    assert timeline("trio", 0) != timeline("trio", 1)


def test_a_failed_check_fails_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    take = _demo._Demo._take

    def losing_the_first_entry_after_compaction(
        demo: _demo._Demo, text: str, entries: list[InboxEntry]
    ) -> None:
        take(demo, text, entries[1:] if text.startswith("compaction done") else entries)

    monkeypatch.setattr(_demo._Demo, "_take", losing_the_first_entry_after_compaction)
    status, output = run_demo("--seed", "3")
    assert status == 1
    assert "\nFAIL   every entry stored was delivered once" in output
    assert output.endswith("\nresult FAILED (1 checks)\n")


# -- The Harn-style turn, read off the timeline ---------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_what_arrives_during_compaction_is_in_the_same_turns_prompt(
    seed: int, backend_name: str
) -> None:
    for turn in turns(timeline(backend_name, seed))[:-1]:
        start = next(i for i, line in enumerate(turn) if line.text.startswith("compaction: "))
        done = next(i for i, line in enumerate(turn) if line.text.startswith("compaction done"))
        arrived = [line for line in turn[start:done] if line.what == "push"]
        feedback = [
            line.sequences[0]
            for line in arrived
            if line.kinds[0] != "tool_result"
            and "delivery=after_next_tool_call" not in line.text
            and line.sequences[0] not in replaced(arrived)
        ]
        assert feedback, "in every turn, feedback arrives during compaction"
        assert turn[done].text == "compaction done: drain_where(feedback) again"
        assert list(turn[done].sequences) == feedback


@pytest.mark.parametrize("seed", SEEDS)
def test_after_next_tool_call_entry_waits_for_the_next_tool_dispatch(
    seed: int, backend_name: str
) -> None:
    timed = lines(timeline(backend_name, seed))
    [pushed] = [i for i, line in enumerate(timed) if "delivery=after_next_tool_call" in line.text]
    injection = timed[pushed].sequences[0]
    dispatched = next(
        i
        for i, line in enumerate(timed)
        if i > pushed and line.text == "tool dispatched: drain_where(after next tool call)"
    )
    assert timed[dispatched].sequences == (injection,)
    assert timed[dispatched - 1].text.startswith("calls ")
    # Until then it stays queued: a turn start and a compaction pass it by, and show it waiting.
    passed_by = [line for line in timed[pushed:dispatched] if line.what == "take"]
    assert any(line.text.startswith("turn starts") for line in passed_by)
    assert all(injection not in line.sequences for line in passed_by)
    queued = [line for line in timed[pushed:dispatched] if line.what == "queued"]
    assert queued
    assert all(injection in line.sequences for line in queued)
    assert sum(injection in line.sequences for line in timed if line.what == "take") == 1


@pytest.mark.parametrize("seed", SEEDS)
def test_wait_for_takes_the_result_of_its_handle_and_leaves_the_rest_queued(
    seed: int, backend_name: str
) -> None:
    timed = lines(timeline(backend_name, seed))
    pushes = {line.sequences[0]: line.text for line in timed if line.what == "push"}
    asked = [i for i, line in enumerate(timed) if line.text.startswith("needs job-")]
    assert len(asked) == 3
    results_left_queued = 0
    for i in asked:
        handle = timed[i].text.split("'")[0].removeprefix("needs ")
        assert timed[i].text.endswith("wait_for(session, predicate, limit=1)")
        assert timed[i + 1] == Line(
            "more", f'predicate: e.kind == "tool_result" and e.payload["handle"] == "{handle}"'
        )
        answered = next(j for j in range(i, len(timed)) if timed[j].text.startswith("wait_for()"))
        [taken] = timed[answered].sequences
        assert timed[answered].kinds == ("tool_result",)
        assert pushes[taken].endswith(f"({handle} handler, worker thread)")
        # What landed while it waited, but for its result (and updates since replaced),
        # is still queued, in order, behind what was queued before.
        during = [line for line in timed[i:answered] if line.what == "push"]
        gone = replaced(during) | {taken}
        left = [line.sequences[0] for line in during if line.sequences[0] not in gone]
        if left:
            queued = timed[answered + 1]
            assert queued.what == "queued"
            assert list(queued.sequences[-len(left) :]) == left
            results_left_queued += "tool_result" in queued.kinds
    assert results_left_queued, "another tool's result arrives while wait_for waits"


@pytest.mark.parametrize("seed", SEEDS)
def test_progress_is_coalesced_so_only_the_latest_update_is_pending(
    seed: int, backend_name: str
) -> None:
    output = timeline(backend_name, seed)
    timed = lines(output)
    gone = replaced(timed)
    assert gone, "updates come faster than the agent drains"
    kinds = {line.sequences[0]: line.kinds[0] for line in timed if line.what == "push"}
    taken = [sequence for line in timed if line.what == "take" for sequence in line.sequences]
    assert {kinds[sequence] for sequence in gone} == {"mcp_progress"}
    assert not gone & set(taken)
    for line in timed:
        if line.what in ("take", "queued"):
            assert line.kinds.count("mcp_progress") <= 1
    assert f", {len(gone)} replaced\n" in output


@pytest.mark.parametrize("seed", SEEDS)
def test_a_retried_tool_push_returns_the_first_entry_and_stores_nothing(
    seed: int, backend_name: str
) -> None:
    timed = lines(timeline(backend_name, seed))
    [retry] = [i for i, line in enumerate(timed) if line.what == "retry"]
    first = timed[retry].sequences[0]
    [pushed] = [line for line in timed[:retry] if line.what == "push" and first in line.sequences]
    assert pushed.text.endswith(" handler, worker thread)")
    assert timed[retry].text == pushed.text
    assert timed[retry + 1] == Line(
        "more", "same dedupe_key: push() returned the first entry and stored nothing"
    )
    # The first entry was taken before the retry came; it is never delivered again.
    taken = [line for line in timed if line.what == "take" and first in line.sequences]
    assert len(taken) == 1
    assert timed.index(taken[0]) < retry
    # The retry used up no sequence number.
    numbers = [line.sequences[0] for line in timed if line.what == "push"]
    assert numbers == list(range(1, len(numbers) + 1))


# -- The command line -----------------------------------------------------------------------------


def test_command_line_runs_the_demo_in_a_subprocess() -> None:
    arguments = ["--backend", "asyncio", "--seed", "4", "--pace", "0"]
    completed = subprocess.run(
        [sys.executable, "-m", "harn_inbox", "demo", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert completed.stdout == timeline("asyncio", 4)


def test_no_command_prints_the_help_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "usage: python -m harn_inbox" in captured.err
    assert "demo" in captured.err


def test_unknown_backend_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["demo", "--backend", "curio"])
    assert raised.value.code == 2
    assert "invalid choice: 'curio'" in capsys.readouterr().err


class ClosingReader(io.StringIO):
    """A stream whose reader goes away after the first line, as ``| head -1`` would."""

    def write(self, text: str) -> int:
        if "\n" in self.getvalue():
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_reader_going_away_ends_the_demo_quietly_with_status_1(backend_name: str) -> None:
    # The reader leaves during the header, before the clock first moves. At this pace a run
    # that went on sleeping would take hours; one that stops pacing takes milliseconds.
    out = ClosingReader()
    assert main(["demo", "--backend", backend_name, "--pace", "1000"], stdout=out) == 1
    assert out.getvalue().startswith(f"harn_inbox demo -- backend: {backend_name}, seed: 0\n")
    assert "== turn 1" not in out.getvalue()
