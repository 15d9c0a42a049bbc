"""The item -> textual ID table (a DVC-tracked artifact) and its quality metrics."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase

from idgenrec.atomic import atomic_write
from idgenrec.data.dataset import SequenceDataset
from idgenrec.ids.text import words

HEADER = ["item_id", "textual_id", "num_tokens", "num_words"]


@dataclass
class ItemIdTable:
    item_ids: list[str]  # original item id, aligned with SequenceDataset's item index
    textual_ids: list[str]

    def __post_init__(self) -> None:
        if len(self.item_ids) != len(self.textual_ids):
            raise ValueError(f"{len(self.item_ids)} item ids but {len(self.textual_ids)} textual ids")

    def __len__(self) -> int:
        return len(self.item_ids)

    def token_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[list[int]]:
        """Each ID's tokens, without special tokens (the trie appends eos itself); one batched call,
        not a call per ID (a million IDs: seconds, not minutes)."""
        if not self.textual_ids:
            return []
        return tokenizer(self.textual_ids, add_special_tokens=False)["input_ids"]

    def id_of(self, item_id: str) -> str:
        try:
            return self.textual_ids[self.item_ids.index(item_id)]
        except ValueError:
            raise KeyError(f"item {item_id!r} is not in the ID table") from None

    def check_aligned(self, dataset: SequenceDataset) -> None:
        if self.item_ids != dataset.item_ids:
            raise ValueError(
                f"ID table ({len(self)} items) does not match dataset {dataset.name!r} ({dataset.num_items} items, same order)"
            )

    def save(self, path: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        """TSV with a header; token counts need the tokenizer (-1 when not given)."""
        counts = [len(t) for t in self.token_ids(tokenizer)] if tokenizer is not None else [-1] * len(self)
        with atomic_write(path) as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
            writer.writerow(HEADER)
            for item, text, count in zip(self.item_ids, self.textual_ids, counts):
                writer.writerow([item, text, count, len(text.split())])

    @classmethod
    def load(cls, path: str | Path) -> "ItemIdTable":
        """Read and validate: header, non-empty and unique IDs and item ids; errors name the line."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ID table not found (run `idgenrec ids generate`)")
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t"))
        if not rows or rows[0][:2] != HEADER[:2]:
            raise ValueError(f"{path} line 1: expected header {HEADER}, got {rows[0] if rows else 'an empty file'}")
        item_ids, textual_ids = [], []
        first_line: dict[str, int] = {}
        for line, row in enumerate(rows[1:], start=2):
            if len(row) < 2:
                raise ValueError(f"{path} line {line}: expected {len(HEADER)} tab-separated fields, got {row}")
            item, text = row[0], row[1]
            if not item or not text.strip():
                raise ValueError(f"{path} line {line}: empty item_id or textual_id")
            for key, kind in ((f"item:{item}", "item_id"), (f"id:{text}", "textual_id")):
                if key in first_line:
                    raise ValueError(f"{path} line {line}: duplicate {kind} {key.split(':', 1)[1]!r} (first on line {first_line[key]})")
                first_line[key] = line
            item_ids.append(item)
            textual_ids.append(text)
        return cls(item_ids=item_ids, textual_ids=textual_ids)


def id_quality(table: ItemIdTable, dataset: SequenceDataset, tokenizer: PreTrainedTokenizerBase) -> dict:
    """ID quality: size, uniqueness, lengths, and how much of each ID is the item's own words
    (an ID built from the item's text is readable and carries over to items never trained on)."""
    table.check_aligned(dataset)
    token_lengths = np.array([len(t) for t in table.token_ids(tokenizer)], dtype=float)
    word_lists = [text.split() for text in table.textual_ids]
    word_lengths = np.array([len(w) for w in word_lists], dtype=float)
    own = total = 0
    for id_words, title, text in zip(word_lists, dataset.item_titles, dataset.item_texts):
        vocabulary = set(words(f"{title} {text}", tokenizer))
        own += sum(w in vocabulary for w in id_words)
        total += len(id_words)
    n = len(table)
    return {
        "items": n,
        "unique_ratio": len(set(table.textual_ids)) / n if n else 1.0,
        "empty_ids": sum(not t.strip() for t in table.textual_ids),
        "mean_tokens": _round(token_lengths.mean()) if n else 0.0,
        "p95_tokens": _round(np.percentile(token_lengths, 95)) if n else 0.0,
        "max_tokens": int(token_lengths.max()) if n else 0,
        "mean_words": _round(word_lengths.mean()) if n else 0.0,
        "p95_words": _round(np.percentile(word_lengths, 95)) if n else 0.0,
        "max_words": int(word_lengths.max()) if n else 0,
        "own_word_fraction": _round(own / total) if total else 0.0,
    }


def _round(value: float) -> float:
    return round(float(value), 4)
