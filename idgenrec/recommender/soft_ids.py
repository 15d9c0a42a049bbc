"""The ID phase: train the ID generator through the frozen recommender with soft IDs.

For each history item the generator decodes greedily *with gradients kept*; at step t its
next-token distribution ``p_t`` (real probabilities, not log-scores) times the
recommender's input embedding matrix ``E`` gives a soft token embedding ``p_t @ E``.
Those soft embeddings replace the item's tokens inside the embedded prompt, and the
recommender's loss on the target item's ID flows back into the generator only.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from idgenrec import distributed
from idgenrec.backbone import autocast, prompt_token_limit, training_kernels
from idgenrec.backbone.causal import hidden_states, token_logits
from idgenrec.config import PhaseConfig, TrainingConfig
from idgenrec.progress import Progress
from idgenrec.recommender.decoding import decoder_step
from idgenrec.recommender.samples import (
    EncodedPrompt,
    PromptEncoder,
    TrainingSample,
    encode_samples,
    end_of_sequence_id,
    pad_batch,
    target_tensors,
)
from idgenrec.recommender.sequences import SequenceEncoder
from idgenrec.recommender.training import PhasePlan, apply_gradients, make_optimizer, sequence_loss


def differentiable_greedy_decode(
    generator, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_tokens: int, eos_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decode that keeps the graph.

    Returns ``probs`` (N, T, V), the softmax distribution at each step, and ``keep``
    (N, T), True for the steps that belong to the ID: steps up to (not including) the
    first end-of-sequence. The first step is always kept so no soft ID is empty.
    """
    encoder_outputs = generator.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
    start = generator.config.decoder_start_token_id
    tokens = torch.full((input_ids.size(0), 1), start, dtype=torch.long, device=input_ids.device)
    alive = torch.ones(input_ids.size(0), dtype=torch.bool, device=input_ids.device)
    probs, keep = [], []
    cache = None
    for step in range(max_tokens):
        logits, cache = decoder_step(
            generator, encoder_outputs, attention_mask, tokens[:, -1:] if cache is not None else tokens, cache
        )
        p = torch.softmax(logits.float(), dim=-1)  # (N, V)
        next_token = p.argmax(dim=-1)
        alive = alive & ((next_token != eos_token_id) | (step == 0))
        probs.append(p)
        keep.append(alive.clone())
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        if not bool(alive.any()):
            break
    return torch.stack(probs, dim=1), torch.stack(keep, dim=1)


def soft_id_embeddings(probs: torch.Tensor, embedding_matrix: torch.Tensor) -> torch.Tensor:
    """(N, T, V) distributions x (V, d) embeddings -> (N, T, d) soft token embeddings."""
    return probs.to(embedding_matrix.dtype) @ embedding_matrix


