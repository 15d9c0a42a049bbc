"""Retraining flow: data -> validation -> ID generation -> alternating rounds -> evaluation -> registry.

Each task is a thin call into :mod:`idgenrec.stages` (the functions the ``idgenrec`` CLI, and so
``dvc repro``, runs) writing to the paths of :data:`idgenrec.layout.LAYOUT`, which are dvc.yaml's;
the stages come in the order of :data:`idgenrec.stages.MODEL_STAGES`, dvc.yaml's without the
baselines. DVC owns lineage and caching: before a stage the flow asks ``dvc status`` whether its
deps, params or outputs changed and, when not, skips it exactly as ``dvc repro`` would (the
stage's task run then shows in state "Up to date"); after it, ``dvc commit`` records the new
hashes in dvc.lock and the DVC cache, and the run ends with ``dvc push`` to the default remote. A
scheduled run's outputs are therefore versioned like ``dvc repro``'s. Prefect owns the schedule,
retries and observability (a task run per stage and per phase of the schedule, named for it);
MLflow the runs (named for what they trained, e.g. ``ml-100k-learned-seed0``) and the registry.

Run once:  python -m flows.retrain             (or: python flows/retrain.py --help)
Schedule:  python -m flows.serve               (see flows/README.md)
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Completed, State

from idgenrec import stages
from idgenrec.config import Params, load_params
from idgenrec.layout import LAYOUT, PipelineFiles
from idgenrec.locking import project_lock

PROJECT_ROOT = Path(__file__).resolve().parents[1]
UP_TO_DATE = "Up to date"  # the state of a stage's task run when DVC finds the stage current


def transient(task, task_run, state) -> bool:
    """Retry hiccups (a busy DVC lock, a locked sqlite store), not mistakes: a missing file or a
    bad value fails at once instead of after every retry delay."""
    from idgenrec.registry import RegistryError  # no champion, no such version: waiting will not help

    try:
        state.result()
    except (FileNotFoundError, ValueError, TypeError, KeyError, RegistryError):
        return False
    except Exception:
        return True
    return True


def stage_task(name: str, **options):
    """A task named for its pipeline stage, in the task list and in the run's graph. DVC owns
    caching: Prefect never skips a step from its own cache (NO_CACHE)."""
    return task(name=name, task_run_name=name, cache_policy=NO_CACHE, **options)


# -- DVC: lineage and versioning ---------------------------------------------------------

LOCK_ATTEMPTS, LOCK_WAIT_S = 3, 10  # another DVC process (a user's `dvc status`) holds the repository lock briefly


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("dvc")
    command = [str(executable) if executable.exists() else "dvc", *args]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)


def _dvc_or_fail(root: Path, *args: str) -> str:
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        result = _dvc(root, *args)
        if result.returncode == 0:
            return result.stdout
        if "unable to acquire lock" not in result.stderr.lower() or attempt == LOCK_ATTEMPTS:
            break
        time.sleep(LOCK_WAIT_S)
    raise RuntimeError(f"`dvc {' '.join(args)}` failed in {root}: {result.stderr.strip() or result.stdout.strip()}")


def declared_stages(root: Path) -> set[str]:
    path = root / "dvc.yaml"
    return set((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {})) if path.exists() else set()


def stage_is_current(root: Path, stage: str) -> bool:
    """True when dvc.lock already records this stage with its current deps, params and outputs."""
    if stage not in declared_stages(root):
        return False
    return json.loads(_dvc_or_fail(root, "status", stage, "--json") or "{}") == {}


def commit_stage(root: Path, stage: str) -> None:
    """Record the stage's new outputs in dvc.lock and the DVC cache (what `dvc repro` does after a stage)."""
    if stage not in declared_stages(root):
        get_run_logger().warning(f"stage {stage!r} is not in dvc.yaml; its outputs are not versioned")
        return
    _dvc_or_fail(root, "commit", "--force", stage)


class DvcGate:
    """DVC decides what runs: a stage runs unless dvc.lock records it as current; then it is committed."""

    def __init__(self, root: Path, force: bool, use_dvc: bool):
        self.root, self.force, self.use_dvc = root, force, use_dvc

    def is_current(self, stage: str) -> bool:
        return self.use_dvc and not self.force and stage_is_current(self.root, stage)

    def commit(self, stage: str) -> None:
        if self.use_dvc:
            commit_stage(self.root, stage)


