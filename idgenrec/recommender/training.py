"""The recommender phase: cross-entropy on the item IDs of the current ID table, for either architecture.

seq2seq: a prompt of the last items -> the next item's ID, one encoder pass per prompt.
causal: windows of a user's sequence, every target item's ID in one forward pass.
One loop trains both; a :class:`BatchSource` makes each epoch's batches and the batch's type
picks its loss (:func:`batch_loss`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import get_linear_schedule_with_warmup
from transformers.modeling_outputs import BaseModelOutput

from idgenrec import distributed
from idgenrec.backbone import autocast, training_kernels
from idgenrec.backbone.causal import hidden_states, token_logits
from idgenrec.config import PhaseConfig, TrainingConfig
from idgenrec.optim import adamw, apply_gradients
from idgenrec.progress import Progress
from idgenrec.recommender.samples import (
    Batch,
    PromptEncoder,
    TrainingSample,
    collate,
    encode_samples,
    length_grouped_batches,
    seen_item_branches,
)
from idgenrec.recommender.item_scores import catalogue_tokens, item_embeddings, item_log_probs
from idgenrec.recommender.sequences import SequenceBatch, SequenceEncoder, TrainingWindow, window_batches


def sequence_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy; label -100 (padding) is ignored."""
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)


# How often the training loop reads its running loss back from the device: a read waits for
# every queued GPU kernel, so reading it after each step would keep the host from queuing the
# next step while the GPU runs this one.
LOSS_READ_EVERY_STEPS = 50


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; to a GPU from page-locked memory, so the copy does not wait for queued kernels.

    A copy from ordinary (pageable) host memory blocks the host until the GPU has finished
    everything queued before it, which would serialise batching with the previous step.
    """
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def seen_unlikelihood_loss(logits: torch.Tensor, branches: torch.Tensor, rows: int) -> torch.Tensor:
    """-log(1 - p) summed over the (row, step, token) ``branches`` and averaged over ``rows`` target rows.

    p is the probability of leaving the target's ID for an already-seen item's where the two IDs
    part. Summed per row, as token-level unlikelihood sums over its negative candidates: the
    gradient on each branch's logit is about its p, small next to the cross-entropy's, so a mean
    over branches would all but vanish.
    """
    if branches.numel() == 0:
        return logits.new_zeros((), dtype=torch.float32)
    row, step, token = branches.unbind(1)
    log_probs = torch.log_softmax(logits[row, step].float(), dim=-1)
    return unlikelihood(log_probs.gather(1, token.unsqueeze(1)).squeeze(1)).sum() / max(rows, 1)


def unlikelihood(log_p: torch.Tensor) -> torch.Tensor:
    """-log(1 - p) from log p, elementwise, accurate for p near 0 and near 1."""
    return -torch.log(-torch.expm1(log_p.clamp(max=-1e-6)))


def recommender_loss(model, batch: Batch, device: torch.device, seen_weight: float = 0.0) -> torch.Tensor:
    """Token cross-entropy of every target row; each prompt is encoded once, however many targets it has.

    With ``seen_weight`` > 0 and the batch's seen-item branches, plus that weight times
    :func:`seen_unlikelihood_loss`.
    """
    attention_mask = to_device(batch.attention_mask, device)
    encoded = model.get_encoder()(input_ids=to_device(batch.input_ids, device), attention_mask=attention_mask)
    rows = to_device(batch.target_rows, device)
    logits = model(
        encoder_outputs=BaseModelOutput(last_hidden_state=encoded.last_hidden_state.index_select(0, rows)),
        attention_mask=attention_mask.index_select(0, rows),
        decoder_input_ids=to_device(batch.decoder_input_ids, device),
    ).logits  # (R, T, V)
    loss = sequence_loss(logits, to_device(batch.labels, device))
    if seen_weight and batch.seen_branches is not None:
        real_rows = int((batch.labels != -100).any(dim=1).sum())
        loss = loss + seen_weight * seen_unlikelihood_loss(logits, to_device(batch.seen_branches, device), real_rows)
    return loss


def sequence_batch_loss(
    model, batch: SequenceBatch, device: torch.device, seen_weight: float = 0.0, item_weight: float = 0.0,
    item_seen_weight: float = 0.0,
) -> torch.Tensor:
    """Mean token cross-entropy over every labelled position of a causal batch.

    The LM head (a (H, V) projection and a softmax over the vocabulary) runs only where
    there is a target: about 5 of every 6 positions of a window are labelled, but none of
    the padding is. With ``seen_weight`` > 0 and the batch's seen-item branches, plus that
    weight times -log(1 - p) summed over the branches and divided by the labelled positions
    (the cross-entropy's own mean): p is the probability of starting to write, in place of the
    target, an item the window already holds. With ``item_weight`` > 0 and the batch's target
    items, plus that weight times the cross-entropy of each target item against the whole
    catalogue (:func:`~idgenrec.recommender.item_scores.item_logits`), read where its ID starts; and with
    ``item_seen_weight`` > 0, that weight times -log(1 - p) of every item the sequence held
    before the target, summed per target and averaged over targets.
    """
    labels = to_device(batch.labels, device)
    states = hidden_states(
        model, input_ids=to_device(batch.input_ids, device), attention_mask=to_device(batch.attention_mask, device)
    )  # (B, T, H)
    targeted = labels != -100
    log_probs = torch.log_softmax(token_logits(model, states[targeted]).float(), dim=-1)  # (N, V)
    loss = torch.nn.functional.nll_loss(log_probs, labels[targeted])
    if seen_weight and batch.seen_branches is not None and batch.seen_branches.numel():
        # Row of each labelled (sequence, position) in log_probs: branches sit on labelled positions only.
        index = torch.full(labels.shape, -1, dtype=torch.long, device=device)
        index[targeted] = torch.arange(log_probs.size(0), device=device)
        sequence, position, token = to_device(batch.seen_branches, device).unbind(1)
        loss = loss + seen_weight * unlikelihood(log_probs[index[sequence, position], token]).sum() / log_probs.size(0)
    if item_weight and batch.target_items is not None and batch.target_items.numel():
        sequence, position, item = to_device(batch.target_items, device).unbind(1)
        items = item_embeddings(model, to_device(batch.catalogue, device))
        scores = item_log_probs(model, states[sequence, position], items)
        loss = loss + item_weight * torch.nn.functional.nll_loss(scores, item)
        if item_seen_weight and batch.seen_items.numel():
            target, seen = to_device(batch.seen_items, device).unbind(1)
            loss = loss + item_seen_weight * unlikelihood(scores[target, seen]).sum() / scores.size(0)
    return loss


def batch_loss(model, batch: Batch | SequenceBatch, device: torch.device, config: TrainingConfig) -> torch.Tensor:
    """The recommender loss of a seq2seq (:class:`Batch`) or causal (:class:`SequenceBatch`) batch."""
    if isinstance(batch, SequenceBatch):
        return sequence_batch_loss(
            model, batch, device, config.seen_unlikelihood, config.item_loss, config.item_seen_unlikelihood
        )
    return recommender_loss(model, batch, device, config.seen_unlikelihood)


def optimisation_step(
    model, batch: Batch | SequenceBatch, optimizer, schedule, device: torch.device, config: TrainingConfig
) -> torch.Tensor:
    """One recommender step (forward, backward, clip, update); returns the batch loss (a 0-d tensor on ``device``).

    On several processes each trains its share of the batch (:func:`batch_share`), its loss
    weighted by its share of the targets, and the gradients are summed (idgenrec/distributed.py).
    """
    part, weight = batch_share(batch, distributed.current())
    if part is None:  # more processes than the batch has rows: this one adds a zero gradient
        loss = torch.zeros((), device=device)
    else:
        with autocast(device, config.bf16), training_kernels(device, model):
            loss = batch_loss(model, part, device, config) * weight
    return apply_gradients(loss, model.parameters(), optimizer, schedule, config.grad_clip)


def batch_share(batch: Batch | SequenceBatch, ranks: distributed.Ranks) -> tuple[Batch | SequenceBatch | None, float]:
    """This process's rows of ``batch`` and their share of its target tokens (the batch itself, 1.0, alone).

    A seq2seq prompt keeps all its target rows. None when the share is empty.
    """
    if ranks.world == 1:
        return batch, 1.0
    prompts = ranks.share(batch.size)
    if prompts.start == prompts.stop:
        return None, 0.0
    if isinstance(batch, SequenceBatch):
        width = int(batch.attention_mask[prompts].sum(dim=1).max())  # right-padded: drop the share's own padding
        part = SequenceBatch(batch.input_ids[prompts, :width], batch.attention_mask[prompts, :width],
                             batch.labels[prompts, :width])
        return part, distributed.token_share(batch.labels, prompts)
    owner = batch.target_rows
    rows = torch.nonzero((owner >= prompts.start) & (owner < prompts.stop)).squeeze(1)
    rows = slice(int(rows[0]), int(rows[-1]) + 1)  # a prompt's rows follow the previous prompt's
    branches = batch.seen_branches
    if branches is not None:
        kept = (branches[:, 0] >= rows.start) & (branches[:, 0] < rows.stop)
        branches = branches[kept] - torch.tensor([rows.start, 0, 0])
    part = Batch(batch.input_ids[prompts], batch.attention_mask[prompts], batch.decoder_input_ids[rows],
                 batch.labels[rows], batch.prompts[prompts], owner[rows] - prompts.start, branches)
    return part, distributed.token_share(batch.labels, rows)


@dataclass
class PhasePlan:
    """How many optimisation steps a phase takes and which samples feed each epoch."""

    epochs: float
    batch_size: int
    num_samples: int

    @property
    def samples_per_epoch(self) -> int:
        return self.num_samples if self.epochs >= 1 else max(1, round(self.num_samples * self.epochs))

    @property
    def num_epochs(self) -> int:
        return max(1, math.ceil(self.epochs))

    @property
    def total_steps(self) -> int:
        per_epoch = math.ceil(self.samples_per_epoch / self.batch_size)
        whole, fraction = divmod(self.epochs, 1) if self.epochs >= 1 else (1, 0)
        return int(per_epoch * whole + math.ceil(per_epoch * fraction))

    def epoch_samples(self, epoch: int, rng: random.Random) -> list[int]:
        """Indices of the samples for ``epoch``; a trailing fractional epoch takes a random subset."""
        indices = list(range(self.num_samples))
        remaining = self.epochs - epoch
        if remaining < 1:
            count = max(1, round(self.num_samples * remaining))
            return sorted(rng.sample(indices, count))
        return indices


def make_optimizer(parameters, learning_rate: float, config: TrainingConfig, total_steps: int):
    optimizer = adamw(parameters, learning_rate, config.weight_decay, config.adam_eps)
    warmup = int(config.warmup_ratio * total_steps)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, max(total_steps, 1))


def iterate_batches(
    encoder: PromptEncoder,
    samples: Sequence[TrainingSample],
    indices: Sequence[int],
    config: TrainingConfig,
    rng: random.Random,
    pad_id: int,
    decoder_start_id: int,
) -> Iterator[Batch]:
    """Training batches; with later targets, every batch's decoder side has one fixed shape.

    Later-target batches would otherwise change their decoder shape every step (a prompt near
    the end of a sequence has fewer later items; the longest ID varies), and glibc's heap
    cannot reuse one step's freed blocks for the next step's differently sized tensors: an
    ML-100k run grew to 12 GB resident. So each prompt gets exactly ``1 + later_targets`` rows
    (missing later items are rows of padding, masked from the loss) of the longest ID's length.
    """
    chosen = [samples[i] for i in indices]
    prompts = encode_samples(encoder, chosen, rng, config.train_templates)
    rows_per_prompt = 1 + config.later_targets
    fixed_width = max(len(encoder.target(item)) for item in range(len(encoder.item_tokens))) if config.later_targets else None
    for batch_indices in length_grouped_batches([len(p.input_ids) for p in prompts], config.batch_size, rng):
        targets, rows = [], []
        for row, i in enumerate(batch_indices):
            items = (chosen[i].target, *chosen[i].later)
            targets += [encoder.target(item) for item in items]
            if fixed_width is not None:
                targets += [[]] * (rows_per_prompt - len(items))
            rows += [row] * (len(targets) - len(rows))
        branches = None
        if config.seen_unlikelihood:
            # The items the prompt shows (a long prompt may have dropped its oldest).
            shown = [[encoder.target(item) for _, _, item in prompts[i].item_spans] for i in batch_indices]
            branches = seen_item_branches(targets, [shown[row] for row in rows])
        yield collate([prompts[i] for i in batch_indices], targets, pad_id, decoder_start_id, rows, fixed_width, branches)


class BatchSource(Protocol):
    """What the training loop needs from an architecture: its samples and each epoch's batches."""

    num_samples: int

    def batches(self, indices: Sequence[int], rng: random.Random) -> Iterator[Batch | SequenceBatch]: ...


@dataclass
class PromptBatches:
    """seq2seq samples: every prefix of every training sequence, one prompt each."""

    encoder: PromptEncoder
    samples: Sequence[TrainingSample]
    config: TrainingConfig
    decoder_start_id: int

    @property
    def num_samples(self) -> int:
        return len(self.samples)

    def batches(self, indices: Sequence[int], rng: random.Random) -> Iterator[Batch]:
        pad_id = self.encoder.tokenizer.pad_token_id
        return iterate_batches(self.encoder, self.samples, indices, self.config, rng, pad_id, self.decoder_start_id)


@dataclass
class WindowBatches:
    """causal samples: windows of every training sequence, each training all its target items at once."""

    encoder: SequenceEncoder
    windows: Sequence[TrainingWindow]
    config: TrainingConfig

    @property
    def num_samples(self) -> int:
        return len(self.windows)

    def batches(self, indices: Sequence[int], rng: random.Random) -> Iterator[SequenceBatch]:
        pad_id = self.encoder.tokenizer.pad_token_id
        catalogue = catalogue_tokens(self.encoder.item_tokens) if self.config.item_loss else None
        return window_batches(
            self.encoder, self.windows, indices, self.config.batch_size, rng, pad_id,
            self.config.seen_unlikelihood > 0, catalogue,
        )


def train_recommender_phase(
    model,
    source: BatchSource,
    config: TrainingConfig,
    phase: PhaseConfig,
    seed: int,
    on_epoch_end: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train the recommender for ``phase.epochs`` passes over ``source``; returns the mean loss per epoch."""
    device = next(model.parameters()).device
    rng = random.Random(seed)
    torch.manual_seed(seed)
    plan = PhasePlan(phase.epochs, config.batch_size, source.num_samples)
    optimizer, schedule = make_optimizer(
        [p for p in model.parameters() if p.requires_grad], phase.learning_rate, config, plan.total_steps
    )
    losses = []
    model.train()
    for epoch in range(plan.num_epochs):
        total, count = torch.zeros((), device=device), 0  # summed on the device: see LOSS_READ_EVERY_STEPS
        indices = plan.epoch_samples(epoch, rng)
        steps = math.ceil(len(indices) / config.batch_size)
        with Progress(steps, f"recommender epoch {epoch + 1}/{plan.num_epochs}") as progress:
            for step, batch in enumerate(source.batches(indices, rng), 1):
                size = batch.size
                total += optimisation_step(model, batch, optimizer, schedule, device, config) * size
                count += size
                if step % LOSS_READ_EVERY_STEPS == 0:
                    progress.update(1, loss=f"{total.item() / count:.4f}")
                else:
                    progress.update(1)
            losses.append(total.item() / max(count, 1))
            progress.update(0, loss=f"{losses[-1]:.4f}")  # the summary line shows the epoch's loss
        if on_epoch_end is not None:
            model.eval()
            on_epoch_end(epoch, losses[-1])
            model.train()
    model.eval()
    return losses
