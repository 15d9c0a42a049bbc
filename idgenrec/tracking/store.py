"""The MLflow store: where runs and registered models are kept, and one experiment per dataset.

Nothing here runs at import. Entry points (the CLI, the Prefect flows, tests) call
:func:`configure_tracking` with the project root; the store is then
``sqlite:///<root>/mlruns/mlflow.db`` with artifacts under ``<root>/mlruns/`` (absolute, so
any working directory works), unless ``IDGENREC_TRACKING_URI`` names a shared tracking server.
(Not ``MLFLOW_TRACKING_URI``: ``mlflow.set_tracking_uri`` exports that itself, so it cannot
tell a user's choice from an earlier configuration in the same process.)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
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
        check_store(Path(uri.removeprefix("sqlite:///")))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


class DamagedStoreError(RuntimeError):
    """The sqlite store cannot be read as a database: MLflow would fail later without naming it."""


def check_store(path: Path) -> None:
    """Refuse a damaged sqlite store (truncated, overwritten) with its path; a missing or empty file
    is a new store, and a store another process is writing is left to MLflow's own waiting."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    advice = "restore it from a backup, or move it aside and the next command starts an empty store"
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as db:
            result = db.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.OperationalError as err:
        if "locked" in str(err) or "busy" in str(err):
            return
        raise DamagedStoreError(f"{path}: damaged MLflow store ({err}); {advice}") from None
    except sqlite3.DatabaseError as err:
        raise DamagedStoreError(f"{path}: damaged MLflow store ({err}); {advice}") from None
    if result != [("ok",)]:
        raise DamagedStoreError(f"{path}: damaged MLflow store (integrity check: {result[0][0][:200]}); {advice}")


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