@task(name="up-to-date", task_run_name="{stage}", cache_policy=NO_CACHE)
def up_to_date(stage: str) -> State:
    """A stage DVC finds current: its row in the run's graph, in state "Up to date", in place of its work."""
    return Completed(name=UP_TO_DATE, message=f"dvc.lock records stage {stage} as current: not rerun")


@task(name="dvc-push", task_run_name="dvc-push", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10,
      retry_condition_fn=transient)
def push_outputs(root: Path) -> str:
    """`dvc push` to the default remote, if one is configured."""
    answer = _dvc(root, "remote", "default")  # prints the name, or fails with "No default remote set"
    remote = answer.stdout.strip() if answer.returncode == 0 else ""
    if not remote:
        return "no default DVC remote configured: outputs are in the local cache only"
    _dvc_or_fail(root, "push")
    return f"pushed to DVC remote {remote!r}"


# -- the stages: one call into idgenrec.stages each ------------------------------------------


@stage_task("prepare")
def prepare(params: Params, files: PipelineFiles) -> dict:
    return stages.prepare(params, files).stats


@stage_task("validate")
def validate(params: Params, files: PipelineFiles) -> None:
    report = stages.validate(params, files)
    if not report.success:
        raise ValueError(f"data validation failed: {'; '.join(report.to_json()['failures'][:3])} (report: {files.validation_report})")


@stage_task("warmup")
def warm_up(params: Params, files: PipelineFiles) -> dict:
    return stages.warm_up(params, files, progress=False)


@stage_task("ids")
def generate_ids(params: Params, files: PipelineFiles) -> dict:
    return stages.generate_ids(params, files, progress=False)


@stage_task("train")
def start_training(params: Params, files: PipelineFiles) -> int:
    """Resume a run with the same params after its last finished phase, else start fresh; phases done."""
    return stages.start_training(params, files).completed_phases


@task(name="train-phase", task_run_name="round-{index:02d}-{phase}", cache_policy=NO_CACHE)
def train_phase(params: Params, files: PipelineFiles, index: int, phase: str) -> list[dict]:
    """One phase of the schedule, named as its nested MLflow run is (``phase`` only names the task run)."""
    return stages.train_phase(params, files, index)


@stage_task("training-curve")
def finish_training(params: Params, files: PipelineFiles) -> dict:
    state = stages.finish_training(params, files)
    return {"best_phase": state.best_phase, "best_epoch": state.best_epoch, "best_score": state.best_score,
            "similarity_weight": state.similarity_weight}


@task(name="train-processes", task_run_name="train-on-{processes}-processes", cache_policy=NO_CACHE)
def train_on_processes(params: Params, files: PipelineFiles, processes: int) -> int:
    """Every phase on ``runtime.processes`` processes (torchrun; their progress lines are in the worker's log)."""
    return stages.train(params, files).completed_phases


def train(params: Params, files: PipelineFiles) -> None:
    """The train stage as tasks: start (or resume), one task per phase of the schedule, the curve.

    With ``runtime.processes`` above 1 the phases run as one task, in the processes torchrun starts.
    """
    if params.runtime.processes > 1:
        train_on_processes(params, files, params.runtime.processes)
        finish_training(params, files)
        return
    start_training(params, files)
    for index, phase in enumerate(params.training.schedule):  # the alternating schedule is data
        train_phase(params, files, index, phase.phase)
    finish_training(params, files)


@stage_task("evaluate")
def evaluate(params: Params, files: PipelineFiles) -> dict:
    return stages.evaluate(params, files)


# No retries: a retry after the run was logged or registered would log and register it again.
@stage_task("register")
def register(params: Params, files: PipelineFiles, root: Path, run_name: str | None, promote_model: bool) -> dict:
    from idgenrec.tracking import configure_tracking

    configure_tracking(root)
    tags = {"idgenrec.trigger": "prefect", "prefect.flow_run_id": str(flow_run.get_id() or "")}
    return stages.register(params, files, root=root, run_name=run_name, tags=tags, promote_model=promote_model)


