"""The evaluation protocol: leave-one-out, full-catalogue ranking, Recall@k and NDCG@k.

One held-out target per user, so Recall@k equals Hit@k and NDCG@k is
``1 / log2(rank + 2)`` when the target is at 0-based ``rank < k``, else 0. With nothing
excluded, ``seen@k`` is the share of the top-k the user already interacted with: on data
without repeat interactions (ML-100k) every such slot is wasted, and it is what separates
a model's two seen-item settings. ``coverage@k`` is the share of the catalogue that appears
in at least one user's top-k: a model that recommends nearly the same items to everyone (a
collapsed run, which learned the catalogue's popularity and never read the history) shows it
there plainly, where its accuracy only looks like the popularity baseline's.
Every model is evaluated through :func:`evaluate` via the :class:`Recommender` contract.

Several datasets combined into one (``data.combine_with``): each user ranks its own dataset's
catalogue (a Beauty shopper is not offered a film), every metric is reported per dataset
(``beauty/ndcg@10``) and over all users together (``ndcg@10``, each user counted once).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Protocol

from idgenrec.data.dataset import SequenceDataset, Split


class Recommender(Protocol):
    """What every model (baselines, IDGenRec with any backbone or ID kind) provides."""

    def recommend(
        self,
        histories: Sequence[Sequence[int]],
        k: int,
        exclude_seen: bool = False,
        candidates: Collection[int] | None = None,
    ) -> list[list[int]]:
        """Top-``k`` item indices per history, best first (fewer if the model has fewer).

        With ``exclude_seen`` the items of each history are never recommended; with
        ``candidates`` only those items are.
        """
        ...


def target_ranks(ranked: Sequence[Sequence[int]], targets: Sequence[int]) -> list[int | None]:
    """0-based position of each target in its ranked list, ``None`` when absent."""
    if len(ranked) != len(targets):
        raise ValueError(f"{len(ranked)} ranked lists for {len(targets)} targets")
    ranks: list[int | None] = []
    for items, target in zip(ranked, targets):
        try:
            ranks.append(list(items).index(target))
        except ValueError:
            ranks.append(None)
    return ranks


def ranking_metrics(ranks: Sequence[int | None], ks: Sequence[int]) -> dict[str, float]:
    """Mean Recall@k and NDCG@k over users, from the targets' 0-based ranks."""
    if not ranks:
        raise ValueError("no users to evaluate")
    metrics: dict[str, float] = {}
    for k in ks:
        hits = [r for r in ranks if r is not None and r < k]
        metrics[f"recall@{k}"] = len(hits) / len(ranks)
        metrics[f"ndcg@{k}"] = sum(1.0 / math.log2(r + 2) for r in hits) / len(ranks)
    return metrics


def seen_shares(ranked: Sequence[Sequence[int]], histories: Sequence[Sequence[int]], ks: Sequence[int]) -> dict[str, float]:
    """``seen@k``: mean share of each top-k list that is already in the user's history."""
    if len(ranked) != len(histories):
        raise ValueError(f"{len(ranked)} ranked lists for {len(histories)} histories")
    if not ranked:
        raise ValueError("no users to evaluate")
    seen = [set(history) for history in histories]
    return {
        f"seen@{k}": sum(sum(item in s for item in items[:k]) / k for items, s in zip(ranked, seen)) / len(ranked)
        for k in ks
    }


def catalogue_coverage(ranked: Sequence[Sequence[int]], num_items: int, ks: Sequence[int]) -> dict[str, float]:
    """``coverage@k``: share of the ``num_items`` catalogue in at least one top-k list."""
    if num_items <= 0:
        raise ValueError(f"catalogue of {num_items} items")
    if not ranked:
        raise ValueError("no users to evaluate")
    return {f"coverage@{k}": len({item for items in ranked for item in items[:k]}) / num_items for k in ks}


def evaluate(
    model: Recommender,
    dataset: SequenceDataset,
    split: Split,
    ks: Sequence[int] = (5, 10),
    exclude_seen: bool = False,
) -> dict[str, float]:
    """Rank the full catalogue for every user's held-out ``split`` item and score it.

    The result carries :func:`catalogue_coverage` (``coverage@k``), and with nothing excluded
    also :func:`seen_shares` (``seen@k``). A combined dataset adds each dataset's metrics, keyed
    ``name/metric``; its users rank their own dataset's items only.
    """
    histories, targets = dataset.split_examples(split)
    parts = dataset.parts()
    if not parts:
        return _scores(_ranked(model, histories, max(ks), exclude_seen), histories, targets, dataset.num_items, ks, exclude_seen)
    ranked: list[list[int]] = [[] for _ in histories]
    by_dataset: dict[str, float] = {}
    for part in parts:
        part_histories = [histories[u] for u in part.users]
        part_ranked = _ranked(model, part_histories, max(ks), exclude_seen, candidates=part.items) if part.users else []
        for user, items in zip(part.users, part_ranked):
            ranked[user] = items
        if part.users:
            scores = _scores(part_ranked, part_histories, [targets[u] for u in part.users], len(part.items), ks, exclude_seen)
            by_dataset.update({f"{part.name}/{name}": value for name, value in scores.items()})
    return {**_scores(ranked, histories, targets, dataset.num_items, ks, exclude_seen), **by_dataset}


def _ranked(
    model: Recommender,
    histories: Sequence[Sequence[int]],
    k: int,
    exclude_seen: bool,
    candidates: Collection[int] | None = None,
) -> list[list[int]]:
    """Every history's top-``k``; several training processes each rank their share of the users."""
    from idgenrec import distributed  # torch: not imported by the popularity baseline's path until here

    ranks = distributed.current()
    share = ranks.share(len(histories))
    restricted = {} if candidates is None else {"candidates": candidates}
    part = model.recommend(histories[share], k=k, exclude_seen=exclude_seen, **restricted) if share.start < share.stop else []
    return ranks.gather(part)


def _scores(
    ranked: Sequence[Sequence[int]],
    histories: Sequence[Sequence[int]],
    targets: Sequence[int],
    num_items: int,
    ks: Sequence[int],
    exclude_seen: bool,
) -> dict[str, float]:
    metrics = ranking_metrics(target_ranks(ranked, targets), ks)
    metrics.update(catalogue_coverage(ranked, num_items, ks))
    if not exclude_seen:
        metrics.update(seen_shares(ranked, histories, ks))
    return metrics


def exclusion_setting(exclude_seen: bool) -> str:
    return "seen_excluded" if exclude_seen else "seen_included"


def evaluate_protocol(
    model: Recommender, dataset: SequenceDataset, ks: Sequence[int], sample_users: int | None = None
) -> dict[str, float]:
    """Validation and test metrics under both seen-item settings, as the protocol reports them.

    Keys look like ``test/seen_included/ndcg@10``; every model (baselines included) is
    reported with this one layout so `dvc metrics show` lines them up. ``sample_users``
    scores a fixed subset of users, the same for every model (``evaluation.sample_users``).
    """
    dataset = dataset.sample_users(sample_users, seed=0)
    results: dict[str, float] = {}
    for split in ("valid", "test"):
        for exclude_seen in (False, True):
            for name, value in evaluate(model, dataset, split, ks, exclude_seen).items():
                results[selection_key(split, exclude_seen, name)] = round(value, 6)
    return results


def selection_key(split: str, exclude_seen: bool, metric: str) -> str:
    """Key of ``metric`` in :func:`evaluate_protocol`'s results, e.g. ``valid/seen_included/ndcg@10``."""
    return f"{split}/{exclusion_setting(exclude_seen)}/{metric}"
