"""What is bit-identical: the same code, software and machine (CPU kind and thread count) give the
same bytes for every pipeline output, run after run. Another CPU is only within seed noise (its
kernels sum in another order, and one with bf16 kernels trains in bf16 where this one uses fp32);
docs/reliability.md says which is which."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from test_tracking import run_tiny_pipeline, write_tiny_project

pytestmark = pytest.mark.model

OUTPUTS = ("artifacts/prepared", "artifacts/generator", "artifacts/ids", "artifacts/model/best", "metrics/model.json")


def digests(root: Path) -> dict[str, str]:
    files = []
    for name in OUTPUTS:
        path = root / name
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.slow
def test_two_runs_on_one_machine_write_the_same_bytes(tmp_path):
    """Both runs in the same folder: stats.json records the data's path."""
    runs = []
    for _ in range(2):
        root = write_tiny_project(tmp_path / "project")
        run_tiny_pipeline(root)
        runs.append(digests(root))
        shutil.rmtree(root)
    assert runs[0] == runs[1] and len(runs[0]) > 10
