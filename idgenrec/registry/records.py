"""The pipeline's register step and its record: log a run, register its model, apply the rule.

``metrics/registry.json`` (:func:`registry_record`) names the run, the version and the decision.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import mlflow

from idgenrec.registry.promotion import PromotionDecision, promote
from idgenrec.registry.versions import registered_model_name, register_version

if TYPE_CHECKING:
    from idgenrec.config import Params
    from idgenrec.layout import PipelineFiles
    from idgenrec.tracking import LoggedRun


def register_logged_run(logged: "LoggedRun", dataset_name: str) -> str:
    """Register a logged run's model as the next version of ``idgenrec-<dataset>``."""
    if logged.model_uri is None:
        raise ValueError(f"run {logged.run_id} logged no model to register")
    return register_version(
        logged.model_uri,
        registered_model_name(dataset_name),
        run_id=logged.run_id,
        selection_metric=logged.selection_metric,
        selection_score=logged.selection_score,
        dataset_digest=logged.dataset_digest,
        popularity_score=logged.popularity_score,
        grown_from=logged.grown_from,
        new_items_digest=logged.new_items_digest,
    )


def registry_record(
    logged: "LoggedRun", model_name: str, version: str | None, decision: PromotionDecision | None
) -> dict:
    """What ``metrics/registry.json`` holds: the run, the version and the promotion decision."""
    return {
        "run_id": logged.run_id,
        "experiment": mlflow.get_experiment(logged.experiment_id).name,
        "tracking_uri": mlflow.get_tracking_uri(),
        "model_name": model_name,
        "model_version": version,
        "selection_metric": logged.selection_metric,
        "selection_score": logged.selection_score,
        "promotion": decision.as_dict() if decision else None,
        **({"grown_from": logged.grown_from} if logged.grown_from is not None else {}),
    }


def record_pipeline_run(
    params: "Params",
    files: "PipelineFiles",
    *,
    root: str | Path,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    register_model: bool = True,
    promote_model: bool = True,
) -> dict:
    """Log the run, register its model (alias challenger), apply the promotion rule; the record."""
    from idgenrec.tracking.pipeline_run import log_pipeline_run

    logged = log_pipeline_run(params, files, root=root, run_name=run_name, tags=tags, log_model=register_model)
    return _register_and_promote(logged, params, register_model, promote_model)


def record_model_folder(
    params: "Params",
    model_folder: str | Path,
    prepared: str | Path,
    *,
    root: str | Path,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    promote_model: bool = True,
    grown_from: str | None = None,
    new_items_digest: str | None = None,
) -> dict:
    """Score and log a saved model folder (e.g. from ``idgenrec add-items``), register it, apply the rule.

    ``grown_from``: the registered version the folder was grown from; while that version is the
    champion, the rule asks the grown one to keep its score within the margin, not to beat it.
    """
    from idgenrec.tracking.model_folder import log_model_folder

    logged = log_model_folder(
        params, model_folder, prepared, root=root, run_name=run_name, tags=tags, grown_from=grown_from,
        new_items_digest=new_items_digest,
    )
    return _register_and_promote(logged, params, True, promote_model)


def _register_and_promote(logged: "LoggedRun", params: "Params", register_model: bool, promote_model: bool) -> dict:
    name = registered_model_name(params.data.label)
    version = register_logged_run(logged, params.data.label) if register_model else None
    decision = promote(name, params.registry.margin, version) if version and promote_model else None
    return registry_record(logged, name, version, decision)
