"""The pipeline's stages: one function each, reading and writing the files of a :class:`PipelineFiles`.

The ``idgenrec`` commands (so ``dvc repro``), the Prefect flow and the benchmarks call these
functions; each writes what its dvc.yaml stage declares as outputs. :data:`PIPELINE` is the
stage list in dvc.yaml's order (tests/test_layout.py keeps the two in step), so the flow takes
its sequence from here rather than writing it out again.

Paths inside params.yaml (``data.path``) are relative to the project root: call the stages from
there, as ``dvc repro`` does.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from idgenrec.atomic import write_json
from idgenrec.config import Params
from idgenrec.data.dataset import SequenceDataset
from idgenrec.layout import PipelineFiles

if TYPE_CHECKING:
    from idgenrec.data.validate import ValidationReport
    from idgenrec.recommender.alternating import TrainingState


@dataclass(frozen=True)
class Stage:
    name: str  # as in dvc.yaml
    baseline: bool = False  # a baseline: `dvc repro` runs it, the retraining flow leaves it out


PIPELINE = (
    Stage("prepare"),
    Stage("validate"),
    Stage("popularity", baseline=True),
    Stage("sasrec", baseline=True),
    Stage("warmup"),
    Stage("ids"),
    Stage("train"),
    Stage("evaluate"),
    Stage("register"),
)
MODEL_STAGES = tuple(stage.name for stage in PIPELINE if not stage.baseline)  # data -> registered model


# -- data --------------------------------------------------------------------------------


def prepare(params: Params, files: PipelineFiles) -> SequenceDataset:
    """Read the raw data named in ``data.*``, apply k-core and time order, build item text; save."""
    from idgenrec.data.prepare import prepare as prepare_dataset

    return prepare_dataset(params.data, files.prepared)


def validate(params: Params, files: PipelineFiles) -> "ValidationReport":
    """Great Expectations suites on the raw data, item text and prepared splits; the report is written
    either way, and the caller decides what a failure stops."""
    from idgenrec.data.validate import validate as run_validation

    return run_validation(params.data, files.prepared, files.validation_report)


# -- baselines ---------------------------------------------------------------------------


def popularity(params: Params, files: PipelineFiles) -> dict[str, float]:
    from idgenrec.baselines.popularity import popularity_metrics

    results = popularity_metrics(SequenceDataset.load(files.prepared), params.evaluation)
    write_json(files.popularity_metrics, results)
    return results


def sasrec(params: Params, files: PipelineFiles, progress: bool = True) -> dict[str, float]:
    """Train SASRec, keep the epoch best on validation, save it; test and validation metrics and its training time."""
    from idgenrec.baselines.sasrec import SASRecRecommender
    from idgenrec.evaluation import evaluate_protocol

    dataset = SequenceDataset.load(files.prepared)
    model = SASRecRecommender.fit(
        dataset,
        params.sasrec,
        ks=params.evaluation.ks,
        selection_metric=params.evaluation.selection_metric,
        exclude_seen=params.evaluation.exclude_seen,
        progress=progress,
    )
    model.save(files.sasrec_model)
    results = evaluate_protocol(model, dataset, params.evaluation.ks, params.evaluation.sample_users)
    epochs = len(model.log.epochs)
    results["train/epochs"] = epochs
    results["train/best_epoch"] = model.log.best_epoch
    results["train/seconds"] = round(model.log.seconds, 1)
    results["train/seconds_per_epoch"] = round(sum(e.seconds for e in model.log.epochs) / epochs, 2)
    write_json(files.sasrec_metrics, results)
    return results


# -- training on several processes ----------------------------------------------------------


def on_processes(params: Params, command: list) -> bool:
    """Run ``idgenrec <command> --params ...`` on ``runtime.processes`` processes and wait; False if the caller should train.

    False in a single process, and in a process ``torchrun`` started (which then joins its group):
    the launched command calls this stage function again, and trains. The params go to the
    processes as a file, so what a caller changed in them holds there too.
    """
    from idgenrec import distributed

    if params.runtime.processes == 1 or distributed.launched_by_torchrun():
        distributed.init_from_environment()
        return False
    with tempfile.TemporaryDirectory(prefix="idgenrec-params-") as folder:
        path = Path(folder) / "params.yaml"
        path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
        distributed.launch(params.runtime.processes, [*map(str, command), "--params", str(path)])
    return True


# -- item IDs ------------------------------------------------------------------------------


def warm_up(params: Params, files: PipelineFiles, progress: bool = True) -> dict:
    """Teach the ID generator to write a keyword phrase of each item's own text; save it and its metrics."""
    from idgenrec import distributed
    from idgenrec.ids import warm_up_generator

    command = ["ids", "warmup", "--prepared", files.prepared, "--output", files.generator, "--metrics", files.warmup_metrics]
    if on_processes(params, command):
        return json.loads(files.warmup_metrics.read_text(encoding="utf-8"))
    result = warm_up_generator(SequenceDataset.load(files.prepared), params, files.generator, progress=progress)
    if distributed.current().main:
        write_json(files.warmup_metrics, result)
    return result


