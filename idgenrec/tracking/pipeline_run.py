"""MLflow tracking: one parent run per pipeline run, one nested run per alternating phase.

Nothing here runs at import. Entry points (the CLI, the Prefect flow, tests) call
:func:`configure_tracking` with the project root; the store is then
``sqlite:///<root>/mlruns/mlflow.db`` with artifacts under ``<root>/mlruns/`` (absolute, so
any working directory works), unless ``IDGENREC_TRACKING_URI`` names a shared tracking server.
(Not ``MLFLOW_TRACKING_URI``: ``mlflow.set_tracking_uri`` exports that itself, so it cannot
tell a user's choice from an earlier configuration in the same process.)

:func:`log_pipeline_run` is the single place a finished pipeline run is recorded; the DVC
``register`` stage (``idgenrec registry log-run``) and the Prefect flow both call it. It
reads only the pipeline's files (see :class:`PipelineFiles`), so it records what DVC versions.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from idgenrec.config import Params
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import selection_key

STORE_DIR = "mlruns"
STORE_FILE = "mlflow.db"
TRACKING_URI_VARIABLE = "IDGENREC_TRACKING_URI"
EXAMPLE_USERS = 2  # histories in the registered model's input example


@dataclass(frozen=True)
class PipelineFiles:
    """Where the pipeline's stages write (the paths in dvc.yaml), relative to the project root."""

    params: Path = Path("params.yaml")
    prepared: Path = Path("artifacts/prepared")
    validation_report: Path = Path("artifacts/validation/report.json")
    generator: Path = Path("artifacts/generator")
    warmup_metrics: Path = Path("metrics/warmup.json")
    ids: Path = Path("artifacts/ids")
    ids_metrics: Path = Path("metrics/ids.json")
    workdir: Path = Path("artifacts/model")
    training_curve: Path = Path("metrics/training_curve.json")
    model_metrics: Path = Path("metrics/model.json")
    registry_record: Path = Path("metrics/registry.json")

    @property
    def id_table(self) -> Path:
        return self.ids / "item_ids.tsv"

    @property
    def model(self) -> Path:
        return self.workdir / "best"

    @property
    def rounds(self) -> Path:
        return self.workdir / "rounds"

    def under(self, root: str | Path) -> "PipelineFiles":
        """The same layout with every relative path made absolute under ``root``."""
        root = Path(root).resolve()
        return PipelineFiles(**{name: root / getattr(self, name) for name in self.__dataclass_fields__})


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    experiment_id: str
    model_uri: str | None  # the logged pyfunc (``models:/m-...``), None when not logged
    selection_metric: str  # its key in metrics/model.json, e.g. "valid/seen_included/ndcg@10"
    selection_score: float | None
    dataset_digest: str
    popularity_score: float | None = None  # the popularity baseline on the selection metric, same users
    grown_from: str | None = None  # the registered version a model grown by add-items started from
    new_items_digest: str | None = None  # which items add-items gave it (registry.new_items_digest)


# -- the store ---------------------------------------------------------------------------


def find_project_root(start: str | Path = ".") -> Path:
    """The nearest folder at or above ``start`` holding dvc.yaml or params.yaml (else ``start``)."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").exists() or (folder / "params.yaml").exists():
            return folder
    return start


def default_tracking_uri(root: str | Path) -> str:
    return f"sqlite:///{Path(root).resolve() / STORE_DIR / STORE_FILE}"


def configure_tracking(root: str | Path, uri: str | None = None) -> str:
    """Point MLflow (tracking and registry) at the project's store; returns the URI.

    ``uri`` wins, then ``IDGENREC_TRACKING_URI`` (a shared tracking server), then the
    project's sqlite file.
    """
    uri = uri or os.environ.get(TRACKING_URI_VARIABLE) or default_tracking_uri(root)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_name(dataset_name: str) -> str:
    return f"idgenrec-{dataset_name}"


def ensure_experiment(dataset_name: str, root: str | Path) -> str:
    """The dataset's experiment id, created on first use with artifacts under ``<root>/mlruns/``."""
    name = experiment_name(dataset_name)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):  # a tracking server decides for itself
        location = (Path(root).resolve() / STORE_DIR / name).as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


