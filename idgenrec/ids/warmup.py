"""Warm-up of the ID generator: item text -> a short keyword phrase made of the item's own words.

The paper starts its generator from a t5-small tag generator; offline there is none, so the
generator learns the tag-writing habit from the catalogue itself (self-supervised: the
target is :func:`keyword_phrase` of the item). Its first IDs are then the item's words.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from idgenrec import distributed
from idgenrec.backbone import (
    autocast,
    build_seq2seq,
    build_tokenizer,
    pick_device,
    save_seq2seq,
    training_kernels,
    vocabulary_corpus,
)
from idgenrec.config import Params, WarmupConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.ids.text import keyword_phrase
from idgenrec.optim import adamw, apply_gradients
from idgenrec.progress import Progress

IGNORE = -100  # label positions the loss skips (padding)


def warm_up_generator(
    dataset: SequenceDataset, params: Params, output_folder: str | Path, progress: bool = True
) -> dict:
    """Build tokenizer + generator, train text -> keyword phrase, save the checkpoint; return metrics."""
    tokenizer = build_tokenizer(params.backbone, vocabulary_corpus(dataset))
    model = build_seq2seq(params.backbone, tokenizer, "generator", seed=params.ids.seed).to(pick_device())
    pairs = warmup_pairs(dataset, params.warmup.keyword_words)
    metrics = train_keyword_phrases(
        model, tokenizer, pairs, params.warmup, max_input_tokens=params.ids.max_input_tokens, seed=params.ids.seed,
        progress=progress,
    )
    if distributed.current().main:
        save_seq2seq(model, tokenizer, output_folder)
    distributed.current().barrier()
    return {"items": dataset.num_items, "vocabulary_size": len(tokenizer), **metrics}


def warmup_pairs(dataset: SequenceDataset, num_words: int) -> list[tuple[str, str]]:
    """(item text, keyword phrase) for every item whose text has content words."""
    pairs = [(text, keyword_phrase(title, text, num_words)) for title, text in zip(dataset.item_titles, dataset.item_texts)]
    return [(text, target) for text, target in pairs if target]


def train_keyword_phrases(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[tuple[str, str]],
    config: WarmupConfig,
    max_input_tokens: int,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Teacher-forced seq2seq training; returns loss at start/end and throughput."""
    if not pairs:
        raise ValueError("no warm-up pairs: every item text is empty")
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    rng = random.Random(seed)
    steps = max(1, math.ceil(config.epochs * len(pairs) / config.batch_size))
    optimizer = adamw(model.parameters(), config.learning_rate, weight_decay=0.01, eps=1e-6)
    schedule = get_linear_schedule_with_warmup(optimizer, max(1, int(0.05 * steps)), steps)
    device = next(model.parameters()).device
    ranks = distributed.current()
    model.train()
    losses: list[float] = []
    started = time.perf_counter()
    with Progress(steps, "generator warm-up", enabled=progress) as bar:
        for batch in _batches(pairs, config.batch_size, steps, rng):
            inputs = tokenizer([t for t, _ in batch], truncation=True, max_length=max_input_tokens, padding=True, return_tensors="pt")
            decoder_input_ids, labels = _teacher_forcing([k for _, k in batch], tokenizer, model.config.decoder_start_token_id)
            # Several processes: each trains its share of the batch, weighted by its share of the target tokens.
            rows = ranks.share(len(batch))
            loss = torch.zeros((), device=device)
            if rows.start < rows.stop:
                with autocast(device, config.bf16), training_kernels(device, model):
                    logits = model(
                        input_ids=inputs.input_ids[rows].to(device),
                        attention_mask=inputs.attention_mask[rows].to(device),
                        decoder_input_ids=decoder_input_ids[rows].to(device),
                    ).logits  # (B, T, V)
                loss = F.cross_entropy(logits.float().flatten(0, 1), labels[rows].to(device).flatten(), ignore_index=IGNORE)
                loss = loss * distributed.token_share(labels, rows)
            losses.append(apply_gradients(loss, model.parameters(), optimizer, schedule, grad_clip=1.0).item())
            bar.update(1, loss=f"{losses[-1]:.3f}")
    model.eval()
    seconds = time.perf_counter() - started
    tail = losses[-max(1, len(losses) // 10) :]
    return {
        "steps": steps,
        "first_loss": round(losses[0], 4),
        "final_loss": round(sum(tail) / len(tail), 4),
        "seconds": round(seconds, 2),
        "samples_per_second": round(steps * config.batch_size / seconds, 1),
    }


def _batches(pairs: list, batch_size: int, steps: int, rng: random.Random):
    """``steps`` batches from successive seeded shuffles of ``pairs`` (fractional epochs allowed)."""
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(pairs)))
            rng.shuffle(fresh)
            order.extend(fresh)
        chosen, order = order[:batch_size], order[batch_size:]
        yield [pairs[i] for i in chosen]


def _teacher_forcing(
    targets: list[str], tokenizer: PreTrainedTokenizerBase, start: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """decoder input ``[start] t1..tn`` and labels ``t1..tn [eos]`` (padding: pad id / -100), (B, T)."""
    rows = [tokenizer.encode(t, add_special_tokens=False)[:31] for t in targets]
    width = max(len(r) for r in rows) + 1
    decoder_input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, tokens in enumerate(rows):
        decoder_input_ids[i, : len(tokens) + 1] = torch.tensor([start, *tokens])
        labels[i, : len(tokens) + 1] = torch.tensor([*tokens, tokenizer.eos_token_id])
    return decoder_input_ids, labels
