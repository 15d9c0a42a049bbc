"""The paper's unique-ID algorithm, batched: diverse candidates, rising penalty, then rising length.

Each pass decodes every still-unassigned item (length-sorted batches), then assigns in item
order: an item takes its first normalised, round-tripping candidate not yet taken. Items
whose candidates were all taken go to the next pass together, with the diversity penalty
one higher; past ``max_diversity_penalty`` the minimum length grows by ``length_span`` and
the penalty resets. After ``max_length_raises`` raises a fallback (best candidate plus a
counter word) ends the loop, so the algorithm always terminates.

A pass decodes and assigns ``PASS_CHUNK`` items at a time, in item order, so only one chunk's
candidate strings are held at once (a million items' candidates would take about a GB); texts
are kept tokenized as one flat array. Counter words continue from each base's last counter, so
a thousand items falling back to the same words cost a thousand look-ups, not half a million.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from idgenrec import distributed
from idgenrec.config import IdConfig
from idgenrec.ids.diverse import diverse_beam_candidates
from idgenrec.ids.text import field_values, normalise, round_trips
from idgenrec.progress import Progress

FALLBACK_BASE = "item"
PASS_CHUNK = 16384  # items decoded, then assigned, at a time within a pass


@dataclass
class _Try:
    """Decoding settings of one pass; every pending item shares them."""

    penalty: float
    min_tokens: int
    length_raises: int = 0


@dataclass
class _Progress:
    ids: list[str | None]
    best: list[str | None]  # first acceptable candidate seen per item (fallback base)
    taken: set[str] = field(default_factory=set)
    stats: Counter = field(default_factory=Counter)
    next_counter: dict[str, int] = field(default_factory=dict)  # per fallback base: every lower counter is taken


class _Texts:
    """Tokenized texts as one flat array (a list of Python ints per text would take ~36 bytes a token)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_tokens: int | None, special: bool, chunk: int = 8192):
        parts, lengths = [], []
        for start in range(0, len(texts), chunk):
            rows = tokenizer(texts[start : start + chunk], truncation=max_tokens is not None, max_length=max_tokens,
                             add_special_tokens=special)["input_ids"]
            lengths.extend(len(r) for r in rows)
            parts.append(np.fromiter((t for r in rows for t in r), dtype=np.int64))
        self.flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        self.lengths = np.array(lengths, dtype=np.int64)
        self.offsets = np.cumsum(self.lengths) - self.lengths

    def __getitem__(self, item: int) -> list[int]:
        return self.flat[self.offsets[item] : self.offsets[item] + self.lengths[item]].tolist()

    def length(self, item: int) -> int:
        return int(self.lengths[item])


