"""A finished pipeline run in MLflow: one parent run, one nested run per phase of the schedule.

:func:`log_pipeline_run` is the single place a finished pipeline run is recorded; the DVC
``register`` stage (``idgenrec registry log-run``) and the Prefect flow both reach it through
:func:`idgenrec.stages.register`. It reads only the pipeline's files (see
:class:`idgenrec.layout.PipelineFiles`), so it records what DVC versions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import mlflow

from idgenrec.config import Params
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import selection_key
from idgenrec.layout import PipelineFiles
from idgenrec.tracking.logged import LoggedRun, log_dataset, log_served_model, read_json, run_tags
from idgenrec.tracking.names import DEFAULT_ARCHITECTURE, flatten_params, metric_key, numeric_metrics
from idgenrec.tracking.names import run_name as default_run_name
from idgenrec.tracking.plots import curve_points, log_training_curve_plot
from idgenrec.tracking.store import ensure_experiment


def log_pipeline_run(
    params: Params,
    files: PipelineFiles,
    *,
    root: str | Path,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    log_model: bool = True,
) -> LoggedRun:
    """Record a finished pipeline run (its files under ``root``) as one parent run with nested rounds.

    Logs: every param; the prepared dataset as input; per-epoch metrics (nested runs, by
    epoch) and per-round metrics (parent, by phase index), including ID quality and IDs
    changed between rounds; final validation/test metrics; artifacts (params.yaml, the
    validation report, every round's ID table, metrics JSONs, training state, a curve
    plot); and, with ``log_model``, the selected model as a pyfunc. The run is named for what
    it trained (:func:`idgenrec.tracking.names.run_name`) unless ``run_name`` says otherwise.
    """
    from idgenrec.backbone.seq2seq import pick_device, training_precision
    from idgenrec.baselines.popularity import popularity_metrics
    from idgenrec.recommender.alternating import STATE, TIMINGS, TrainingState, params_fingerprint

    root = Path(root).resolve()
    files = files.under(root)
    dataset = SequenceDataset.load(files.prepared)
    state = TrainingState.load(files.workdir)
    if state is None:
        raise FileNotFoundError(f"{files.workdir}: no training state (run `idgenrec train` first)")
    model_metrics = read_json(files.model_metrics, "model metrics")
    selection = selection_key("valid", params.evaluation.exclude_seen, params.evaluation.selection_metric)
    experiment_id = ensure_experiment(params.data.label, root)
    described = {
        "idgenrec.params_fingerprint": params_fingerprint(params),
        "idgenrec.ids_kind": params.ids.kind,
        "idgenrec.backbone": params.backbone.profile,
        "idgenrec.architecture": getattr(params.backbone, "architecture", DEFAULT_ARCHITECTURE),
        # training.bf16 is a request: hosts without bf16 kernels train in fp32. This is the logging
        # host's answer, which in `dvc repro` is the host that trained (the stages run together).
        "idgenrec.precision": training_precision(pick_device(), params.training.bf16),
    }
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name or default_run_name(params),
        tags=run_tags(params.data.label, root, described, tags),
    ) as run:
        mlflow.log_params(flatten_params(params))
        digest = log_dataset(dataset, source=str(files.prepared))
        mlflow.set_tag("idgenrec.dataset_digest", digest)

        log_phase_runs(params, state.records, files.rounds)
        curve_key = f"valid_{params.evaluation.selection_metric}"
        for step, values in curve_points(state.records, curve_key):  # the `dvc plots` curve
            mlflow.log_metrics({f"curve/{metric_key(k)}": v for k, v in values.items()}, step=step)
        mlflow.log_metrics({
            "best/score": state.best_score, "best/phase": float(state.best_phase or 0),
            "best/epoch": float(state.best_epoch or 0), "phases_completed": float(state.completed_phases),
        })
        if state.valid_by_similarity_weight is not None:  # the weight validation kept, and what each scored
            mlflow.log_metric("best/similarity_weight", float(state.similarity_weight))
            mlflow.log_metrics({f"similarity/{metric_key(selection)}/{weight}": score
                                for weight, score in state.valid_by_similarity_weight.items()})
        mlflow.log_metrics({metric_key(k): float(v) for k, v in model_metrics.items()})
        popularity = popularity_metrics(dataset, params.evaluation)[selection]  # the registry's floor
        mlflow.log_metric(f"popularity/{metric_key(selection)}", popularity)
        for path, prefix in ((files.warmup_metrics, "warmup"), (files.ids_metrics, "ids")):
            if path.exists():
                mlflow.log_metrics({f"{prefix}/{k}": v for k, v in numeric_metrics(read_json(path, prefix)).items()})

        for path, folder in (
            (files.params, "config"),
            (files.validation_report, "validation"),
            (files.warmup_metrics, "metrics"),
            (files.ids_metrics, "metrics"),
            (files.model_metrics, "metrics"),
            (files.training_curve, "metrics"),
            (files.workdir / STATE, "training"),
            (files.workdir / TIMINGS, "training"),
        ):
            if path.exists():
                mlflow.log_artifact(str(path), folder)
        if files.rounds.exists():
            mlflow.log_artifacts(str(files.rounds), "ids/rounds")
        log_training_curve_plot(state.records, curve_key, "plots/training_curve.png")

        model_uri = log_served_model(files.model, dataset, dataset.num_items) if log_model else None
        return LoggedRun(
            run_id=run.info.run_id,
            experiment_id=experiment_id,
            model_uri=model_uri,
            selection_metric=selection,
            selection_score=model_metrics.get(selection),
            dataset_digest=digest,
            popularity_score=popularity,
        )


def log_phase_runs(params: Params, records: Sequence[Mapping], rounds: Path) -> None:
    """A nested run per phase (per-epoch metrics by step) and per-round metrics on the parent."""
    parent = mlflow.active_run().info
    parent_id = parent.run_id
    for index, phase in enumerate(params.training.schedule):
        phase_records = [r for r in records if r.get("phase_index") == index]
        with mlflow.start_run(run_name=f"round-{index:02d}-{phase.phase}", nested=True, experiment_id=parent.experiment_id):
            mlflow.log_params({"phase": phase.phase, "epochs": phase.epochs, "learning_rate": phase.learning_rate, "index": index})
            for record in phase_records:
                step = int(record.get("epoch", 1))
                mlflow.log_metrics(numeric_metrics(record, skip=("phase_index", "epoch")), step=step)
                if record.get("skipped"):
                    mlflow.set_tag("skipped", record["skipped"])
            table = rounds / f"ids-{index + 1:02d}.tsv"
            if phase.phase == "ids" and table.exists():
                mlflow.log_artifact(str(table), "ids")
            if not phase_records:
                mlflow.set_tag("status_note", "no records: the phase has not run")
        if phase_records:  # the round's summary: its last record, on the parent, step = phase index
            summary = numeric_metrics(phase_records[-1], skip=("phase_index", "epoch", "seconds", "selected"))
            summary["seconds"] = sum(float(r.get("seconds", 0.0)) for r in phase_records)
            mlflow.log_metrics({f"round/{k}": v for k, v in summary.items()}, step=index, run_id=parent_id)
