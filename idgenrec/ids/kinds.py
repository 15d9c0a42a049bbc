"""The three ID kinds of the paper's ablation: learned, title, random."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
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
    ids, stats = ids_of_kind(kind, dataset.item_titles, dataset.item_texts, model, tokenizer, config, progress)
    table = ItemIdTable(item_ids=list(dataset.item_ids), textual_ids=ids)
    return table, {"kind": kind, **id_quality(table, dataset, tokenizer), **stats}


def ids_of_kind(
    kind: IdKind,
    titles: Sequence[str],
    texts: Sequence[str],
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    config: IdConfig,
    progress: bool = True,
    taken: Collection[str] = (),
    own_tokens: bool = False,
) -> tuple[list[str], dict]:
    """IDs of ``kind`` for items with these titles and texts, none of them in ``taken``.

    ``taken`` holds the IDs of a trained model's items when new items join it: learned IDs
    come from its generator (with ``own_tokens``, from tokens of each item's own text only),
    title IDs from the titles, random IDs are the next unused numbers.
    """
    if kind == "learned":
        if model is None:
            raise ValueError("learned IDs need the ID generator model")
        return generate_unique_ids(model, tokenizer, list(texts), config, progress=progress, taken=taken, own_tokens=own_tokens)
    if kind == "title":
        return title_ids(titles, texts, tokenizer, taken)
    if kind == "random":
        return random_ids(len(texts), config.seed, taken)
    raise ValueError(f"unknown ID kind {kind!r}; expected learned, title or random")


def title_ids(
    titles: Sequence[str], texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, taken: Collection[str] = ()
) -> tuple[list[str], dict]:
    """Normalised titles; a repeated title gets a counter word (``"hamlet 2"``).

    Words the tokenizer cannot round-trip (e.g. characters outside the vocabulary) are
    dropped; an item left with no words uses its text, then ``item``.
    """
    taken = set(taken)
    next_counter: dict[str, int] = {}  # per title: every lower counter is taken, so a common title costs no rescans
    encodable: dict[str, bool] = {}  # per word: words repeat across a catalogue, a round trip costs two tokenizer calls
    ids = []
    stats = {"collisions": 0, "fallbacks": 0}
    for title, text in zip(titles, texts):
        base = _encodable(title, tokenizer, encodable) or _encodable(text, tokenizer, encodable)
        if not base:
            base = FALLBACK_BASE
            stats["fallbacks"] += 1
        candidate = base
        if candidate in taken:
            counter = next_counter.get(base, 2)
            while f"{base} {counter}" in taken:
                counter += 1
            candidate, next_counter[base] = f"{base} {counter}", counter + 1
        stats["collisions"] += candidate != base
        taken.add(candidate)
        ids.append(candidate)
    return ids, stats


def _encodable(text: str, tokenizer: PreTrainedTokenizerBase, known: dict[str, bool], max_words: int = 32) -> str:
    kept = []
    for word in normalise(text, tokenizer).split():
        if word not in known:
            known[word] = round_trips(word, tokenizer)
        if known[word]:
            kept.append(word)
    return " ".join(kept[:max_words])


def random_ids(count: int, seed: int, taken: Collection[str] = ()) -> tuple[list[str], dict]:
    """P5-style random indexing: a seeded permutation of the ``count`` smallest numbers not in ``taken``."""
    taken = set(taken)
    numbers = []
    candidate = 1
    while len(numbers) < count:
        if str(candidate) not in taken:
            numbers.append(candidate)
        candidate += 1
    random.Random(seed).shuffle(numbers)
    return [str(n) for n in numbers], {"collisions": 0, "fallbacks": 0}
