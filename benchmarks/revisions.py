"""harn_inbox as it was at a git revision, importable beside the working tree's.

`load` extracts the ``harn_inbox/`` directory of a commit with ``git archive``
into a cache directory (under the system's temporary directory, one per
commit) as a package named ``harn_inbox_at_<commit>`` and imports it. The
package's own imports are relative, so the copy runs its own code, and the
working tree's ``harn_inbox`` stays what it is. Only a git checkout of the
project can do this; elsewhere `load` says why not.
"""

from __future__ import annotations

import importlib
import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(tempfile.gettempdir()) / "harn_inbox_benchmarks"

#: The commit before the redesign (#13) and the commit before the entries and controls (#14).
BEFORE_REDESIGN = "55f23e5"
BEFORE_CONTROLS = "089f3b1"


class RevisionUnavailable(Exception):
    """The package at a revision cannot be had: no git, no checkout, no such commit."""


@attrs.frozen
class Package:
    """Where an importable copy of harn_inbox lives: ``sys.path`` entry and module name."""

    directory: Path
    name: str
    label: str

    def module(self) -> ModuleType:
        if str(self.directory) not in sys.path:
            sys.path.append(str(self.directory))
        return importlib.import_module(self.name)


#: The working tree's package, as the benchmarks import it.
WORKING_TREE = Package(ROOT, "harn_inbox", "working tree")


def package(revision: str) -> Package:
    """The package at *revision* (a commit, tag or branch; ``.`` for the working tree).

    Raises:
        RevisionUnavailable: git is missing, this is not a checkout, or the
            revision names no commit with a ``harn_inbox/`` directory.
    """
    if revision == ".":
        return WORKING_TREE
    try:
        commit = _git("rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").decode()
    except RevisionUnavailable as error:
        raise RevisionUnavailable(f"no commit {revision!r} in {ROOT}: {error}") from error
    commit = commit.strip()
    short = commit[:10]
    name = f"harn_inbox_at_{short}"
    directory = CACHE / commit
    if not (directory / name / "__init__.py").exists():
        _extract(commit, directory, name)
    return Package(directory, name, f"git {revision}")


def _extract(commit: str, directory: Path, name: str) -> None:
    archive = _git("archive", "--format=tar", commit, "harn_inbox")
    staging = Path(tempfile.mkdtemp(prefix="staging-", dir=_made(CACHE)))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(staging, filter="data")
        else:  # pragma: no cover (Pythons without extraction filters)
            tar.extractall(staging)  # our own repository's archive
    _made(directory)
    # Renamed into place in one step, so a concurrent run never sees half a package.
    try:
        (staging / "harn_inbox").rename(directory / name)
    except OSError:
        if not (directory / name / "__init__.py").exists():
            raise
        # Another run put the same commit in place first.
    shutil.rmtree(staging)


def _made(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _git(*arguments: str) -> bytes:
    try:
        return subprocess.run(["git", *arguments], cwd=ROOT, capture_output=True, check=True).stdout
    except FileNotFoundError as error:
        raise RevisionUnavailable("git is not installed") from error
    except subprocess.CalledProcessError as error:
        message = error.stderr.decode(errors="replace").strip()
        raise RevisionUnavailable(message or f"git {arguments[0]} failed") from error
