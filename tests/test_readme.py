"""The README's runnable examples run, and print what their comments promise."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- runnable-example -->"


def runnable_examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(re.escape(MARKER) + r"\n```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_has_runnable_examples() -> None:
    assert len(runnable_examples()) >= 2


@pytest.mark.parametrize("source", runnable_examples())
def test_readme_example_runs_and_prints_what_it_says(source: str) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, str(README), "exec"), {"__name__": "__readme__"})
    promised = re.findall(r"print\(.*?\)\s*#\s*(.+)", source)
    for line in promised:
        assert line.strip() in out.getvalue()
