"""Most-popular baseline: ranks items by their interaction count in the training inputs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from idgenrec.data.dataset import SequenceDataset


class PopularityRecommender:
    def __init__(self, counts: np.ndarray):
        self.counts = counts  # (num_items,) training interaction counts
        # Stable sort on the negated counts: ties keep item-index order, so runs repeat.
        self.order = np.argsort(-counts, kind="stable")

    @classmethod
    def fit(cls, dataset: SequenceDataset, split: str = "test") -> "PopularityRecommender":
        """Count interactions in what the model may see when predicting ``split``.

        For test the validation item is part of the input, so it is counted too, exactly
        as a sequential model sees it in its input.
        """
        counts = Counter()
        for sequence in dataset.sequences:
            counts.update(sequence[:-1] if split == "test" else sequence[:-2])
        array = np.zeros(dataset.num_items, dtype=np.int64)
        for item, count in counts.items():
            array[item] = count
        return cls(array)

    def recommend(
        self, histories: Sequence[Sequence[int]], k: int, exclude_seen: bool = False
    ) -> list[list[int]]:
        top = self.order[: k + (max(map(len, histories), default=0) if exclude_seen else 0)]
        if not exclude_seen:
            return [top[:k].tolist() for _ in histories]
        results = []
        for history in histories:
            seen = set(history)
            results.append([int(i) for i in top if i not in seen][:k])
        return results
