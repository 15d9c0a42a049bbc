"""One writer per project: the retraining and add-items flows take this lock for their whole run.

``dvc repro`` holds DVC's own repository lock, so a second one is refused by DVC; a Prefect flow
runs the stages itself and takes DVC's lock only around ``dvc status`` / ``dvc commit``, so two
flow runs (a cron run over a manual one, add-items during a retraining) would write the same
folders and race on the registry's aliases. An exclusive ``flock`` on a file in the project
excludes them; the kernel releases it when its holder dies, even by kill -9, so it never goes stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = "idgenrec.lock"


class ProjectBusyError(RuntimeError):
    """Another run holds the project's lock."""


def lock_path(root: str | Path) -> Path:
    """``.dvc/tmp/idgenrec.lock`` in a DVC repository (ignored by git and DVC), else ``.idgenrec.lock``."""
    root = Path(root)
    return root / ".dvc" / "tmp" / LOCK_NAME if (root / ".dvc").is_dir() else root / f".{LOCK_NAME}"


@contextlib.contextmanager
def project_lock(root: str | Path, holder: str, wait_s: float = 0.0) -> Iterator[Path]:
    """Hold the project's lock for the block; wait up to ``wait_s`` seconds, then ProjectBusyError."""
    with file_lock(lock_path(root), holder, wait_s, where=Path(root).resolve()) as path:
        yield path


@contextlib.contextmanager
def file_lock(path: Path, holder: str, wait_s: float = 0.0, where: Path | None = None) -> Iterator[Path]:
    """An exclusive flock on ``path`` for the block (created if missing), naming its holder inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_s
    with path.open("a+", encoding="utf-8") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    other = handle.read().strip() or "another run"
                    raise ProjectBusyError(
                        f"{where or path.parent}: {other} is running (lock {path}); {holder} not started, try again when it ends"
                    ) from None
                time.sleep(0.5)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{holder} (pid {os.getpid()})")
        handle.flush()
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