def generate_unique_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    config: IdConfig,
    progress: bool = True,
    taken: Iterable[str] = (),
    own_tokens: bool = False,
) -> tuple[list[str], dict]:
    """One unique, non-empty, round-tripping textual ID per text, deterministic for ``config.seed``.

    ``taken``: IDs already held by other items (a trained model's table, when new items join it).
    ``own_tokens``: an ID may only use tokens of its own item's text, each as often as the text has it (see ``add_items``).
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    was_training = model.training
    model.eval()
    encoded = _Texts(tokenizer, texts, config.max_input_tokens, special=True)
    # The words an ID may use: the text's values, not its field names ("title" is no word of "Just Cause").
    own = _Texts(tokenizer, [field_values(t) for t in texts], None, special=False) if own_tokens else None
    state = _Progress(ids=[None] * len(texts), best=[None] * len(texts), taken=set(taken))
    attempt = _Try(penalty=config.diversity_penalty, min_tokens=config.min_length)
    pending = list(range(len(texts)))
    ranks = distributed.current()
    try:
        with Progress(len(texts), "textual IDs", unit="item", enabled=progress) as bar:
            while pending:
                if attempt.length_raises > config.max_length_raises:
                    _fallback(pending, state, tokenizer)
                    bar.update(len(pending))
                    break
                state.stats["passes"] += 1
                unresolved = []
                for start in range(0, len(pending), PASS_CHUNK):  # in item order: assignment order is unchanged
                    chunk = pending[start : start + PASS_CHUNK]
                    # Several training processes: each decodes its share; all then assign alike, to the same IDs.
                    share = chunk[ranks.share(len(chunk))]
                    decoded = _decode_pass(model, tokenizer, encoded, share, attempt, config, own) if share else {}
                    candidates = dict(ranks.gather(list(decoded.items())))
                    unresolved += [item for item in chunk if not _assign(item, candidates[item], attempt, config, state, tokenizer)]
                bar.update(len(pending) - len(unresolved))
                pending = unresolved
                _escalate(attempt, config)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    stats = {**{k: int(v) for k, v in state.stats.items()}, "seconds": round(seconds, 3)}
    for key in ("resolved_first_choice", "resolved_by_candidate", "resolved_by_penalty", "resolved_by_length", "fallbacks", "rejected_candidates"):
        stats.setdefault(key, 0)
    stats["items_per_second"] = round(len(texts) / seconds, 2) if seconds > 0 else 0.0
    missing = [item for item, text in enumerate(state.ids) if text is None]
    if missing:  # cannot happen: the fallback serves every pending item
        raise RuntimeError(f"items {missing[:5]} got no ID")
    return [text for text in state.ids if text is not None], stats


def _escalate(attempt: _Try, config: IdConfig) -> None:
    attempt.penalty += 1.0
    if attempt.penalty > config.max_diversity_penalty:
        attempt.penalty = config.diversity_penalty
        attempt.min_tokens += config.length_span
        attempt.length_raises += 1


def _decode_pass(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    encoded: _Texts,
    pending: list[int],
    attempt: _Try,
    config: IdConfig,
    own: _Texts | None = None,
) -> dict[int, list[str]]:
    """Normalised candidate strings (best first, duplicates kept) for every pending item.

    ``own``: per item, the tokens its ID may use, each as often as listed.
    """
    order = sorted(pending, key=lambda i: (encoded.length(i), i))  # similar lengths share a batch: little padding
    result: dict[int, list[str]] = {}
    for start in range(0, len(order), config.batch_size):
        items = order[start : start + config.batch_size]
        input_ids, attention_mask = _pad([encoded[i] for i in items], tokenizer.pad_token_id)
        budget = None
        if own is not None:
            # Each token as often as the text has it: no "cause cause 1995 mystery" from "Just Cause".
            # Sized by the model's rows: a hub model (t5-small) can have more rows than its tokenizer has tokens.
            budget = torch.zeros(len(items), model.get_input_embeddings().num_embeddings, dtype=torch.long)
            for row, item in enumerate(items):
                tokens = torch.tensor(own[item], dtype=torch.long)
                budget[row].index_add_(0, tokens, torch.ones(len(tokens), dtype=torch.long))
        ranked = diverse_beam_candidates(
            model, tokenizer, input_ids, attention_mask, groups=config.beam_groups, penalty=attempt.penalty,
            min_tokens=attempt.min_tokens, max_tokens=attempt.min_tokens + config.length_span, budget=budget,
        )
        for item, candidates in zip(items, ranked):
            result[item] = [normalise(tokenizer.decode(c.tokens), tokenizer) for c in candidates]
    return result


def _pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, S)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, tokens in enumerate(rows):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return ids, mask


def _assign(
    item: int, candidates: list[str], attempt: _Try, config: IdConfig, state: _Progress, tokenizer: PreTrainedTokenizerBase
) -> bool:
    """Give ``item`` its first free acceptable candidate; False when every candidate is taken."""
    for rank, text in enumerate(candidates):
        if not round_trips(text, tokenizer):
            state.stats["rejected_candidates"] += 1
            continue
        if state.best[item] is None:
            state.best[item] = text
        if text in state.taken:
            continue
        state.ids[item] = text
        state.taken.add(text)
        first_try = attempt.length_raises == 0 and attempt.penalty == config.diversity_penalty
        if first_try:
            state.stats["resolved_first_choice" if rank == 0 else "resolved_by_candidate"] += 1
        else:
            state.stats["resolved_by_length" if attempt.length_raises else "resolved_by_penalty"] += 1
        return True
    return False


def _fallback(pending: list[int], state: _Progress, tokenizer: PreTrainedTokenizerBase) -> None:
    """Best candidate (or 'item') plus the smallest counter word that makes it unique.

    Bare numbers are the last resort: digits are always in the vocabulary, so this ends.
    """
    for item in pending:
        text = _first_free(state.best[item] or FALLBACK_BASE, state, tokenizer)
        if text is None:
            text = _first_free(FALLBACK_BASE, state, tokenizer)
        if text is None:
            text = _first_free_number(state)
        state.ids[item] = text
        state.taken.add(text)
        state.stats["fallbacks"] += 1


def _first_free(base: str, state: _Progress, tokenizer: PreTrainedTokenizerBase, tries: int = 1000) -> str | None:
    """``base`` plus its smallest free counter 2..tries+1; None when that does not round-trip or none is free."""
    counter = state.next_counter.get(base, 2)  # every counter below it is taken (taken only grows)
    while counter < 2 + tries and f"{base} {counter}" in state.taken:
        counter += 1
    state.next_counter[base] = counter
    if counter == 2 + tries:
        return None
    text = f"{base} {counter}"
    return text if round_trips(text, tokenizer) else None


def _first_free_number(state: _Progress) -> str:
    number = state.next_counter.get("", 1)
    while str(number) in state.taken:
        number += 1
    state.next_counter[""] = number
    return str(number)