# -- names and values ------------------------------------------------------------------


def metric_key(name: str) -> str:
    """MLflow keys allow only ``[/\\w.\\- :]``: ``valid/ndcg@10`` -> ``valid/ndcg_at_10``."""
    return name.replace("@", "_at_")


def flatten_params(params: Params) -> dict[str, str]:
    """Every knob as ``section.key`` (lists of sections as ``section.key.0.field``)."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            flat[f"{prefix}.length"] = str(len(value))
            for i, item in enumerate(value):
                walk(f"{prefix}.{i}", item)
        else:
            flat[prefix] = json.dumps(value) if isinstance(value, list) else str(value)

    walk("", params.model_dump(mode="json"))
    return flat


def numeric_metrics(record: Mapping, skip: Sequence[str] = ()) -> dict[str, float]:
    """The record's numbers as MLflow metrics (booleans as 0/1; strings and ``skip`` dropped)."""
    return {
        metric_key(key): float(value)
        for key, value in record.items()
        if key not in skip and isinstance(value, (int, float))
    }


def _read_json(path: Path, what: str):
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found (run the pipeline up to this stage first)")
    return json.loads(path.read_text(encoding="utf-8"))


def _git(root: Path, *args: str) -> str | None:
    """``git ARGS``' output in ``root``; None without git or outside a checkout."""
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit(root: Path) -> str | None:
    return _git(root, "rev-parse", "HEAD") or None


def code_version(root: Path) -> dict | None:
    """The commit ``root`` is at and whether the library (``idgenrec/``) differs from it; None outside git.

    Benchmarks record it beside their results, so runs with the same params on different library
    code (other arithmetic, other numbers) can be told apart after the fact.
    """
    commit, changes = _git_commit(root), _git(root, "status", "--porcelain", "--", "idgenrec")
    if commit is None or changes is None:
        return None
    return {"commit": commit, "library_modified": bool(changes)}


# -- what is logged ----------------------------------------------------------------------


def interactions_frame(dataset: SequenceDataset) -> pd.DataFrame:
    """The prepared dataset in long form (one row per interaction, with its split)."""
    rows = []
    for user, sequence in zip(dataset.user_ids, dataset.sequences):
        n = len(sequence)
        for position, item in enumerate(sequence):
            split = "test" if position == n - 1 else "valid" if position == n - 2 else "train"
            rows.append((user, dataset.item_ids[item], position, split))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "position", "split"])


def log_dataset(dataset: SequenceDataset, source: str) -> str:
    """Record the prepared dataset as the run's training input; returns its digest."""
    with warnings.catch_warnings():  # MLflow's own noise: a doubly registered source class, int-column hints
        warnings.simplefilter("ignore", UserWarning)
        frame = mlflow.data.from_pandas(interactions_frame(dataset), source=source, name=f"{dataset.name}-prepared")
        mlflow.log_input(frame, context="training")  # the schema is inferred lazily, here
    return frame.digest


def curve_points(records: Sequence[Mapping], curve_key: str) -> list[tuple[int, dict[str, float]]]:
    """(step, metrics) per record, as in metrics/training_curve.json: the recommender's loss, the
    ID phase's loss (a different objective, kept apart) and the validation selection metric."""
    points = []
    for step, record in enumerate(records, start=1):
        loss_name = "id_phase_loss" if record.get("phase") == "ids" else "recommender_loss"
        values = {loss_name: record.get("train_loss"), curve_key: record.get(curve_key)}
        points.append((step, {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}))
    return points


