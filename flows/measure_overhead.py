"""Orchestration overhead: the retrain flow's work called directly (the library's stage functions) versus the flow.

    python -m flows.measure_overhead --repeats 3      # tiny config, fresh project per run

Both arms do identical work on a fresh copy of the tiny test project (tests/test_tracking.py):
prepare, validate, warm-up, IDs, each phase, curve, evaluate, MLflow log, register, promote.
DVC gating/versioning is measured as a third arm (the flow with ``use_dvc=True``), since a
direct run has no equivalent. Prefect talks to ``PREFECT_API_URL`` if set, else to a
temporary server started once per process (its start-up is reported separately).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fresh_project(base: Path, name: str, with_dvc: bool) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from test_tracking import write_tiny_project

    root = write_tiny_project(base / name)
    if with_dvc:
        shutil.copytree(ROOT / "idgenrec", root / "idgenrec", ignore=shutil.ignore_patterns("__pycache__"))
        text = (ROOT / "dvc.yaml").read_text(encoding="utf-8")
        (root / "dvc.yaml").write_text(text, encoding="utf-8")
        subprocess.run([str(Path(sys.executable).with_name("dvc")), "init", "--no-scm", "-q"], cwd=root, check=True)
    return root


def direct(root: Path) -> None:
    """The flow's work without Prefect: each stage's library function, in the flow's order."""
    import contextlib

    from idgenrec import stages
    from idgenrec.config import load_params
    from idgenrec.layout import LAYOUT
    from idgenrec.tracking import configure_tracking

    params = load_params(root / "params.yaml")
    files = LAYOUT.under(root)
    run_stage = {
        "prepare": lambda: stages.prepare(params, files),
        "validate": lambda: stages.validate(params, files),
        "warmup": lambda: stages.warm_up(params, files, progress=False),
        "ids": lambda: stages.generate_ids(params, files, progress=False),
        "train": lambda: stages.train(params, files),
        "evaluate": lambda: stages.evaluate(params, files),
        "register": lambda: stages.register(params, files, root=root),
    }
    with contextlib.chdir(root):
        configure_tracking(root)
        for stage in stages.MODEL_STAGES:
            run_stage[stage]()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the tiny model's fastest here)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT))
    from flows.retrain import retrain

    started = time.perf_counter()
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:  # starts the temporary server if none is configured
        client.hello()
    startup = time.perf_counter() - started

    times: dict[str, list[float]] = {"direct": [], "prefect": [], "prefect+dvc": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        for repeat in range(args.repeats):  # interleaved, so machine load hits every arm alike
            for arm in times:
                root = fresh_project(base, f"{arm}-{repeat}", with_dvc=arm == "prefect+dvc")
                t0 = time.perf_counter()
                if arm == "direct":
                    direct(root)
                else:
                    retrain(root=str(root), use_dvc=arm == "prefect+dvc", push=False)
                times[arm].append(time.perf_counter() - t0)
    summary = {arm: {"median_s": round(statistics.median(v), 2), "runs_s": [round(x, 2) for x in v]} for arm, v in times.items()}
    summary["prefect_overhead_s"] = round(summary["prefect"]["median_s"] - summary["direct"]["median_s"], 2)
    summary["dvc_gate_and_commit_s"] = round(summary["prefect+dvc"]["median_s"] - summary["prefect"]["median_s"], 2)
    summary["prefect_client_startup_s"] = round(startup, 2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
