"""What every logged run shares: its record, the dataset as its input, the model as its pyfunc."""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from idgenrec.data.dataset import SequenceDataset
from idgenrec.provenance import git_commit

EXAMPLE_USERS = 2  # histories in the registered model's input example


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


def read_json(path: Path, what: str):
    if not path.exists():
        raise FileNotFoundError(f"{path}: {what} not found (run the pipeline up to this stage first)")
    return json.loads(path.read_text(encoding="utf-8"))


def run_tags(dataset_name: str, root: Path, tags: Mapping[str, str], extra: Mapping[str, str] | None) -> dict[str, str]:
    """The dataset, ``tags``, the commit ``root`` is at (if in git), then the caller's ``extra`` tags."""
    commit = git_commit(root)
    return {"idgenrec.dataset": dataset_name, **tags, **({"git_commit": commit} if commit else {}), **dict(extra or {})}


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


def log_served_model(model_folder: Path, dataset: SequenceDataset, num_items: int) -> str:
    """Log the model folder as the run's pyfunc, with real histories as its input example; its URI."""
    from idgenrec.serving import log_recommender_model

    histories = [h for h in (dataset.train_sequence(u)[-5:] for u in range(dataset.num_users)) if h]
    examples = [[dataset.item_ids[i] for i in h] for h in histories[:EXAMPLE_USERS]]
    model_uri = log_recommender_model(model_folder, examples, num_items).model_uri
    mlflow.set_tag("idgenrec.model_uri", model_uri)
    return model_uri
