"""Which code produced a result: the git commit, and whether the library differs from it."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _git(root: Path, *args: str) -> str | None:
    """``git ARGS``' output in ``root``; None without git or outside a checkout."""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_commit(root: Path) -> str | None:
    return _git(root, "rev-parse", "HEAD") or None


def code_version(root: Path) -> dict | None:
    """The commit ``root`` is at and whether the library (``idgenrec/``) differs from it; None outside git.

    Benchmarks record it beside their results, so runs with the same params on different library
    code (other arithmetic, other numbers) can be told apart after the fact.
    """
    commit, changes = git_commit(root), _git(root, "status", "--porcelain", "--", "idgenrec")
    if commit is None or changes is None:
        return None
    return {"commit": commit, "library_modified": bool(changes)}
