"""SASRec baseline: a causal transformer over the item history, cross-entropy over the full catalogue.

The network follows RecBole's SASRec (Kang & McAuley 2018, BERT-style post-LayerNorm
blocks, GELU feed-forward, learned positional embeddings, output layer tied to the item
embeddings), so the numbers can be checked against RecBole's on ML-100k.

One deliberate difference: RecBole trains on every prefix of a training sequence as a
separate sample (one target per forward pass); here each forward pass over a window of up
to ``max_history`` items predicts the next item at every position, as the SASRec paper
does. Every training target is still predicted once per epoch, at ~50x less compute. The
window boundaries move by a random offset each epoch, so a target is not always seen with
the same (short) left context.

Item ``i`` of the dataset is token ``i + 1``; token 0 is padding. Histories are
left-aligned (position 0 is the oldest item read) and padded on the right, so the causal
mask alone keeps real positions from attending to padding.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from idgenrec.atomic import atomic_directory
from idgenrec.config import SASRecConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import evaluate
from idgenrec.optim import adamw
from idgenrec.progress import LOGGER, Progress

PAD = 0
IGNORE = -100  # cross_entropy's ignore_index: padding and targets owned by another window
FORMAT = "idgenrec-sasrec/1"
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
# The training log's seconds, beside the config rather than in it: .dvcignore keeps this file
# out of the folder's DVC hash, so retraining to the same weights writes the same folder.
TIMINGS_FILE = "timings.json"


# -- the network ---------------------------------------------------------------------


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout``, with the mask drawn by ``torch.rand`` on CPU.

    torch's CPU dropout draws its mask with ``bernoulli_``, about 4x slower than ``rand``
    (5.1 against 1.3 ms for a 64x50x64 batch on 2 cores): it took 37% of a SASRec epoch here.
    Same distribution (each unit kept with probability 1 - p, kept units scaled by 1 / (1 - p)),
    other random draws. GPUs keep ``F.dropout``'s fused kernel.
    """
    if not training or p == 0 or x.device.type != "cpu":
        return F.dropout(x, p, training)
    keep = (torch.rand_like(x) >= p).to(x.dtype).div_(1 - p)
    return x * keep


class _Dropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class _TransformerBlock(nn.Module):
    """Post-LayerNorm block as in BERT/RecBole: x = LN(x + Drop(Attn(x))); x = LN(x + Drop(FFN(x)))."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.heads = config.num_heads
        self.attention_dropout = config.attention_dropout
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.attention_out = nn.Linear(config.hidden_size, config.hidden_size)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = nn.Sequential(
            nn.Linear(config.hidden_size, config.inner_size),
            nn.GELU(),
            nn.Linear(config.inner_size, config.hidden_size),
        )
        self.feed_forward_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = _Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape  # (B, T, H)
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        # Causal attention written out rather than F.scaled_dot_product_attention, whose CPU
        # kernel draws its dropout mask with bernoulli_ (see dropout()).
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, heads, T, T)
        later = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
        weights = dropout(scores.masked_fill(later, -math.inf).softmax(-1), self.attention_dropout, self.training)
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, width)  # (B, T, H)
        x = self.attention_norm(x + self.dropout(self.attention_out(attended)))
        return self.feed_forward_norm(x + self.dropout(self.feed_forward(x)))


class SASRecNetwork(nn.Module):
    def __init__(self, num_items: int, config: SASRecConfig):
        super().__init__()
        self.item_embedding = nn.Embedding(num_items + 1, config.hidden_size, padding_idx=PAD)
        self.position_embedding = nn.Embedding(config.max_history, config.hidden_size)
        self.embedding_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = _Dropout(config.hidden_dropout)
        self.blocks = nn.ModuleList(_TransformerBlock(config) for _ in range(config.num_layers))
        self.apply(lambda module: _init_weights(module, config.initializer_range))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) left-aligned item tokens -> (B, T) hidden states (B, T, H); row t has read tokens[:, :t+1]."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.dropout(self.embedding_norm(self.item_embedding(tokens) + self.position_embedding(positions)))
        for block in self.blocks:
            x = block(x)
        return x

    def item_scores(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., H) -> (..., num_items) logits against the tied item embeddings (padding row dropped)."""
        return hidden @ self.item_embedding.weight[1:].T


