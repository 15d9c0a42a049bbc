"""SHA-256 digests of a folder's files: a model folder records them when saved and checks them when loaded.

A flipped byte inside a weights file still loads, and a model that loads answers: without the
digests a damaged folder would serve wrong recommendations without a sign.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

DIGESTS_FILE = "digests.json"


def folder_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file in ``folder`` (but its own ``digests.json``), by path relative to it."""
    digests = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != DIGESTS_FILE):
        sha = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                sha.update(block)
        digests[path.relative_to(folder).as_posix()] = sha.hexdigest()
    return digests


def damage(folder: Path, recorded: Mapping[str, str]) -> str | None:
    """The files of ``folder`` that differ from ``recorded``, each with why (missing, or its SHA-256 differs),
    the first five listed; None when every recorded file is intact."""
    found = folder_digests(folder)
    missing = sorted(set(recorded) - set(found))
    changed = sorted(name for name in recorded if name in found and found[name] != recorded[name])
    damaged = [f"{name} (missing)" for name in missing] + [f"{name} (SHA-256 differs)" for name in changed]
    return ", ".join(damaged[:5]) + (" and more" if len(damaged) > 5 else "") if damaged else None


def record_digests(folder: Path) -> None:
    """Write ``folder``'s digests into it (the last file a save writes)."""
    (folder / DIGESTS_FILE).write_text(json.dumps(folder_digests(folder), indent=1, sort_keys=True), encoding="utf-8")


def check_digests(folder: Path) -> None:
    """Raise ValueError naming the damaged files if ``folder``'s files differ from its recorded digests.

    A folder saved without digests (an older version) is accepted as it is.
    """
    path = folder / DIGESTS_FILE
    if not path.exists():
        return
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: unreadable digests ({err}); save the model again from an intact copy") from None
    damaged = damage(folder, recorded)
    if damaged:
        raise ValueError(f"{folder}: damaged model files, not as saved: {damaged}; "
                         "save or fetch the model again from an intact copy")
