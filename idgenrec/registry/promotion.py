"""The promotion rule: ``champion`` moves to a version only when it wins, and the decision is kept.

:func:`promote` moves ``champion`` to a version when its score beats popularity's and the
champion's by more than ``registry.margin`` (or when forced), and records the decision and its
reason on the version either way; the version that loses the alias is remembered (tag
``previous_champion``) so :func:`rollback` can restore it. A version grown from the champion by
add-items (nothing trained) only has to keep the champion's score within the margin.
"""

from __future__ import annotations

import contextlib
import getpass
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from idgenrec.locking import file_lock
from idgenrec.registry.versions import (
    CHALLENGER,
    CHAMPION,
    DECISION_TAG,
    DIGEST_TAG,
    GROWN_FROM_TAG,
    METRIC_TAG,
    POPULARITY_TAG,
    PREVIOUS_TAG,
    REASON_TAG,
    SCORE_TAG,
    RegistryError,
    version_with_alias,
    tag_score,
    existing_version,
)

ALIAS_LOCK_WAIT_S = 60.0  # a promotion takes well under a second; waiting beats refusing here


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


def _record(client: MlflowClient, name: str, version: str, decision: str, reason: str) -> None:
    client.set_model_version_tag(name, version, DECISION_TAG, decision)
    client.set_model_version_tag(name, version, REASON_TAG, reason)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    client.update_model_version(name, version, description=f"{stamp} {decision}: {reason}")


def _judge(candidate: ModelVersion, champion: ModelVersion | None, margin: float) -> tuple[bool, str]:
    """The promotion rule: strictly better than popularity, and than champion + margin, on the same metric."""
    metric, score, floor = candidate.tags.get(METRIC_TAG), tag_score(candidate), tag_score(candidate, POPULARITY_TAG)
    if score is not None and floor is not None and score <= floor:
        return False, (
            f"{metric} {score:.4f} does not beat the popularity baseline's {floor:.4f} on the same users "
            "(promote with --force)"
        )
    if champion is None:
        return True, "no champion yet"
    champion_metric, champion_score = champion.tags.get(METRIC_TAG), tag_score(champion)
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


@contextlib.contextmanager
def alias_lock(holder: str):
    """Serialise read-judge-move of the aliases between processes on the local sqlite store: two
    promotions at once would both judge against the same champion and the later one would record
    it as the version it replaced, so a rollback would skip the other. (A tracking server's
    clients cannot share a file lock; there, promote from one place.)"""
    uri = mlflow.get_registry_uri() or ""
    if not uri.startswith("sqlite:///"):
        yield
        return
    store = Path(uri.removeprefix("sqlite:///"))
    with file_lock(store.with_name(f".{store.name}.aliases.lock"), holder, wait_s=ALIAS_LOCK_WAIT_S):
        yield


def promote(name: str, margin: float, version: str | int | None = None, force: bool = False) -> PromotionDecision:
    """Move ``champion`` to ``version`` (default: the ``challenger``) if it wins; record why either way."""
    with alias_lock(f"a promotion of {name}"):
        return _promote(name, margin, version, force)


def _promote(name: str, margin: float, version: str | int | None, force: bool) -> PromotionDecision:
    client = MlflowClient()
    if version is None:
        candidate = version_with_alias(client, name, CHALLENGER)
        if candidate is None:
            raise RegistryError(f"model {name!r} has no {CHALLENGER!r} version to promote (register one, or pass --version)")
    else:
        candidate = existing_version(client, name, version)
    champion = version_with_alias(client, name, CHAMPION)
    version = str(candidate.version)
    before = str(champion.version) if champion else None
    scores = {"challenger_score": tag_score(candidate), "champion_score": tag_score(champion) if champion else None}
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
    with alias_lock(f"a rollback of {name}"):
        return _rollback(name)


def _rollback(name: str) -> PromotionDecision:
    client = MlflowClient()
    champion = version_with_alias(client, name, CHAMPION)
    if champion is None:
        raise RegistryError(f"model {name!r} has no champion to roll back")
    previous = champion.tags.get(PREVIOUS_TAG)
    if not previous:
        raise RegistryError(f"champion v{champion.version} of {name!r} replaced no earlier champion; nothing to roll back to")
    target = existing_version(client, name, previous)
    client.set_registered_model_alias(name, CHAMPION, str(target.version))
    reason = f"rolled back by {getpass.getuser()} to v{target.version}"
    _record(client, name, str(champion.version), "rolled_back", reason)
    return PromotionDecision(
        name, str(target.version), True, reason, str(target.version), str(champion.version),
        challenger_score=tag_score(target), champion_score=tag_score(champion),
    )