def _init_weights(module: nn.Module, std: float) -> None:
    """RecBole's initialisation: N(0, 0.02) weights, zero biases, identity LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# -- training data ---------------------------------------------------------------------


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


# -- the recommender -----------------------------------------------------------------------


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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("sasrec.device is 'cuda' but torch sees no CUDA device")
    return torch.device(name)


class SASRecRecommender:
    """Implements :class:`idgenrec.evaluation.Recommender`; trained by :meth:`fit`."""

    def __init__(self, network: SASRecNetwork, config: SASRecConfig, num_items: int, device: torch.device):
        self.network = network.to(device)
        self.config = config
        self.num_items = num_items
        self.device = device
        self.log = TrainingLog()

    # -- inference -------------------------------------------------------------------

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
        self, histories: Sequence[Sequence[int]], k: int, exclude_seen: bool = False
    ) -> list[list[int]]:
        k = min(k, self.num_items)
        results: list[list[int]] = []
        batch = self.config.eval_batch_size
        for begin in range(0, len(histories), batch):
            chunk = histories[begin : begin + batch]
            scores = self.score(chunk)
            if exclude_seen:
                rows = [row for row, history in enumerate(chunk) for _ in history]
                cols = [item for history in chunk for item in history]
                scores[rows, cols] = -math.inf
            top = scores.topk(k, dim=1).indices.cpu().tolist()
            if exclude_seen:  # a history covering most of the catalogue leaves fewer than k items
                top = [row[: self.num_items - len(set(history))] for row, history in zip(top, chunk)]
            results.extend(top)
        return results

    # -- training --------------------------------------------------------------------

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
        """Train on every position of the training sequences; keep the epoch with the best validation metric.

        Stops after ``config.patience`` epochs without improvement or ``config.max_epochs``.
        The global torch RNG is left as it was; all randomness comes from ``config.seed``.
        """
        device = pick_device(config.device)
        train = [dataset.train_sequence(user) for user in range(dataset.num_users)]
        started = time.perf_counter()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(config.seed)
            rng = np.random.default_rng(config.seed)
            model = cls(SASRecNetwork(dataset.num_items, config), config, dataset.num_items, device)
            optimizer = adamw(model.network.parameters(), config.learning_rate, config.weight_decay)
            best_score, best_state, stale = -math.inf, None, 0
            for epoch in range(1, config.max_epochs + 1):
                epoch_started = time.perf_counter()
                loss = model._train_epoch(train, optimizer, rng, epoch, progress)
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

    def _train_epoch(
        self, train: list[list[int]], optimizer: torch.optim.Optimizer, rng: np.random.Generator, epoch: int, progress: bool
    ) -> float:
        inputs, targets = training_windows(train, self.config.max_history, self.config.window_stride, rng)
        order = torch.from_numpy(rng.permutation(len(inputs)))
        self.network.train()
        total_loss, total_targets = 0.0, 0
        steps = range(0, len(order), self.config.batch_size)
        # the epoch's own log line (loss, validation) follows in fit(): no summary line here
        with Progress(len(steps), f"sasrec epoch {epoch}", enabled=progress, summary=False) as bar:
            for begin in steps:
                index = order[begin : begin + self.config.batch_size]
                tokens, labels = inputs[index].to(self.device), targets[index].to(self.device)  # (B, T)
                hidden = self.network(tokens)  # (B, T, H)
                owned = labels != IGNORE
                logits = self.network.item_scores(hidden[owned])  # (M, N): only positions with a target
                loss = F.cross_entropy(logits, labels[owned])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * len(logits)
                total_targets += len(logits)
                bar.update(1, loss=f"{total_loss / total_targets:.4f}")
        return total_loss / total_targets

    # -- persistence: {config.json, weights.safetensors, timings.json} ------------------

    def save(self, folder: str | Path) -> None:
        from safetensors.torch import save_file

        with atomic_directory(folder) as tmp:
            state = {name: tensor.detach().cpu().contiguous() for name, tensor in self.network.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_FILE))
            log = self.log.as_dict()
            timings = {"seconds": log.pop("seconds"), "epochs": [epoch.pop("seconds") for epoch in log["epochs"]]}
            payload = {"format": FORMAT, "num_items": self.num_items, "config": self.config.model_dump(mode="json"), "training": log}
            (tmp / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            (tmp / TIMINGS_FILE).write_text(json.dumps(timings, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None) -> "SASRecRecommender":
        """Rebuild a saved model; errors name the file that is missing or corrupt."""
        from safetensors.torch import load_file

        folder = Path(folder)
        config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
        for path in (config_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; not a saved SASRec model (run `idgenrec baseline sasrec`)")
        try:
            payload = json.loads(config_path.read_text(encoding="utf-8"))
            if payload.get("format") != FORMAT:
                raise ValueError(f"format is {payload.get('format')!r}, expected {FORMAT!r}")
            config = SASRecConfig.model_validate(payload["config"])
            num_items = int(payload["num_items"])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{config_path}: corrupt or not a SASRec model config: {err}") from None
        try:
            state = load_file(str(weights_path))
        except Exception as err:  # safetensors raises its own error type for truncated or garbled files
            raise ValueError(f"{weights_path}: corrupt weights file: {err}") from None
        network = SASRecNetwork(num_items, config)
        try:
            network.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{weights_path}: weights do not match {config_path} ({num_items} items): {err}") from None
        model = cls(network, config, num_items, pick_device(device or config.device))
        log = payload.get("training", {})
        timings = _load_timings(folder / TIMINGS_FILE, len(log.get("epochs", [])))
        model.log = TrainingLog(
            # `seconds` in an entry: a model saved before the timings moved out of config.json
            epochs=[EpochLog(**{"seconds": seconds, **entry}) for entry, seconds in zip(log.get("epochs", []), timings["epochs"])],
            best_epoch=log.get("best_epoch", 0),
            seconds=log.get("seconds", timings["seconds"]),
        )
        return model


def _load_timings(path: Path, num_epochs: int) -> dict:
    """The log's seconds; zeros where the file is missing (``dvc checkout`` skips it) or does not fit."""
    zeros = {"seconds": 0.0, "epochs": [0.0] * num_epochs}
    try:
        timings = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return zeros
    if not isinstance(timings, dict) or len(timings.get("epochs", ())) != num_epochs:
        return zeros
    return timings