@contextlib.contextmanager
def library_logs_to_run():
    """While the flow runs, send the library's progress and summary lines (logger ``idgenrec``) to the
    run's logs in the Prefect UI: what ``PREFECT_LOGGING_EXTRA_LOGGERS=idgenrec`` does, but independent
    of whether that was set before Prefect was first imported.

    The handlers come off again at the end: left on, every library log line outside a flow run in
    the same process (a notebook, a served deployment between runs) raised a Prefect UserWarning.
    """
    library = logging.getLogger("idgenrec")
    level = library.level
    added = [h for h in logging.getLogger("prefect.extra").handlers if h not in library.handlers]  # Prefect's API handler
    library.setLevel(logging.INFO)
    for handler in added:
        library.addHandler(handler)
    try:
        yield
    finally:
        for handler in added:
            library.removeHandler(handler)
        library.setLevel(level)


# -- the story -----------------------------------------------------------------------------


@flow(name="idgenrec-retrain", log_prints=True)
def retrain(
    params_path: str = "params.yaml",
    root: str | None = None,
    force: bool = False,
    use_dvc: bool = True,
    push: bool = True,
    promote_model: bool = True,
    run_name: str | None = None,
) -> dict:
    """Retrain IDGenRec end to end; returns the registry record (run id, version, promotion).

    Args:
        params_path: params.yaml, relative to ``root`` (every model knob lives there).
        root: project root (default: the folder above flows/).
        force: run every stage even when DVC says it is up to date (like `dvc repro -f`).
        use_dvc: skip up-to-date stages and version outputs with DVC (off: run all, version nothing).
        push: `dvc push` to the default remote at the end (when one is configured).
        promote_model: apply the promotion rule to the new version (else it stays challenger).
        run_name: MLflow run name (default: what it trained, e.g. ``ml-100k-learned-seed0``).
    """
    root_dir = Path(root).resolve() if root else PROJECT_ROOT
    if use_dvc and not (root_dir / ".dvc").is_dir():
        raise ValueError(f"{root_dir} is not a DVC repository; run `dvc init` there or pass use_dvc=False")
    params = load_params(root_dir / params_path)
    files = LAYOUT.with_paths(params=params_path).under(root_dir)
    gate = DvcGate(root_dir, force, use_dvc)
    run_stage = {
        "prepare": lambda: prepare(params, files),
        "validate": lambda: validate(params, files),
        "warmup": lambda: warm_up(params, files),
        "ids": lambda: generate_ids(params, files),
        "train": lambda: train(params, files),
        "evaluate": lambda: evaluate(params, files),
        "register": lambda: register(params, files, root_dir, run_name, promote_model),
    }
    # Paths inside params.yaml (data.path) are relative to the project root, as under `dvc repro`.
    # One writer per project: a second flow run (or add-items) is refused while this one runs.
    with project_lock(root_dir, "a retraining flow"), library_logs_to_run(), contextlib.chdir(root_dir):
        for stage in stages.MODEL_STAGES:  # dvc.yaml's order; the baselines are left to `dvc repro`
            if gate.is_current(stage):
                up_to_date(stage)
                continue
            run_stage[stage]()
            gate.commit(stage)
        if use_dvc and push:
            get_run_logger().info(push_outputs(root_dir))
    return json.loads(files.registry_record.read_text(encoding="utf-8")) if files.registry_record.exists() else {}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Retrain IDGenRec once (no schedule); see flows/serve.py for that.")
    parser.add_argument("--params-path", default="params.yaml")
    parser.add_argument("--force", action="store_true", help="run every stage (like `dvc repro -f`)")
    parser.add_argument("--no-dvc", dest="use_dvc", action="store_false", help="run all stages, version nothing")
    parser.add_argument("--no-push", dest="push", action="store_false")
    parser.add_argument("--no-promote", dest="promote_model", action="store_false")
    parser.add_argument("--run-name", help="MLflow run name (default: what it trained, e.g. ml-100k-learned-seed0)")
    print(json.dumps(retrain(**vars(parser.parse_args())), indent=2, default=str))
