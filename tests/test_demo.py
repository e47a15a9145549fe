"""``python -m harn_inbox demo``: it tells its story, passes its own checks, and repeats itself.

Every run here uses ``pace=0``: virtual time with no real sleeping, so no
verdict depends on the wall clock and the whole file takes about a second.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harn_inbox.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
PUSH = re.compile(r"^t=\+\S+\s+push\s+#(\d+)\s+(\w+)")


def run_demo(*arguments: str) -> tuple[int, str]:
    out = io.StringIO()
    status = main(["demo", *arguments], stdout=out, pace=0)
    return status, out.getvalue()


def turn_sections(output: str) -> list[list[str]]:
    """The lines of each "== turn N of M" section, in order."""
    sections: list[list[str]] = []
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("== "):
            current = [] if line.startswith("== turn ") else None
            if current is not None:
                sections.append(current)
        elif current is not None:
            current.append(line)
    return sections


def listed(text: str) -> list[str]:
    """``"#1 mcp_progress, #2 tool_result"`` -> ``["#1 mcp_progress", "#2 tool_result"]``."""
    return text.split(", ")


@pytest.fixture(params=["trio", "asyncio"])
def backend_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_demo_exits_zero_and_its_summary_finds_nothing_lost(backend_name: str) -> None:
    status, output = run_demo("--backend", backend_name)
    assert status == 0
    assert output.splitlines()[0].startswith(f"harn_inbox demo -- backend: {backend_name} ")
    pushed = [int(match[1]) for line in output.splitlines() if (match := PUSH.match(line))]
    assert pushed == list(range(1, len(pushed) + 1))
    assert f"sequences #1..#{len(pushed)}: no gaps, no duplicates" in output
    assert "nothing lost: 0 pending after close" in output
    assert "FAIL" not in output
    assert "MISMATCH" not in output
    assert output.rstrip().endswith("result      OK")


def test_what_arrives_during_compaction_is_picked_up_in_the_same_turn(backend_name: str) -> None:
    _, output = run_demo("--backend", backend_name, "--seed", "5")
    turns = turn_sections(output)
    assert len(turns) == 4
    for lines in turns:
        started = next(i for i, line in enumerate(lines) if "agent  compaction: " in line)
        done = next(i for i, line in enumerate(lines) if "agent  compaction done" in line)
        arrived = [f"#{m[1]} {m[2]}" for line in lines[started:done] if (m := PUSH.match(line))]
        assert arrived, "every turn of the scenario has entries arriving during compaction"
        picked = lines[done + 1].strip()
        assert picked == "picked up after compaction: " + ", ".join(arrived)


def test_wait_for_takes_its_job_and_leaves_the_rest_queued_in_order(backend_name: str) -> None:
    _, output = run_demo("--backend", backend_name, "--seed", "3")
    turns = turn_sections(output)
    waiting = turns[2]
    asked = next(i for i, line in enumerate(waiting) if "needs job-4's result" in line)
    assert waiting[asked + 1].strip() == "await inbox.wait_for(session, predicate, timeout=10.0)"
    assert waiting[asked + 2].strip() == (
        'predicate = lambda e: e.kind == "tool_result" and "job-4" in e.content'
    )
    answered = next(i for i, line in enumerate(waiting) if "agent  wait_for() -> " in line)
    selected = waiting[answered].split("wait_for() -> ")[1]
    assert re.fullmatch(r"#\d+ tool_result after \d+\.\d{3}s", selected)
    # Entries pushed while it waited, other than the one it took, stay queued, in push order.
    during = [f"#{m[1]} {m[2]}" for line in waiting[asked:answered] if (m := PUSH.match(line))]
    taken = selected.split(" after ")[0]
    assert during[-1] == taken
    left = waiting[answered + 1].strip()
    assert left == "left queued for the next drain, in order: " + ", ".join(during[:-1])
    # ... and the next turn's first drain hands them out first, still in that order.
    next_drain = turns[3][0].split("drain() -> ")[1]
    assert listed(next_drain)[: len(during) - 1] == during[:-1]
    assert "the entries wait_for() left queued, still in order" in turns[3][1]


def test_same_seed_prints_the_same_timeline(backend_name: str) -> None:
    first = run_demo("--backend", backend_name, "--seed", "11")
    assert run_demo("--backend", backend_name, "--seed", "11") == first


def test_trio_and_asyncio_print_the_same_timeline_but_for_the_header() -> None:
    _, on_trio = run_demo("--backend", "trio", "--seed", "2")
    _, on_asyncio = run_demo("--backend", "asyncio", "--seed", "2")
    assert on_trio.splitlines()[0] != on_asyncio.splitlines()[0]
    assert on_trio.splitlines()[1:] == on_asyncio.splitlines()[1:]


def test_another_seed_prints_another_timeline() -> None:
    assert run_demo("--seed", "0")[1] != run_demo("--seed", "1")[1]


@pytest.mark.parametrize("seed", range(20))
def test_every_seed_passes_its_checks(seed: int) -> None:
    for backend_name in ("trio", "asyncio"):
        status, output = run_demo("--backend", backend_name, "--seed", str(seed))
        assert status == 0, output


def test_command_line_runs_the_demo_in_a_subprocess() -> None:
    arguments = ["--backend", "asyncio", "--seed", "4"]
    completed = subprocess.run(
        [sys.executable, "-m", "harn_inbox", "demo", *arguments, "--pace", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    assert completed.stdout == run_demo(*arguments)[1]


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
    # The reader leaves during the header, before the clock first moves. With this pace a
    # run that went on sleeping would take hours; one that stops pacing takes milliseconds.
    out = ClosingReader()
    assert main(["demo", "--backend", backend_name], stdout=out, pace=1000.0) == 1
    assert out.getvalue().startswith(f"harn_inbox demo -- backend: {backend_name} ")
    assert out.getvalue().count("\n") == 1
