"""Retraining flow: data -> validation -> ID generation -> alternating rounds -> evaluation -> registry.

Each task is a thin call into ``idgenrec`` (the same functions the ``idgenrec`` CLI, and so
``dvc repro``, runs) writing to the same paths as dvc.yaml. DVC owns lineage and caching:
before a stage the flow asks ``dvc status`` whether its deps, params or outputs changed
and skips it when not, exactly as ``dvc repro`` would; after it, ``dvc commit`` records the
new hashes in dvc.lock and the DVC cache, and the run ends with ``dvc push`` to the default
remote. A scheduled run's outputs are therefore versioned like ``dvc repro``'s. Prefect
owns the schedule, retries and observability; MLflow the runs and the registry.

Run once:  python -m flows.retrain             (or: python flows/retrain.py --help)
Schedule:  python -m flows.serve               (see flows/README.md)
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from idgenrec.atomic import write_json
from idgenrec.config import Params, load_params
from idgenrec.data.dataset import SequenceDataset
from idgenrec.tracking import LoggedRun, PipelineFiles

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The stages this flow runs, in dvc.yaml's names; `popularity` and other baselines are left to `dvc repro`.
PIPELINE_STAGES = ("prepare", "validate", "warmup", "ids", "train", "evaluate", "register")


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


# DVC owns caching: Prefect never skips a step from its own cache (NO_CACHE on every task).
step = task(cache_policy=NO_CACHE)
io_step = task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10, retry_condition_fn=transient)
registry_step = task(cache_policy=NO_CACHE, retries=3, retry_delay_seconds=[5, 20, 60], retry_condition_fn=transient)


# -- DVC: lineage and versioning ---------------------------------------------------------


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).with_name("dvc")
    command = [str(executable) if executable.exists() else "dvc", *args]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)


def _dvc_or_fail(root: Path, *args: str) -> str:
    result = _dvc(root, *args)
    if result.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed in {root}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def declared_stages(root: Path) -> set[str]:
    path = root / "dvc.yaml"
    return set((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("stages", {})) if path.exists() else set()


@io_step
def stage_is_current(root: Path, stage: str) -> bool:
    """True when dvc.lock already records this stage with its current deps, params and outputs."""
    if stage not in declared_stages(root):
        return False
    return json.loads(_dvc_or_fail(root, "status", stage, "--json") or "{}") == {}


@io_step
def commit_stage(root: Path, stage: str) -> None:
    """Record the stage's new outputs in dvc.lock and the DVC cache (what `dvc repro` does after a stage)."""
    if stage not in declared_stages(root):
        get_run_logger().warning(f"stage {stage!r} is not in dvc.yaml; its outputs are not versioned")
        return
    _dvc_or_fail(root, "commit", "--force", stage)


@io_step
def push_outputs(root: Path) -> str:
    """`dvc push` to the default remote, if one is configured."""
    answer = _dvc(root, "remote", "default")  # prints the name, or fails with "No default remote set"
    remote = answer.stdout.strip() if answer.returncode == 0 else ""
    if not remote:
        return "no default DVC remote configured: outputs are in the local cache only"
    _dvc_or_fail(root, "push")
    return f"pushed to DVC remote {remote!r}"


# -- pipeline steps: thin calls into idgenrec ----------------------------------------------


@step
def prepare(params: Params, files: PipelineFiles) -> dict:
    from idgenrec.data.prepare import prepare as prepare_dataset

    return prepare_dataset(params.data, files.prepared).stats


@step
def validate(params: Params, files: PipelineFiles) -> None:
    from idgenrec.data.validate import validate as run_validation

    report = run_validation(params.data, files.prepared, files.validation_report)
    if not report.success:
        raise ValueError(f"data validation failed: {'; '.join(report.to_json()['failures'][:3])} (report: {files.validation_report})")


@step
def warm_up(params: Params, files: PipelineFiles) -> dict:
    from idgenrec.ids import warm_up_generator

    result = warm_up_generator(SequenceDataset.load(files.prepared), params, files.generator, progress=False)
    write_json(files.warmup_metrics, result)
    return result


@step
def generate_ids(params: Params, files: PipelineFiles) -> dict:
    from idgenrec.backbone import build_tokenizer, load_seq2seq, vocabulary_corpus
    from idgenrec.ids import make_id_table

    dataset = SequenceDataset.load(files.prepared)
    if params.ids.kind == "learned":
        model, tokenizer = load_seq2seq(files.generator)
    else:
        model, tokenizer = None, build_tokenizer(params.backbone, vocabulary_corpus(dataset))
    table, quality = make_id_table(params.ids.kind, dataset, model, tokenizer, params.ids, progress=False)
    table.save(files.id_table, tokenizer)
    write_json(files.ids_metrics, quality)
    return quality


@step
def start_training(params: Params, files: PipelineFiles) -> int:
    """Resume a run with the same params after its last finished phase, else start fresh."""
    from idgenrec.recommender.alternating import start_or_resume

    dataset = SequenceDataset.load(files.prepared)
    return start_or_resume(params, dataset, files.generator, files.id_table, files.workdir).completed_phases


