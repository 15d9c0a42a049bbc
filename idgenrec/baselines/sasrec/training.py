"""Training SASRec: next-item cross-entropy at every position of a window, the epoch kept on validation.

One deliberate difference from RecBole: RecBole trains on every prefix of a training sequence
as a separate sample (one target per forward pass); here each forward pass over a window of up
to ``max_history`` items predicts the next item at every position, as the SASRec paper does.
Every training target is still predicted once per epoch, at ~50x less compute. The window
boundaries move by a random offset each epoch, so a target is not always seen with the same
(short) left context.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from idgenrec.baselines.sasrec.network import IGNORE, PAD, SASRecNetwork
from idgenrec.config import SASRecConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import evaluate
from idgenrec.optim import adamw
from idgenrec.progress import LOGGER, Progress

if TYPE_CHECKING:
    from idgenrec.baselines.sasrec.recommender import SASRecRecommender


@dataclass
class EpochLog:
    epoch: int
    train_loss: float  # mean cross-entropy per training target
    valid: dict[str, float]
    seconds: float  # training and validation


@dataclass
class TrainingLog:
    epochs: list[EpochLog] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def training_windows(
    sequences: Sequence[Sequence[int]], max_history: int, stride: int, rng: np.random.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut training sequences into windows so every next-item target is predicted exactly once.

    Target ``j`` of a sequence ``s`` is ``s[j]`` predicted from ``s[:j]`` (``j >= 1``). The
    targets are split into consecutive blocks of at most ``stride`` (block boundaries
    shifted by a random offset when ``rng`` is given); each block is predicted by one
    window holding up to ``max_history`` items ending just before its last target, so with
    ``stride < max_history`` every target gets at least ``max_history - stride + 1`` items
    of context (or all of its prefix). Targets of other blocks are set to ``IGNORE``.

    Returns ``inputs`` (W, max_history) item tokens and ``targets`` (W, max_history) item
    indices or ``IGNORE``.
    """
    inputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for sequence in sequences:
        n = len(sequence)
        if n < 2:
            continue
        offset = int(rng.integers(stride)) if rng is not None else 0
        block_ends = sorted({n - 1, *range(n - 1 - offset, 0, -stride)})  # inclusive target indices
        array = np.asarray(sequence, dtype=np.int64)
        previous_end = 0
        for end in block_ends:
            start = max(0, end - max_history)  # window = array[start : end + 1]
            window_inputs = np.full(max_history, PAD, dtype=np.int64)
            window_targets = np.full(max_history, IGNORE, dtype=np.int64)
            length = end - start
            window_inputs[:length] = array[start:end] + 1
            window_targets[:length] = array[start + 1 : end + 1]
            owned_from = previous_end + 1 - (start + 1)  # first position whose target is in this block
            window_targets[: max(owned_from, 0)] = IGNORE
            inputs.append(window_inputs)
            targets.append(window_targets)
            previous_end = end
    if not inputs:
        raise ValueError("no training sequence has two or more items")
    return torch.from_numpy(np.stack(inputs)), torch.from_numpy(np.stack(targets))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("sasrec.device is 'cuda' but torch sees no CUDA device")
    return torch.device(name)


def fit(
    dataset: SequenceDataset,
    config: SASRecConfig,
    ks: Sequence[int] = (5, 10),
    selection_metric: str = "ndcg@10",
    exclude_seen: bool = False,
    progress: bool = True,
) -> "SASRecRecommender":
    """Train on every position of the training sequences; keep the epoch with the best validation metric.

    Stops after ``config.patience`` epochs without improvement or ``config.max_epochs``.
    The global torch RNG is left as it was; all randomness comes from ``config.seed``.
    """
    from idgenrec.baselines.sasrec.recommender import SASRecRecommender

    device = pick_device(config.device)
    train = [dataset.train_sequence(user) for user in range(dataset.num_users)]
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        model = SASRecRecommender(SASRecNetwork(dataset.num_items, config), config, dataset.num_items, device)
        optimizer = adamw(model.network.parameters(), config.learning_rate, config.weight_decay)
        best_score, best_state, stale = -math.inf, None, 0
        for epoch in range(1, config.max_epochs + 1):
            epoch_started = time.perf_counter()
            loss = train_epoch(model, train, optimizer, rng, epoch, progress)
            valid = evaluate(model, dataset, "valid", ks, exclude_seen)
            model.log.epochs.append(EpochLog(epoch, loss, valid, time.perf_counter() - epoch_started))
            if progress:
                LOGGER.info(f"sasrec epoch {epoch}: loss {loss:.4f}, valid {selection_metric} {valid[selection_metric]:.4f}")
            if valid[selection_metric] > best_score:
                best_score, stale = valid[selection_metric], 0
                best_state = copy.deepcopy(model.network.state_dict())
                model.log.best_epoch = epoch
            else:
                stale += 1
                if stale >= config.patience:
                    break
        model.network.load_state_dict(best_state)
    model.log.seconds = time.perf_counter() - started
    return model


def train_epoch(
    model: "SASRecRecommender",
    train: list[list[int]],
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    epoch: int,
    progress: bool,
) -> float:
    """One pass over freshly cut windows of ``train`` in random order; the mean loss per target."""
    config = model.config
    inputs, targets = training_windows(train, config.max_history, config.window_stride, rng)
    order = torch.from_numpy(rng.permutation(len(inputs)))
    model.network.train()
    total_loss, total_targets = 0.0, 0
    steps = range(0, len(order), config.batch_size)
    # the epoch's own log line (loss, validation) follows in fit(): no summary line here
    with Progress(len(steps), f"sasrec epoch {epoch}", enabled=progress, summary=False) as bar:
        for begin in steps:
            index = order[begin : begin + config.batch_size]
            tokens, labels = inputs[index].to(model.device), targets[index].to(model.device)  # (B, T)
            hidden = model.network(tokens)  # (B, T, H)
            owned = labels != IGNORE
            logits = model.network.item_scores(hidden[owned])  # (M, N): only positions with a target
            loss = F.cross_entropy(logits, labels[owned])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(logits)
            total_targets += len(logits)
            bar.update(1, loss=f"{total_loss / total_targets:.4f}")
    return total_loss / total_targets