def generate_ids(params: Params, files: PipelineFiles, progress: bool = True) -> dict:
    """Give every item a unique textual ID (``ids.kind``); save the table and its quality metrics."""
    from idgenrec.backbone import build_tokenizer, load_seq2seq, vocabulary_corpus
    from idgenrec.ids import make_id_table

    dataset = SequenceDataset.load(files.prepared)
    if params.ids.kind == "learned":
        model, tokenizer = load_seq2seq(files.generator)
    else:
        model, tokenizer = None, build_tokenizer(params.backbone, vocabulary_corpus(dataset))
    table, quality = make_id_table(params.ids.kind, dataset, model, tokenizer, params.ids, progress=progress)
    table.save(files.id_table, tokenizer)
    write_json(files.ids_metrics, quality)
    return quality


# -- the recommender -----------------------------------------------------------------------


def start_training(params: Params, files: PipelineFiles) -> "TrainingState":
    """Resume a run with the same params and inputs after its last finished phase, else start afresh."""
    from idgenrec.ids import ItemIdTable
    from idgenrec.recommender.alternating import start_or_resume

    dataset = SequenceDataset.load(files.prepared)
    try:  # an ID table with an item missing or added would train on the wrong catalogue
        ItemIdTable.load(files.id_table).check_aligned(dataset)
    except ValueError as err:
        raise ValueError(f"{files.id_table}: {err}; regenerate it with `idgenrec ids generate`") from None
    return start_or_resume(params, dataset, files.generator, files.id_table, files.workdir)


def train_phase(params: Params, files: PipelineFiles, index: int) -> list[dict]:
    """Phase ``index`` of ``training.schedule`` (nothing when a resumed run already finished it); its records."""
    from idgenrec.recommender.alternating import run_phase

    return run_phase(params, SequenceDataset.load(files.prepared), files.workdir, index)


def finish_training(params: Params, files: PipelineFiles) -> "TrainingState":
    """After the last phase: the selected model's similarity weight (chosen once), the per-epoch records as the
    training curve (``dvc plots``); the final state."""
    from idgenrec import distributed
    from idgenrec.recommender.alternating import TrainingState, choose_similarity_weight

    state = TrainingState.load(files.workdir)
    if state is None or state.best_phase is None:
        raise RuntimeError(f"{files.workdir}: no model was selected (the schedule has no recommender phase, or it has not run)")
    if len(params.training.similarity_weights) > 1:  # only then is the prepared data read
        state = choose_similarity_weight(params, SequenceDataset.load(files.prepared), files.workdir)
    if distributed.current().main:
        write_json(files.training_curve, [{"step": step, **record} for step, record in enumerate(state.records, start=1)])
    return state


def train(params: Params, files: PipelineFiles) -> "TrainingState":
    """Alternating training per ``training.schedule``: start (or resume), every phase in order, the curve.

    With ``runtime.processes`` above 1, on that many processes (:func:`on_processes`).
    """
    command = ["train", "--prepared", files.prepared, "--generator", files.generator, "--ids", files.id_table,
               "--workdir", files.workdir, "--curve", files.training_curve]
    if on_processes(params, command):
        return finish_training(params, files)
    start_training(params, files)
    for index in range(len(params.training.schedule)):  # the alternating schedule is data
        train_phase(params, files, index)
    return finish_training(params, files)


def evaluate(params: Params, files: PipelineFiles, model: Path | None = None) -> dict[str, float]:
    """Validation and test Recall/NDCG@k of the selected model (or ``model``), both seen-item settings."""
    from idgenrec.backbone import pick_device
    from idgenrec.evaluation import evaluate_protocol
    from idgenrec.recommender.model import IDGenRecModel

    folder = model or files.model
    dataset = SequenceDataset.load(files.prepared)
    recommender = IDGenRecModel.load(folder, device=pick_device())
    try:
        recommender = recommender.for_catalogue(dataset.item_ids)  # a model grown by add-items numbers items its own way
    except ValueError as err:
        raise ValueError(f"{folder} cannot be evaluated on {files.prepared}: {err}") from None
    results = evaluate_protocol(recommender, dataset, params.evaluation.ks, params.evaluation.sample_users)
    write_json(files.model_metrics, results)
    return results


# -- MLflow and the registry ---------------------------------------------------------------


def register(
    params: Params,
    files: PipelineFiles,
    *,
    root: str | Path,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    register_model: bool = True,
    promote_model: bool = True,
) -> dict:
    """Log the finished run to MLflow (the store :func:`idgenrec.tracking.configure_tracking` set),
    register its model as challenger, apply the promotion rule; the record, also written to
    ``files.registry_record``."""
    from idgenrec.registry import record_pipeline_run

    record = record_pipeline_run(
        params, files, root=root, run_name=run_name, tags=dict(tags or {}), register_model=register_model,
        promote_model=promote_model,
    )
    write_json(files.registry_record, record)
    return record