@step(task_run_name="round-{index:02d}-{phase}")
def train_phase(params: Params, files: PipelineFiles, index: int, phase: str) -> list[dict]:
    from idgenrec.recommender.alternating import run_phase

    return run_phase(params, SequenceDataset.load(files.prepared), files.workdir, index)


@step
def write_training_curve(files: PipelineFiles) -> dict:
    from idgenrec.recommender.alternating import TrainingState

    state = TrainingState.load(files.workdir)
    write_json(files.training_curve, [{"step": n, **record} for n, record in enumerate(state.records, start=1)])
    return {"best_phase": state.best_phase, "best_epoch": state.best_epoch, "best_score": state.best_score}


@step
def evaluate(params: Params, files: PipelineFiles) -> dict:
    from idgenrec.evaluation import evaluate_protocol
    from idgenrec.recommender.model import IDGenRecModel
    from idgenrec.backbone import pick_device

    model = IDGenRecModel.load(files.model, device=pick_device())
    results = evaluate_protocol(
        model, SequenceDataset.load(files.prepared), params.evaluation.ks, params.evaluation.sample_users
    )
    write_json(files.model_metrics, results)
    return results


@registry_step
def log_run(params: Params, files: PipelineFiles, root: Path, run_name: str | None) -> LoggedRun:
    from idgenrec.tracking import configure_tracking, log_pipeline_run

    configure_tracking(root)
    tags = {"idgenrec.trigger": "prefect", "prefect.flow_run_id": str(flow_run.get_id() or "")}
    return log_pipeline_run(params, files, root=root, run_name=run_name, tags=tags)


@registry_step
def register(logged: LoggedRun, params: Params, root: Path) -> str:
    from idgenrec.registry import register_logged_run
    from idgenrec.tracking import configure_tracking

    configure_tracking(root)
    return register_logged_run(logged, params.data.name)


@registry_step
def promote(params: Params, version: str, root: Path):
    from idgenrec.registry import promote as promote_version, registered_model_name
    from idgenrec.tracking import configure_tracking

    configure_tracking(root)
    return promote_version(registered_model_name(params.data.name), params.registry.margin, version)


@step
def write_registry_record(logged: LoggedRun, params: Params, version: str | None, decision, files: PipelineFiles) -> dict:
    from idgenrec.registry import registered_model_name, registry_record

    record = registry_record(logged, registered_model_name(params.data.name), version, decision)
    write_json(files.registry_record, record)
    return record


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


class StageGate:
    """DVC decides what runs: a stage runs unless dvc.lock says it is current; then it is committed."""

    def __init__(self, root: Path, force: bool, use_dvc: bool):
        self.root, self.force, self.use_dvc = root, force, use_dvc

    def needed(self, stage: str) -> bool:
        if self.force or not self.use_dvc or not stage_is_current(self.root, stage):
            return True
        get_run_logger().info(f"stage {stage}: up to date in dvc.lock, skipped")
        return False

    def done(self, stage: str) -> None:
        if self.use_dvc:
            commit_stage(self.root, stage)


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
        run_name: MLflow run name (default: generated).
    """
    root_dir = Path(root).resolve() if root else PROJECT_ROOT
    if use_dvc and not (root_dir / ".dvc").is_dir():
        raise ValueError(f"{root_dir} is not a DVC repository; run `dvc init` there or pass use_dvc=False")
    params = load_params(root_dir / params_path)
    files = PipelineFiles(params=Path(params_path)).under(root_dir)
    gate = StageGate(root_dir, force, use_dvc)
    # Paths inside params.yaml (data.path) are relative to the project root, as under `dvc repro`.
    with library_logs_to_run(), contextlib.chdir(root_dir):
        if gate.needed("prepare"):
            prepare(params, files)
            gate.done("prepare")
        if gate.needed("validate"):
            validate(params, files)
            gate.done("validate")
        if gate.needed("warmup"):
            warm_up(params, files)
            gate.done("warmup")
        if gate.needed("ids"):
            generate_ids(params, files)
            gate.done("ids")
        if gate.needed("train"):
            start_training(params, files)
            for index, phase in enumerate(params.training.schedule):  # the alternating schedule is data
                train_phase(params, files, index, phase.phase)
            write_training_curve(files)
            gate.done("train")
        if gate.needed("evaluate"):
            evaluate(params, files)
            gate.done("evaluate")
        record = json.loads(files.registry_record.read_text()) if files.registry_record.exists() else {}
        if gate.needed("register"):
            logged = log_run(params, files, root_dir, run_name)
            version = register(logged, params, root_dir)
            decision = promote(params, version, root_dir) if promote_model else None
            record = write_registry_record(logged, params, version, decision, files)
            gate.done("register")
        if use_dvc and push:
            get_run_logger().info(push_outputs(root_dir))
    return record


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Retrain IDGenRec once (no schedule); see flows/serve.py for that.")
    parser.add_argument("--params-path", default="params.yaml")
    parser.add_argument("--force", action="store_true", help="run every stage (like `dvc repro -f`)")
    parser.add_argument("--no-dvc", dest="use_dvc", action="store_false", help="run all stages, version nothing")
    parser.add_argument("--no-push", dest="push", action="store_false")
    parser.add_argument("--no-promote", dest="promote_model", action="store_false")
    parser.add_argument("--run-name")
    print(json.dumps(retrain(**vars(parser.parse_args())), indent=2, default=str))
