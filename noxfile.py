"""Development sessions: ``nox`` runs tests on every supported Python found, lint and typecheck."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False
nox.options.sessions = ["tests", "lint", "typecheck"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
ALL_SUPPORTED = nox.project.python_versions(PYPROJECT)


@nox.session(python=ALL_SUPPORTED)
def tests(session: nox.Session) -> None:
    """The whole suite (posargs go to pytest, e.g. ``-- --hypothesis-profile=thorough``)."""
    session.install("-e", ".[tests]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package and tests/typing (the API as users call it)."""
    session.install("-e", ".[tests]", "mypy")
    session.run("mypy", "--strict")


@nox.session
def demo(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("python", "-m", "harn_inbox", "demo", *session.posargs)


@nox.session(python="3.12")
def bench(session: nox.Session) -> None:
    """Benchmarks against the peers (``-- --quick`` for a smoke run)."""
    session.install("-e", ".", "-r", "benchmarks/requirements.txt")
    session.run("python", "-m", "benchmarks", *session.posargs)
