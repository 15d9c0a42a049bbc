"""Model registry: versions of ``idgenrec-<dataset>``, aliases ``challenger`` and ``champion``.

Every registered version gets alias ``challenger`` (the latest candidate) and tags with the
validation score it was selected on and the popularity baseline's score on the same users.
:func:`promote` moves ``champion`` to it only when that score beats popularity's and the
champion's by more than ``registry.margin`` (or when forced), and
records the decision and its reason on the version either way; the version that loses
the alias is remembered (tag ``previous_champion``) so :func:`rollback` can restore it.
Stages are deprecated in MLflow; aliases are the mechanism.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

if TYPE_CHECKING:
    from idgenrec.config import Params
    from idgenrec.recommender.new_items import NewItems
    from idgenrec.tracking import LoggedRun, PipelineFiles

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
class PromotionDecision:
    model: str
    version: str
    promoted: bool
    reason: str
    champion: str | None  # the champion version after the decision
    previous_champion: str | None  # the champion version before it
    challenger_score: float | None = None
    champion_score: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


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


def _score(version: ModelVersion, tag: str = SCORE_TAG) -> float | None:
    value = version.tags.get(tag)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _alias_version(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
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


def _record(client: MlflowClient, name: str, version: str, decision: str, reason: str) -> None:
    client.set_model_version_tag(name, version, DECISION_TAG, decision)
    client.set_model_version_tag(name, version, REASON_TAG, reason)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    client.update_model_version(name, version, description=f"{stamp} {decision}: {reason}")


def _judge(candidate: ModelVersion, champion: ModelVersion | None, margin: float) -> tuple[bool, str]:
    """The promotion rule: strictly better than popularity, and than champion + margin, on the same metric."""
    metric, score, floor = candidate.tags.get(METRIC_TAG), _score(candidate), _score(candidate, POPULARITY_TAG)
    if score is not None and floor is not None and score <= floor:
        return False, (
            f"{metric} {score:.4f} does not beat the popularity baseline's {floor:.4f} on the same users "
            "(promote with --force)"
        )
    if champion is None:
        return True, "no champion yet"
    champion_metric, champion_score = champion.tags.get(METRIC_TAG), _score(champion)
    if score is None:
        return False, f"version {candidate.version} has no {SCORE_TAG} tag to compare (promote with --force)"
    if champion_score is None or champion_metric != metric:
        return False, (
            f"champion v{champion.version} was scored on {champion_metric!r}={champion_score}, "
            f"not comparable with {metric!r}; promote with --force"
        )
    note = ""
    if candidate.tags.get(DIGEST_TAG) != champion.tags.get(DIGEST_TAG):
        note = " (note: scored on a different dataset version than the champion)"
    if candidate.tags.get(GROWN_FROM_TAG) == str(champion.version):
        # The champion plus new items: nothing was trained, so it cannot beat its parent on the old
        # items; what must hold is that adding the items did not cost more than the margin there.
        if score >= champion_score - margin:
            return True, (
                f"grown from champion v{champion.version} by add-items: {metric} {score:.4f} keeps its "
                f"{champion_score:.4f} within margin {margin}{note}"
            )
        return False, (
            f"grown from champion v{champion.version} by add-items, but {metric} {score:.4f} fell below its "
            f"{champion_score:.4f} by more than margin {margin} (needs >= {champion_score - margin:.4f}){note}"
        )
    if score > champion_score + margin:
        return True, f"{metric} {score:.4f} beats champion v{champion.version}'s {champion_score:.4f} by more than margin {margin}{note}"
    return False, (
        f"{metric} {score:.4f} does not beat champion v{champion.version}'s {champion_score:.4f} "
        f"by more than margin {margin} (needs > {champion_score + margin:.4f}){note}"
    )


def promote(name: str, margin: float, version: str | int | None = None, force: bool = False) -> PromotionDecision:
    """Move ``champion`` to ``version`` (default: the ``challenger``) if it wins; record why either way."""
    client = MlflowClient()
    if version is None:
        candidate = _alias_version(client, name, CHALLENGER)
        if candidate is None:
            raise RegistryError(f"model {name!r} has no {CHALLENGER!r} version to promote (register one, or pass --version)")
    else:
        candidate = _version(client, name, version)
    champion = _alias_version(client, name, CHAMPION)
    version = str(candidate.version)
    before = str(champion.version) if champion else None
    scores = {"challenger_score": _score(candidate), "champion_score": _score(champion) if champion else None}
    if before == version:
        return PromotionDecision(name, version, False, f"v{version} is already the champion", before, before, **scores)
    if force:
        promoted, reason = True, f"forced by {getpass.getuser()}"
    else:
        promoted, reason = _judge(candidate, champion, margin)
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
        if before is not None:
            client.set_model_version_tag(name, version, PREVIOUS_TAG, before)
    _record(client, name, version, "promoted" if promoted else "rejected", reason)
    return PromotionDecision(name, version, promoted, reason, version if promoted else before, before, **scores)


def rollback(name: str) -> PromotionDecision:
    """Give ``champion`` back to the version it was taken from."""
    client = MlflowClient()
    champion = _alias_version(client, name, CHAMPION)
    if champion is None:
        raise RegistryError(f"model {name!r} has no champion to roll back")
    previous = champion.tags.get(PREVIOUS_TAG)
    if not previous:
        raise RegistryError(f"champion v{champion.version} of {name!r} replaced no earlier champion; nothing to roll back to")
    target = _version(client, name, previous)
    client.set_registered_model_alias(name, CHAMPION, str(target.version))
    reason = f"rolled back by {getpass.getuser()} to v{target.version}"
    _record(client, name, str(champion.version), "rolled_back", reason)
    return PromotionDecision(
        name, str(target.version), True, reason, str(target.version), str(champion.version),
        challenger_score=_score(target), champion_score=_score(champion),
    )


def champion_model(name: str):
    """(version, IDGenRecModel) of the current champion, loaded from the registry."""
    champion = _alias_version(MlflowClient(), name, CHAMPION)
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
            selection_score=_score(v),
            popularity_score=_score(v, POPULARITY_TAG),
            decision=v.tags.get(DECISION_TAG),
            reason=v.tags.get(REASON_TAG),
            run_id=v.run_id,
            created=time.strftime("%Y-%m-%d %H:%M", time.localtime(v.creation_timestamp / 1000)),
        )
        for v in sorted(versions, key=lambda v: int(v.version), reverse=True)
    ]


# -- the pipeline's register step (DVC stage `register` and the Prefect flow) -------------


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
    root,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    register_model: bool = True,
    promote_model: bool = True,
) -> dict:
    """Log the run, register its model (alias challenger), apply the promotion rule; the record."""
    from idgenrec.tracking import log_pipeline_run

    logged = log_pipeline_run(params, files, root=root, run_name=run_name, tags=tags, log_model=register_model)
    return _register_and_promote(logged, params, register_model, promote_model)


def record_model_folder(
    params: "Params",
    model_folder,
    prepared,
    *,
    root,
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
    from idgenrec.tracking import log_model_folder

    logged = log_model_folder(
        params, model_folder, prepared, root=root, run_name=run_name, tags=tags, grown_from=grown_from,
        new_items_digest=new_items_digest,
    )
    return _register_and_promote(logged, params, True, promote_model)


def grow_champion(
    params: "Params",
    items,
    output,
    prepared,
    *,
    root,
    kind: str | None = None,
    own_tokens: bool = True,
    promote_model: bool = True,
    tags: dict[str, str] | None = None,
) -> tuple[dict, dict]:
    """New items into the served model without training: the champion plus ``items``
    (:class:`~idgenrec.recommender.new_items.NewItems`), saved to ``output``, scored, registered
    (tag ``grown_from``) and judged by the rule for grown models. Returns (record, add_items stats)."""
    from idgenrec.recommender.new_items import add_items

    name = registered_model_name(params.data.name)
    version, champion = champion_model(name)
    digest, reason_not_to = growth_check(name, version, champion, items)
    if reason_not_to:
        raise ValueError(reason_not_to)
    grown, stats = add_items(champion, items, kind or params.ids.kind, params.ids, own_tokens=own_tokens)
    grown.save(output)
    record = record_model_folder(
        params, output, prepared, root=root, tags=tags, promote_model=promote_model, grown_from=version,
        new_items_digest=digest,
    )
    return record, stats


def new_items_digest(known: Iterable[str], items: "NewItems") -> str | None:
    """Names the items a model lacks: SHA-256 over their sorted (id, text) pairs; None when it has them all."""
    known = set(known)
    fresh = sorted((item, text) for item, text in zip(items.item_ids, items.texts) if item not in known)
    return hashlib.sha256(json.dumps(fresh).encode()).hexdigest()[:16] if fresh else None


def growth_check(name: str, version: str, champion, items: "NewItems") -> tuple[str | None, str | None]:
    """(digest of the items champion ``version`` lacks, why not to grow it: None when it should be).

    Not when there is nothing new, nor when a version was already grown from this champion with
    exactly these items: its decision stands. A rejected one would otherwise be scored and
    registered again by every scheduled run, and a rollback from a grown champion to its parent
    would be undone by the next one.
    """
    digest = new_items_digest(champion.id_table.item_ids, items)
    if digest is None:
        return None, f"every item is already known to champion v{version} of {name}: nothing to add"
    earlier = MlflowClient().search_model_versions(
        f"name = '{name}' and tags.{GROWN_FROM_TAG} = '{version}' and tags.{NEW_ITEMS_TAG} = '{digest}'"
    )
    if earlier:
        first = min(earlier, key=lambda v: int(v.version))
        decision = first.tags.get(DECISION_TAG, "not judged")
        return digest, (
            f"these new items were already added to champion v{version} as v{first.version} "
            f"({decision}: {first.tags.get(REASON_TAG, 'no reason recorded')}); not registered again"
        )
    return digest, None


def _register_and_promote(logged: "LoggedRun", params: "Params", register_model: bool, promote_model: bool) -> dict:
    name = registered_model_name(params.data.name)
    version = register_logged_run(logged, params.data.name) if register_model else None
    decision = promote(name, params.registry.margin, version) if version and promote_model else None
    return registry_record(logged, name, version, decision)
