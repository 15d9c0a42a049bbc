"""SASRec as a :class:`idgenrec.evaluation.Recommender`: scores every catalogue item after a history."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import torch

from idgenrec.baselines.sasrec import storage, training
from idgenrec.baselines.sasrec.network import PAD, SASRecNetwork
from idgenrec.baselines.sasrec.training import TrainingLog
from idgenrec.config import SASRecConfig
from idgenrec.data.dataset import SequenceDataset


class SASRecRecommender:
    """Implements :class:`idgenrec.evaluation.Recommender`; trained by :meth:`fit`."""

    def __init__(self, network: SASRecNetwork, config: SASRecConfig, num_items: int, device: torch.device):
        self.network = network.to(device)
        self.config = config
        self.num_items = num_items
        self.device = device
        self.log = TrainingLog()

    def _user_states(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B, H) state after reading each history's last ``max_history`` items."""
        length = self.config.max_history
        tokens = torch.full((len(histories), length), PAD, dtype=torch.long)
        last = torch.zeros(len(histories), dtype=torch.long)
        for row, history in enumerate(histories):
            recent = list(history)[-length:]
            if recent:
                tokens[row, : len(recent)] = torch.as_tensor(recent, dtype=torch.long) + 1
                last[row] = len(recent) - 1
        hidden = self.network(tokens.to(self.device))  # (B, T, H)
        return hidden[torch.arange(len(histories), device=self.device), last.to(self.device)]

    def score(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B, num_items) logits of every catalogue item for each history (one batch, eval mode)."""
        for history in histories:
            bad = [i for i in history if not 0 <= i < self.num_items]
            if bad:
                raise ValueError(f"history holds item indices {bad[:5]} outside 0..{self.num_items - 1}")
        self.network.eval()
        with torch.no_grad():
            return self.network.item_scores(self._user_states(histories))

    def recommend(
        self,
        histories: Sequence[Sequence[int]],
        k: int,
        exclude_seen: bool = False,
        candidates: Collection[int] | None = None,
    ) -> list[list[int]]:
        outside = None
        if candidates is not None:
            outside = torch.ones(self.num_items, dtype=torch.bool, device=self.device)
            outside[torch.as_tensor(sorted(candidates), dtype=torch.long, device=self.device)] = False
        kept = None if candidates is None else set(candidates)
        allowed = self.num_items if kept is None else len(kept)
        k = min(k, allowed)
        results: list[list[int]] = []
        batch = self.config.eval_batch_size
        for begin in range(0, len(histories), batch):
            chunk = histories[begin : begin + batch]
            scores = self.score(chunk)
            if outside is not None:
                scores[:, outside] = -math.inf
            if exclude_seen:
                rows = [row for row, history in enumerate(chunk) for _ in history]
                cols = [item for history in chunk for item in history]
                scores[rows, cols] = -math.inf
            top = scores.topk(k, dim=1).indices.cpu().tolist()
            if exclude_seen:  # a history covering most of the catalogue leaves fewer than k items
                top = [row[: allowed - len(set(history) if kept is None else set(history) & kept)]
                       for row, history in zip(top, chunk)]
            results.extend(top)
        return results

    @classmethod
    def fit(
        cls,
        dataset: SequenceDataset,
        config: SASRecConfig,
        ks: Sequence[int] = (5, 10),
        selection_metric: str = "ndcg@10",
        exclude_seen: bool = False,
        progress: bool = True,
    ) -> "SASRecRecommender":
        """See :func:`idgenrec.baselines.sasrec.training.fit`."""
        return training.fit(dataset, config, ks, selection_metric, exclude_seen, progress)

    def _train_epoch(
        self, train: list[list[int]], optimizer: torch.optim.Optimizer, rng: np.random.Generator, epoch: int, progress: bool
    ) -> float:
        return training.train_epoch(self, train, optimizer, rng, epoch, progress)

    def save(self, folder: str | Path) -> None:
        storage.save(self, folder)

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> "SASRecRecommender":
        """Rebuild a saved model; errors name the file that is missing or corrupt."""
        return storage.load(folder, device)
