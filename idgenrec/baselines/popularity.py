"""Most-popular baseline: ranks items by their interaction count in the training inputs."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from idgenrec.config import EvaluationConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import evaluate_protocol


class PopularityRecommender:
    def __init__(self, counts: np.ndarray):
        self.counts = counts  # (num_items,) training interaction counts
        # Stable sort on the negated counts: ties keep item-index order, so runs repeat.
        self.order = np.argsort(-counts, kind="stable")

    @classmethod
    def fit(cls, dataset: SequenceDataset) -> "PopularityRecommender":
        """Count interactions in the training split only (as RecBole's Pop does).

        The validation item is not counted even when predicting test, so the same model
        serves both splits and its numbers compare with RecBole's.
        """
        counts = np.zeros(dataset.num_items, dtype=np.int64)
        for user in range(dataset.num_users):
            np.add.at(counts, dataset.train_sequence(user), 1)
        return cls(counts)

    def recommend(
        self,
        histories: Sequence[Sequence[int]],
        k: int,
        exclude_seen: bool = False,
        candidates: Collection[int] | None = None,
    ) -> list[list[int]]:
        order = self.order if candidates is None else self.order[np.isin(self.order, np.fromiter(candidates, dtype=np.int64))]
        top = order[: k + (max(map(len, histories), default=0) if exclude_seen else 0)]
        if not exclude_seen:
            return [top[:k].tolist() for _ in histories]
        results = []
        for history in histories:
            seen = set(history)
            results.append([int(i) for i in top if i not in seen][:k])
        return results


def popularity_metrics(dataset: SequenceDataset, evaluation: EvaluationConfig) -> dict[str, float]:
    """The popularity baseline under the protocol: the `popularity` stage's metrics and the registry's floor."""
    return evaluate_protocol(PopularityRecommender.fit(dataset), dataset, evaluation.ks, evaluation.sample_users)