def log_training_curve_plot(records: Sequence[Mapping], curve_key: str, artifact_file: str) -> None:
    """Losses and the validation selection metric per epoch, phase boundaries dashed, as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend
    from matplotlib.ticker import MaxNLocator

    points = curve_points(records, curve_key)
    fig = Figure(figsize=(8, 6))
    loss_ax, metric_ax = fig.subplots(2, 1, sharex=True)
    for ax, key, style in (
        (loss_ax, "recommender_loss", "o-"), (loss_ax, "id_phase_loss", "s"), (metric_ax, curve_key, "o-"),
    ):
        series = [(step, values[key]) for step, values in points if key in values]
        if series:
            ax.plot(*zip(*series), style, label=key.replace("_", " "))
    loss_ax.set_ylabel("train loss")
    loss_ax.legend()
    metric_ax.set_ylabel(curve_key)
    for step, (before, after) in enumerate(zip(records, records[1:]), start=1):
        if before.get("phase_index") != after.get("phase_index"):
            for ax in (loss_ax, metric_ax):
                ax.axvline(step + 0.5, color="grey", linestyle="--", linewidth=0.8)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
    metric_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    metric_ax.set_xlabel("epoch (all phases, in order; dashed: next phase)")
    fig.suptitle("IDGenRec training curve")
    fig.tight_layout()
    mlflow.log_figure(fig, artifact_file)


def _log_phase_runs(params: Params, records: Sequence[Mapping], rounds: Path) -> None:
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


def _log_served_model(model_folder: Path, dataset: SequenceDataset, num_items: int) -> str:
    """Log the model folder as the run's pyfunc, with real histories as its input example; its URI."""
    from idgenrec.serving import log_recommender_model

    histories = [h for h in (dataset.train_sequence(u)[-5:] for u in range(dataset.num_users)) if h]
    examples = [[dataset.item_ids[i] for i in h] for h in histories[:EXAMPLE_USERS]]
    model_uri = log_recommender_model(model_folder, examples, num_items).model_uri
    mlflow.set_tag("idgenrec.model_uri", model_uri)
    return model_uri


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
    plot); and, with ``log_model``, the selected model as a pyfunc.
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
    model_metrics = _read_json(files.model_metrics, "model metrics")
    selection = selection_key("valid", params.evaluation.exclude_seen, params.evaluation.selection_metric)
    experiment_id = ensure_experiment(params.data.name, root)
    run_tags = {
        "idgenrec.dataset": params.data.name,
        "idgenrec.params_fingerprint": params_fingerprint(params),
        "idgenrec.ids_kind": params.ids.kind,
        "idgenrec.backbone": params.backbone.profile,
        # training.bf16 is a request: hosts without bf16 kernels train in fp32. This is the logging
        # host's answer, which in `dvc repro` is the host that trained (the stages run together).
        "idgenrec.precision": training_precision(pick_device(), params.training.bf16),
        **({"git_commit": commit} if (commit := _git_commit(root)) else {}),
        **dict(tags or {}),
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        mlflow.log_params(flatten_params(params))
        digest = log_dataset(dataset, source=str(files.prepared))
        mlflow.set_tag("idgenrec.dataset_digest", digest)

        _log_phase_runs(params, state.records, files.rounds)
        curve_key = f"valid_{params.evaluation.selection_metric}"
        for step, values in curve_points(state.records, curve_key):  # the `dvc plots` curve
            mlflow.log_metrics({f"curve/{metric_key(k)}": v for k, v in values.items()}, step=step)
        mlflow.log_metrics({
            "best/score": state.best_score, "best/phase": float(state.best_phase or 0),
            "best/epoch": float(state.best_epoch or 0), "phases_completed": float(state.completed_phases),
        })
        mlflow.log_metrics({metric_key(k): float(v) for k, v in model_metrics.items()})
        popularity = popularity_metrics(dataset, params.evaluation)[selection]  # the registry's floor
        mlflow.log_metric(f"popularity/{metric_key(selection)}", popularity)
        for path, prefix in ((files.warmup_metrics, "warmup"), (files.ids_metrics, "ids")):
            if path.exists():
                mlflow.log_metrics({f"{prefix}/{k}": v for k, v in numeric_metrics(_read_json(path, prefix)).items()})

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

        model_uri = _log_served_model(files.model, dataset, dataset.num_items) if log_model else None
        return LoggedRun(
            run_id=run.info.run_id,
            experiment_id=experiment_id,
            model_uri=model_uri,
            selection_metric=selection,
            selection_score=model_metrics.get(selection),
            dataset_digest=digest,
            popularity_score=popularity,
        )


def log_model_folder(
    params: Params,
    model_folder: str | Path,
    prepared: str | Path,
    *,
    root: str | Path,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    grown_from: str | None = None,
    new_items_digest: str | None = None,
) -> LoggedRun:
    """Score a saved model folder on a prepared dataset and log it, with its pyfunc, as one run.

    For models the pipeline did not train itself, above all one grown by ``idgenrec
    add-items``: its validation/test metrics come from the same :func:`evaluate_protocol` as
    the ``evaluate`` stage, on the same users, so its selection score is comparable with a
    pipeline version's and the registry's promotion rule applies unchanged. Items the model
    knows beyond the dataset's (new items, no interactions yet) are counted in a tag; they
    can be recommended, not scored.
    """
    from idgenrec.evaluation import evaluate_protocol
    from idgenrec.baselines.popularity import popularity_metrics
    from idgenrec.backbone import pick_device
    from idgenrec.recommender.model import ID_TABLE, IDGenRecModel

    root, model_folder, prepared = Path(root).resolve(), Path(model_folder).resolve(), Path(prepared).resolve()
    dataset = SequenceDataset.load(prepared)
    model = IDGenRecModel.load(model_folder, device=pick_device())
    try:
        scored = model.for_catalogue(dataset.item_ids)
    except ValueError as err:
        raise ValueError(f"{model_folder} cannot be scored on {prepared}: {err}") from None
    selection = selection_key("valid", params.evaluation.exclude_seen, params.evaluation.selection_metric)
    metrics = evaluate_protocol(scored, dataset, params.evaluation.ks, params.evaluation.sample_users)
    popularity = popularity_metrics(dataset, params.evaluation)[selection]
    experiment_id = ensure_experiment(params.data.name, root)
    run_tags = {
        "idgenrec.dataset": params.data.name,
        "idgenrec.source": "model folder",
        "idgenrec.model_folder": str(model_folder),
        "idgenrec.items": str(len(model.id_table)),
        "idgenrec.items_without_interactions": str(len(model.id_table) - dataset.num_items),
        **({"idgenrec.grown_from": str(grown_from)} if grown_from is not None else {}),
        **({"idgenrec.new_items_digest": new_items_digest} if new_items_digest is not None else {}),
        **({"git_commit": commit} if (commit := _git_commit(root)) else {}),
        **dict(tags or {}),
    }
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run:
        # Only the settings that produced these numbers: params.yaml need not describe how the folder was trained.
        mlflow.log_params({k: v for k, v in flatten_params(params).items() if k.startswith(("evaluation.", "data."))})
        digest = log_dataset(dataset, source=str(prepared))
        mlflow.set_tag("idgenrec.dataset_digest", digest)
        mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()})
        mlflow.log_metric(f"popularity/{metric_key(selection)}", popularity)
        mlflow.log_artifact(str(model_folder / ID_TABLE), "ids")
        model_uri = _log_served_model(model_folder, dataset, len(model.id_table))
        return LoggedRun(
            run_id=run.info.run_id,
            experiment_id=experiment_id,
            model_uri=model_uri,
            selection_metric=selection,
            selection_score=metrics[selection],
            dataset_digest=digest,
            popularity_score=popularity,
            grown_from=str(grown_from) if grown_from is not None else None,
            new_items_digest=new_items_digest,
        )
