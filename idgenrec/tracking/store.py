"""The MLflow store: where runs and registered models are kept, and one experiment per dataset.

Nothing here runs at import. Entry points (the CLI, the Prefect flows, tests) call
:func:`configure_tracking` with the project root; the store is then
``sqlite:///<root>/mlruns/mlflow.db`` with artifacts under ``<root>/mlruns/`` (absolute, so
any working directory works), unless ``IDGENREC_TRACKING_URI`` names a shared tracking server.
(Not ``MLFLOW_TRACKING_URI``: ``mlflow.set_tracking_uri`` exports that itself, so it cannot
tell a user's choice from an earlier configuration in the same process.)
"""

from __future__ import annotations

import os
from pathlib import Path

import mlflow

STORE_DIR = "mlruns"
STORE_FILE = "mlflow.db"
TRACKING_URI_VARIABLE = "IDGENREC_TRACKING_URI"


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
