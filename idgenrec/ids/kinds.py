"""The three ID kinds of the paper's ablation: learned, title, random."""

from __future__ import annotations

import random
from typing import Literal

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from idgenrec.config import IdConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.ids.table import ItemIdTable, id_quality
from idgenrec.ids.text import normalise, round_trips
from idgenrec.ids.unique import FALLBACK_BASE, generate_unique_ids

IdKind = Literal["learned", "title", "random"]


def make_id_table(
    kind: IdKind,
    dataset: SequenceDataset,
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    config: IdConfig,
    progress: bool = True,
) -> tuple[ItemIdTable, dict]:
    """The ID table of ``kind`` and its quality metrics (plus the kind's own generation stats)."""
    if kind == "learned":
        if model is None:
            raise ValueError("learned IDs need the ID generator model")
        ids, stats = generate_unique_ids(model, tokenizer, dataset.item_texts, config, progress=progress)
    elif kind == "title":
        ids, stats = title_ids(dataset, tokenizer)
    elif kind == "random":
        ids, stats = random_ids(dataset.num_items, config.seed)
    else:
        raise ValueError(f"unknown ID kind {kind!r}; expected learned, title or random")
    table = ItemIdTable(item_ids=list(dataset.item_ids), textual_ids=ids)
    return table, {"kind": kind, **id_quality(table, dataset, tokenizer), **stats}


def title_ids(dataset: SequenceDataset, tokenizer: PreTrainedTokenizerBase) -> tuple[list[str], dict]:
    """Normalised titles; a repeated title gets a counter word (``"hamlet 2"``).

    Words the tokenizer cannot round-trip (e.g. characters outside the vocabulary) are
    dropped; an item left with no words uses its text, then ``item``.
    """
    taken: set[str] = set()
    ids = []
    stats = {"collisions": 0, "fallbacks": 0}
    for title, text in zip(dataset.item_titles, dataset.item_texts):
        base = _encodable(title, tokenizer) or _encodable(text, tokenizer)
        if not base:
            base = FALLBACK_BASE
            stats["fallbacks"] += 1
        candidate, counter = base, 2
        while candidate in taken:
            candidate, counter = f"{base} {counter}", counter + 1
        stats["collisions"] += candidate != base
        taken.add(candidate)
        ids.append(candidate)
    return ids, stats


def _encodable(text: str, tokenizer: PreTrainedTokenizerBase, max_words: int = 32) -> str:
    kept = [w for w in normalise(text, tokenizer).split() if round_trips(w, tokenizer)]
    return " ".join(kept[:max_words])


def random_ids(num_items: int, seed: int) -> tuple[list[str], dict]:
    """P5-style random indexing: a seeded permutation of 1..n, unique by construction."""
    numbers = list(range(1, num_items + 1))
    random.Random(seed).shuffle(numbers)
    return [str(n) for n in numbers], {"collisions": 0, "fallbacks": 0}
