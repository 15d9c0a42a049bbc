"""A model folder the pipeline did not train (above all one grown by add-items), scored and logged as one run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import mlflow

from idgenrec.config import Params
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import selection_key
from idgenrec.tracking.logged import LoggedRun, log_dataset, log_served_model, run_tags
from idgenrec.tracking.names import flatten_params, metric_key, model_folder_run_name
from idgenrec.tracking.store import ensure_experiment


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
    can be recommended, not scored. The run is named for the model
    (:func:`idgenrec.tracking.names.model_folder_run_name`) unless ``run_name`` says otherwise.
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
    experiment_id = ensure_experiment(params.data.label, root)
    described = {
        "idgenrec.source": "model folder",
        "idgenrec.model_folder": str(model_folder),
        "idgenrec.items": str(len(model.id_table)),
        "idgenrec.items_without_interactions": str(len(model.id_table) - dataset.num_items),
        **({"idgenrec.grown_from": str(grown_from)} if grown_from is not None else {}),
        **({"idgenrec.new_items_digest": new_items_digest} if new_items_digest is not None else {}),
    }
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name or model_folder_run_name(params, model_folder, grown_from),
        tags=run_tags(params.data.label, root, described, tags),
    ) as run:
        # Only the settings that produced these numbers: params.yaml need not describe how the folder was trained.
        mlflow.log_params({k: v for k, v in flatten_params(params).items() if k.startswith(("evaluation.", "data."))})
        digest = log_dataset(dataset, source=str(prepared))
        mlflow.set_tag("idgenrec.dataset_digest", digest)
        mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()})
        mlflow.log_metric(f"popularity/{metric_key(selection)}", popularity)
        mlflow.log_artifact(str(model_folder / ID_TABLE), "ids")
        model_uri = log_served_model(model_folder, dataset, len(model.id_table))
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
