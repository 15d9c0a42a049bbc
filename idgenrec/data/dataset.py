"""The prepared dataset: the one contract every model, baseline and evaluator reads.

Items and users are renumbered densely (``0..n-1``) in first-appearance order; the
original ids are kept for display and for the serving interface. Each user's sequence is
chronological (ties broken by file order). Leave-one-out:

    sequence = [i_0, ..., i_{n-3}, valid, test]
    training input  = sequence[:-2]
    validation      = predict sequence[-2] from sequence[:-2]
    test            = predict sequence[-1] from sequence[:-1]
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from idgenrec.atomic import atomic_directory, write_json

Split = str  # "valid" or "test"
SPLITS: tuple[Split, ...] = ("valid", "test")


@dataclass(frozen=True)
class SequenceDataset:
    name: str
    item_ids: list[str]  # original item id of each item index
    item_titles: list[str]  # title ("" when the item has none)
    item_texts: list[str]  # the text the ID generator reads
    user_ids: list[str]  # original user id of each user index
    sequences: list[list[int]]  # item indices per user, chronological
    stats: dict = field(default_factory=dict)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_interactions(self) -> int:
        return sum(len(s) for s in self.sequences)

    def train_sequence(self, user: int) -> list[int]:
        return self.sequences[user][:-2]

    def split_examples(self, split: Split) -> tuple[list[list[int]], list[int]]:
        """(inputs, targets) for every user under leave-one-out."""
        if split == "valid":
            return [s[:-2] for s in self.sequences], [s[-2] for s in self.sequences]
        if split == "test":
            return [s[:-1] for s in self.sequences], [s[-1] for s in self.sequences]
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")

    def sample_users(self, count: int | None, seed: int) -> "SequenceDataset":
        """The same catalogue with a fixed random subset of ``count`` users (all when ``None`` or too few)."""
        if count is None or count >= self.num_users:
            return self
        users = sorted(random.Random(seed).sample(range(self.num_users), count))
        return SequenceDataset(
            self.name, self.item_ids, self.item_titles, self.item_texts,
            [self.user_ids[u] for u in users], [self.sequences[u] for u in users], self.stats,
        )

    def item_index(self) -> dict[str, int]:
        return {item: index for index, item in enumerate(self.item_ids)}

    # -- persistence: artifacts/prepared/{items.tsv, sequences.tsv, stats.json} --------

    def save(self, folder: str | Path) -> None:
        with atomic_directory(folder) as tmp:
            pd.DataFrame(
                {"item_id": self.item_ids, "title": self.item_titles, "text": self.item_texts}
            ).to_csv(tmp / "items.tsv", sep="\t", index=False)
            pd.DataFrame(
                {
                    "user_id": self.user_ids,
                    "items": [" ".join(self.item_ids[i] for i in seq) for seq in self.sequences],
                }
            ).to_csv(tmp / "sequences.tsv", sep="\t", index=False)
            write_json(tmp / "stats.json", {"name": self.name, **self.stats})

    @classmethod
    def load(cls, folder: str | Path) -> "SequenceDataset":
        folder = Path(folder)
        missing = [f for f in ("items.tsv", "sequences.tsv", "stats.json") if not (folder / f).exists()]
        if missing:
            raise FileNotFoundError(f"{folder}: prepared dataset incomplete, missing {missing} (run `idgenrec data prepare`)")
        items = pd.read_csv(folder / "items.tsv", sep="\t", dtype=str, keep_default_na=False)
        users = pd.read_csv(folder / "sequences.tsv", sep="\t", dtype=str, keep_default_na=False)
        stats = json.loads((folder / "stats.json").read_text(encoding="utf-8"))
        index = {item: i for i, item in enumerate(items["item_id"])}
        sequences = []
        for row, line in enumerate(users["items"], start=2):
            try:
                sequences.append([index[i] for i in line.split()])
            except KeyError as err:
                raise ValueError(f"{folder / 'sequences.tsv'} line {row}: unknown item {err.args[0]!r}") from None
        return cls(
            name=stats.pop("name"),
            item_ids=list(items["item_id"]),
            item_titles=list(items["title"]),
            item_texts=list(items["text"]),
            user_ids=list(users["user_id"]),
            sequences=sequences,
            stats=stats,
        )
