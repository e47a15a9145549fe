"""The README's Python examples run and type-check, so what a newcomer copies works.

Every ```` ```python ```` block of README.md has, on the line just above its
opening fence, one of these markers (HTML comments, invisible on GitHub):

``<!-- runnable-example -->``
    Run as a script of its own (a fresh namespace, nothing shared with other
    blocks) and type-checked with ``mypy --strict``. A comment after a
    ``print(...)`` on the same line, ``print(x)  # [1, 2]``, is what that call
    prints: each such text must appear in the output, in the order of the lines.
``<!-- typechecked-example -->``
    Type-checked with ``mypy --strict`` but not run: for a fragment that needs
    something the README cannot provide (a model to call, a server).

A Python block without a marker fails `test_every_python_block_is_run_or_type_checked`.
Each block is type-checked as a module of its own, against the oldest Python
the package supports, in one mypy run for all of them. The test skips the
type-check if mypy is not installed, saying so.

The shell blocks under ``<!-- demo-command -->`` and ``<!-- test-command -->``
are the two commands ``.ci/run`` runs on a fresh machine; they must stay there.
"""

from __future__ import annotations

import contextlib
import io
import re
import textwrap
from pathlib import Path

import attrs
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
RUN = "runnable-example"
TYPECHECK_ONLY = "typechecked-example"
#: requires-python's lower bound: an example must not use what 3.10 lacks.
OLDEST_PYTHON = "3.10"
#: Where mypy messages about anything but an example go (an error in an imported module).
ELSEWHERE = "elsewhere"

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python\n(?P<source>.*?)^(?P=indent)```", re.MULTILINE | re.DOTALL
)
_MARKER = re.compile(r"<!-- (?P<name>[a-z-]+) -->\n\Z")
_PROMISE = re.compile(r"print\(.*\)\s*#\s*(?P<text>.+)$", re.MULTILINE)


@attrs.frozen
class Example:
    """One ```` ```python ```` block of the README."""

    line: int  # of its opening fence, 1-based
    marker: str | None
    source: str

    @property
    def name(self) -> str:
        return f"readme_line_{self.line}"


def python_blocks() -> list[Example]:
    text = README.read_text(encoding="utf-8")
    examples = []
    for fence in _FENCE.finditer(text):
        before = text[: fence.start()]
        marker = _MARKER.search(before[-80:])
        examples.append(
            Example(
                line=before.count("\n") + 1,
                marker=marker["name"] if marker else None,
                source=textwrap.dedent(fence["source"]),
            )
        )
    return examples


EXAMPLES = python_blocks()
RUNNABLE = [example for example in EXAMPLES if example.marker == RUN]
TYPE_CHECKED = [example for example in EXAMPLES if example.marker in (RUN, TYPECHECK_ONLY)]


def by_name(examples: list[Example]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("example", examples, ids=[e.name for e in examples])


def test_every_python_block_is_run_or_type_checked() -> None:
    unmarked = [example.line for example in EXAMPLES if example.marker not in (RUN, TYPECHECK_ONLY)]
    assert not unmarked, f"README.md python blocks without a marker, at lines {unmarked}"
    assert len(RUNNABLE) >= 2


@pytest.mark.parametrize("marker", ["demo-command", "test-command"])
def test_the_two_commands_are_where_ci_finds_them(marker: str) -> None:
    # .ci/run takes the block that follows the marker line; it must be a shell block.
    text = README.read_text(encoding="utf-8")
    assert f"<!-- {marker} -->\n```sh\npython3 -m venv .venv && " in text


@by_name(RUNNABLE)
def test_readme_example_runs_and_prints_what_it_says(example: Example) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = compile(example.source, f"{README}:{example.line}", "exec")
        exec(code, {"__name__": "__readme__"})
    printed = out.getvalue()
    position = 0
    for promise in _PROMISE.finditer(example.source):
        text = promise["text"].strip()
        found = printed.find(text, position)
        assert found >= 0, f"{text!r} not printed (after {position}): {printed!r}"
        position = found + len(text)


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """mypy --strict over every type-checked example at once: its messages, by example name."""
    api = pytest.importorskip(
        "mypy.api", reason="mypy is not installed: the README's examples are not type-checked"
    )
    directory = tmp_path_factory.mktemp("readme_examples")
    for example in TYPE_CHECKED:
        (directory / f"{example.name}.py").write_text(example.source, encoding="utf-8")
    config = directory / "mypy.ini"
    config.write_text(f"[mypy]\nstrict = True\npython_version = {OLDEST_PYTHON}\n")
    stdout, stderr, status = api.run(
        [
            "--config-file",
            str(config),
            "--cache-dir",
            str(directory / ".mypy_cache"),
            "--no-error-summary",
            "--show-error-codes",
            *(str(directory / f"{example.name}.py") for example in TYPE_CHECKED),
        ]
    )
    assert status in (0, 1), f"mypy did not run: {stderr or stdout}"
    errors: dict[str, list[str]] = {example.name: [] for example in TYPE_CHECKED}
    for message in stdout.splitlines():
        module = Path(message.split(":", 1)[0]).stem
        errors.setdefault(module if module in errors else ELSEWHERE, []).append(message)
    return errors


@by_name(TYPE_CHECKED)
def test_readme_example_type_checks_strictly(
    example: Example, mypy_errors: dict[str, list[str]]
) -> None:
    messages = mypy_errors[example.name]
    assert not messages, "\n".join(messages)


def test_readme_type_check_reports_on_nothing_but_the_examples(
    mypy_errors: dict[str, list[str]],
) -> None:
    messages = mypy_errors.get(ELSEWHERE, [])
    assert not messages, "\n".join(messages)
