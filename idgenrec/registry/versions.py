"""Registered versions of ``idgenrec-<dataset>``: register, find by alias, list.

Every registered version gets alias ``challenger`` (the latest candidate) and tags with the
validation score it was selected on and the popularity baseline's score on the same users.
Stages are deprecated in MLflow; aliases are the mechanism.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

CHAMPION, CHALLENGER = "champion", "challenger"
# version tags
METRIC_TAG, SCORE_TAG, DIGEST_TAG = "selection_metric", "selection_score", "dataset_digest"
POPULARITY_TAG = "popularity_score"  # the popularity baseline on the same metric and users: the floor
DECISION_TAG, REASON_TAG, PREVIOUS_TAG = "promotion_decision", "promotion_reason", "previous_champion"
GROWN_FROM_TAG = "grown_from"  # the version a model grown by add-items (new items, no training) started from
NEW_ITEMS_TAG = "new_items_digest"  # which items it added: the same items are not tried twice on one champion


class RegistryError(RuntimeError):
    """The registry is missing what an operation needs (no such model, version or alias)."""


@dataclass(frozen=True)
class VersionSummary:
    version: str
    aliases: list[str]
    selection_metric: str | None
    selection_score: float | None
    popularity_score: float | None  # the floor it had to beat (None for versions registered before it)
    decision: str | None
    reason: str | None
    run_id: str | None
    created: str


def registered_model_name(dataset_name: str) -> str:
    return f"idgenrec-{dataset_name}"


def tag_score(version: ModelVersion, tag: str = SCORE_TAG) -> float | None:
    value = version.tags.get(tag)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def version_with_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def existing_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"model {name!r} has no version {version} (see `idgenrec registry list`)") from None


def register_version(
    model_uri: str,
    name: str,
    *,
    run_id: str,
    selection_metric: str,
    selection_score: float | None,
    dataset_digest: str,
    popularity_score: float | None = None,
    grown_from: str | None = None,
    new_items_digest: str | None = None,
) -> str:
    """Register ``model_uri`` as a new version of ``name``, alias it ``challenger``; returns the version."""
    tags = {METRIC_TAG: selection_metric, DIGEST_TAG: dataset_digest, "run_id": run_id}
    for tag, text in ((GROWN_FROM_TAG, grown_from), (NEW_ITEMS_TAG, new_items_digest)):
        if text is not None:
            tags[tag] = str(text)
    for tag, value in ((SCORE_TAG, selection_score), (POPULARITY_TAG, popularity_score)):
        if value is not None:
            tags[tag] = repr(float(value))
    version = mlflow.register_model(model_uri, name, tags=tags).version
    MlflowClient().set_registered_model_alias(name, CHALLENGER, str(version))
    return str(version)


def champion_model(name: str):
    """(version, IDGenRecModel) of the current champion, loaded from the registry."""
    champion = version_with_alias(MlflowClient(), name, CHAMPION)
    if champion is None:
        raise RegistryError(f"model {name!r} has no champion (run the pipeline, or `idgenrec registry promote`)")
    served = mlflow.pyfunc.load_model(f"models:/{name}/{champion.version}")
    return str(champion.version), served.unwrap_python_model().model


def list_versions(name: str) -> list[VersionSummary]:
    """Every version of ``name``, newest first, with aliases, score and the last decision."""
    client = MlflowClient()
    try:
        model = client.get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model {name!r} (run the pipeline's register step first)") from None
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    versions = client.search_model_versions(f"name = '{name}'")
    return [
        VersionSummary(
            version=str(v.version),
            aliases=sorted(aliases.get(str(v.version), [])),
            selection_metric=v.tags.get(METRIC_TAG),
            selection_score=tag_score(v),
            popularity_score=tag_score(v, POPULARITY_TAG),
            decision=v.tags.get(DECISION_TAG),
            reason=v.tags.get(REASON_TAG),
            run_id=v.run_id,
            created=time.strftime("%Y-%m-%d %H:%M", time.localtime(v.creation_timestamp / 1000)),
        )
        for v in sorted(versions, key=lambda v: int(v.version), reverse=True)
    ]