def soft_prompt_embeddings(
    prompts: Sequence[EncodedPrompt],
    soft: torch.Tensor,
    keep: torch.Tensor,
    row_of_item: dict[int, int],
    embedding: torch.nn.Embedding,
    max_tokens: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embed prompts with each history item's tokens replaced by its soft ID.

    Returns ``inputs_embeds`` (B, L, d), zero-padded, and ``attention_mask`` (B, L). A soft ID
    can be longer than the item's textual ID, so a prompt that fits the recommender's
    ``max_tokens`` positions as text may not fit here: it then keeps its most recent items that
    fit, as :class:`PromptEncoder` does for text; one whose last item alone does not fit is an
    error naming the settings.
    """
    rows = []
    device = embedding.weight.device
    lengths = keep.sum(dim=1).tolist()  # one read from the device, not one per item
    soft_length = {item: lengths[row] for item, row in row_of_item.items()}
    for prompt in prompts:
        spans = prompt.item_spans
        width = len(prompt.input_ids) + sum(soft_length[item] - (end - start) for start, end, item in spans)
        first = 0  # the oldest history item kept
        while max_tokens is not None and width > max_tokens and first < len(spans) - 1:
            # the oldest item goes with the separator after it
            width -= soft_length[spans[first][2]] + spans[first + 1][0] - spans[first][1]
            first += 1
        if max_tokens is not None and width > max_tokens:
            raise ValueError(
                f"a prompt with soft IDs is {width} tokens with only its last history item, more than the "
                f"recommender's {max_tokens} positions: lower training.soft_id_max_tokens or use a shorter template"
            )
        hard = embedding(torch.tensor(prompt.input_ids, device=device))  # (S, d)
        # the template before the history, then from the oldest item kept on
        head_end, cursor = (spans[0][0], spans[first][0]) if spans else (0, 0)
        pieces = [hard[:head_end]]
        for start, end, item in spans[first:]:
            r = row_of_item[item]
            pieces += [hard[cursor:start], soft[r][keep[r]]]
            cursor = end
        pieces.append(hard[cursor:])
        rows.append(torch.cat(pieces))
    width = max(r.size(0) for r in rows)
    embeds = soft.new_zeros(len(rows), width, soft.size(-1))
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        embeds[i, : row.size(0)] = row
        mask[i, : row.size(0)] = 1
    return embeds, mask


class ItemTextInputs:
    """Each item's text, tokenized once for the generator (truncated to ``max_tokens``)."""

    def __init__(self, tokenizer, texts: Sequence[str], max_tokens: int):
        self.tokenizer = tokenizer
        self.ids = tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"]

    def batch(self, items: Sequence[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        ids = pad_batch([self.ids[i] for i in items], self.tokenizer.pad_token_id).to(device)
        return ids, (ids != self.tokenizer.pad_token_id).long()


@dataclass(frozen=True)
class BatchTotals:
    """One process's share of an ID-phase batch, scaled so that the shares' losses add up to the batch's.

    The recommender term is summed over the share's target tokens and divided by the whole batch's;
    the anchor term counts each of the batch's history items once, in the first share that reads it,
    over the whole batch's anchored tokens (idgenrec/distributed.py).
    """

    target_tokens: int
    anchor_tokens: int
    anchor_items: frozenset[int]


def batch_totals(
    histories: Sequence[Sequence[tuple[int, int, int]]], target_lengths: Sequence[int],
    current_ids: Sequence[Sequence[int]], ranks: distributed.Ranks,
) -> BatchTotals:
    """:class:`BatchTotals` of ``ranks``' share, from every sample's history item spans and target length."""
    first_reader: dict[int, int] = {}
    for rank in range(ranks.world):
        for spans in histories[distributed.Ranks(rank, ranks.world).share(len(histories))]:
            for _, _, item in spans:
                first_reader.setdefault(item, rank)
    return BatchTotals(
        target_tokens=sum(target_lengths),
        anchor_tokens=sum(len(current_ids[item]) for item in first_reader),
        anchor_items=frozenset(item for item, rank in first_reader.items() if rank == ranks.rank),
    )


def _token_loss(logits: torch.Tensor, labels: torch.Tensor, totals: BatchTotals | None) -> torch.Tensor:
    """Cross-entropy of (N, V) logits: a mean, or with ``totals`` a sum over the whole batch's target tokens."""
    if totals is None:
        return torch.nn.functional.cross_entropy(logits.float(), labels)
    return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum") / totals.target_tokens


def id_phase_loss(
    generator,
    recommender,
    prompts: Sequence[EncodedPrompt],
    targets: Sequence[Sequence[int]],
    item_inputs: ItemTextInputs,
    max_tokens: int,
    eos_token_id: int,
    pad_id: int,
    current_ids: Sequence[Sequence[int]] = (),
    anchor_weight: float = 0.0,
    totals: BatchTotals | None = None,
) -> torch.Tensor:
    """Recommender loss with soft history IDs, plus ``anchor_weight`` x :func:`anchor_loss`.

    ``current_ids[item]`` is the item's ID in the table in force (token ids plus eos). With
    ``totals``, the loss of one process's share of a batch (see :class:`BatchTotals`).
    """
    device = next(generator.parameters()).device
    history = soft_history(generator, recommender, prompts, item_inputs, max_tokens, eos_token_id)
    decoder_inputs, labels = target_tensors(targets, pad_id, recommender.config.decoder_start_token_id)
    logits = recommender(
        inputs_embeds=history.embeds, attention_mask=history.mask, decoder_input_ids=decoder_inputs.to(device)
    ).logits
    labels = labels.to(device)
    if totals is None:
        loss = sequence_loss(logits, labels)
    else:
        loss = _token_loss(logits[labels != -100], labels[labels != -100], totals)
    return loss + history.anchor(generator, current_ids, pad_id, anchor_weight, totals)


@dataclass
class SoftHistory:
    """Prompts embedded with their history items written in soft IDs, and the generator inputs behind them."""

    embeds: torch.Tensor  # (B, L, d), zero-padded
    mask: torch.Tensor  # (B, L)
    items: list[int]  # the items decoded, one generator row each
    input_ids: torch.Tensor  # (N, S) their texts, as the generator read them
    attention_mask: torch.Tensor

    def anchor(
        self, generator, current_ids: Sequence[Sequence[int]], pad_id: int, weight: float, totals: BatchTotals | None = None,
    ) -> torch.Tensor | float:
        """``weight`` x :func:`anchor_loss` on these items' current IDs (0 when the weight is 0).

        With ``totals``, only the items this process anchors, over the whole batch's anchored tokens.
        """
        if weight <= 0:
            return 0.0
        rows = list(range(len(self.items))) if totals is None else [
            row for row, item in enumerate(self.items) if item in totals.anchor_items]
        if not rows:
            return 0.0
        chosen = torch.tensor(rows, device=self.input_ids.device)
        return weight * anchor_loss(
            generator, self.input_ids.index_select(0, chosen), self.attention_mask.index_select(0, chosen),
            [current_ids[self.items[row]] for row in rows], pad_id, None if totals is None else totals.anchor_tokens,
        )


def soft_history(
    generator, recommender, prompts: Sequence[EncodedPrompt], item_inputs: ItemTextInputs, max_tokens: int,
    eos_token_id: int,
) -> SoftHistory:
    """Decode every history item of ``prompts`` with the generator (graph kept) and embed the prompts with them."""
    device = next(generator.parameters()).device
    items = sorted({item for p in prompts for _, _, item in p.item_spans})
    row_of_item = {item: row for row, item in enumerate(items)}
    input_ids, attention_mask = item_inputs.batch(items, device)
    probs, keep = differentiable_greedy_decode(generator, input_ids, attention_mask, max_tokens, eos_token_id)
    embedding = recommender.get_input_embeddings()
    soft = soft_id_embeddings(probs, embedding.weight)
    embeds, mask = soft_prompt_embeddings(prompts, soft, keep, row_of_item, embedding, prompt_token_limit(recommender))
    return SoftHistory(embeds, mask, items, input_ids, attention_mask)


def sequence_id_phase_loss(
    generator,
    recommender,
    encoder: SequenceEncoder,
    samples: Sequence[TrainingSample],
    item_inputs: ItemTextInputs,
    max_tokens: int,
    eos_token_id: int,
    pad_id: int,
    current_ids: Sequence[Sequence[int]] = (),
    anchor_weight: float = 0.0,
    totals: BatchTotals | None = None,
) -> torch.Tensor:
    """The causal recommender's loss on each sample's target ID after its history written in soft IDs,
    plus ``anchor_weight`` x :func:`anchor_loss` (the causal twin of :func:`id_phase_loss`); ``totals`` as there.

    ``eos_token_id`` ends the generator's IDs (the recommender's sequences end IDs with the separator).
    """
    device = next(generator.parameters()).device
    encoded = [encoder.encode_sample(sample) for sample in samples]
    history = soft_history(generator, recommender, [sequence for sequence, _ in encoded], item_inputs, max_tokens,
                           eos_token_id)
    # The target's tokens close each row, whatever length the soft history took: label them from its end.
    labels = torch.full(history.mask.shape, -100, dtype=torch.long)
    for row, (sequence, target_length) in enumerate(encoded):
        width = int(history.mask[row].sum())
        labels[row, width - target_length - 1 : width - 1] = torch.tensor(sequence.input_ids[-target_length:])
    labels = labels.to(device)
    states = hidden_states(recommender, inputs_embeds=history.embeds, attention_mask=history.mask)
    targeted = labels != -100
    loss = _token_loss(token_logits(recommender, states[targeted]), labels[targeted], totals)
    return loss + history.anchor(generator, current_ids, pad_id, anchor_weight, totals)


def anchor_loss(
    generator, input_ids, attention_mask, current_ids: Sequence[Sequence[int]], pad_id: int, total_tokens: int | None = None,
) -> torch.Tensor:
    """Cross-entropy of the generator writing each item's *current* ID from its text (a mean over its
    tokens, or their sum over ``total_tokens``).

    The recommender's gradient alone drives the generator to degenerate text: at lr 1e-3,
    120 steps turned every ML-100k ID into repeated words ("house house house ...", 11
    tokens). This term keeps the generator a writer of short textual IDs, so an ID changes
    only where the recommender's gain outweighs it (weight ``training.id_anchor_weight``).
    """
    device = input_ids.device
    decoder_inputs, labels = target_tensors(current_ids, pad_id, generator.config.decoder_start_token_id)
    logits = generator(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_inputs.to(device)).logits
    labels = labels.to(device)
    targeted = labels != -100
    if total_tokens is None:
        return sequence_loss(logits, labels)
    return torch.nn.functional.cross_entropy(logits[targeted].float(), labels[targeted], reduction="sum") / total_tokens


def train_id_phase(
    generator,
    recommender,
    encoder: PromptEncoder | SequenceEncoder,
    samples: Sequence[TrainingSample],
    item_inputs: ItemTextInputs,
    config: TrainingConfig,
    phase: PhaseConfig,
    seed: int,
) -> list[float]:
    """Update the generator only; the recommender is frozen (no gradient reaches it)."""
    device = next(generator.parameters()).device
    rng = random.Random(seed)
    torch.manual_seed(seed)
    frozen = [p for p in recommender.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    recommender.eval()
    generator.train()
    batch_size = config.id_phase_batch_size
    plan = PhasePlan(phase.epochs, batch_size, len(samples))
    optimizer, schedule = make_optimizer(generator.parameters(), phase.learning_rate, config, plan.total_steps)
    eos = end_of_sequence_id(encoder.tokenizer)  # ends the generator's IDs
    pad_id = encoder.tokenizer.pad_token_id
    current_ids = [[*tokens, eos] for tokens in encoder.item_tokens]
    ranks = distributed.current()
    losses = []
    try:
        for epoch in range(plan.num_epochs):
            indices = plan.epoch_samples(epoch, rng)
            rng.shuffle(indices)
            total, count = 0.0, 0
            batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
            with Progress(len(batches), f"ID phase epoch {epoch + 1}/{plan.num_epochs}") as progress:
                for batch in batches:
                    chosen = [samples[i] for i in batch]
                    # Several processes: each trains its share of the batch, scaled by the whole batch's totals.
                    share = ranks.share(len(chosen))
                    if not isinstance(encoder, SequenceEncoder):  # every process draws the templates alike
                        prompts = encode_samples(encoder, chosen, rng, config.train_templates)
                        targets = [encoder.target(s.target) for s in chosen]
                    totals = None
                    if ranks.world > 1:
                        if isinstance(encoder, SequenceEncoder):
                            encoded = [encoder.encode_sample(s) for s in chosen]
                            histories, lengths = [e.item_spans for e, _ in encoded], [n for _, n in encoded]
                        else:
                            histories, lengths = [p.item_spans for p in prompts], [len(t) for t in targets]
                        totals = batch_totals(histories, lengths, current_ids, ranks)
                    loss = torch.zeros((), device=device)
                    if share.start < share.stop:
                        with autocast(device, config.bf16), training_kernels(device, generator, recommender):
                            if isinstance(encoder, SequenceEncoder):
                                loss = sequence_id_phase_loss(
                                    generator, recommender, encoder, chosen[share], item_inputs,
                                    config.soft_id_max_tokens, eos, pad_id, current_ids, config.id_anchor_weight, totals,
                                )
                            else:
                                loss = id_phase_loss(
                                    generator, recommender, prompts[share], targets[share], item_inputs,
                                    config.soft_id_max_tokens, eos, pad_id, current_ids, config.id_anchor_weight, totals,
                                )
                    total += apply_gradients(loss, generator.parameters(), optimizer, schedule, config.grad_clip).item() * len(batch)
                    count += len(batch)
                    progress.update(1, loss=f"{total / count:.4f}")
            losses.append(total / max(count, 1))
    finally:
        for p in frozen:
            p.requires_grad_(True)
        generator.eval()
    return losses
