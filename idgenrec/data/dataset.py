"""The prepared dataset: the one contract every model, baseline and evaluator reads.

Items and users are renumbered densely (``0..n-1``) in first-appearance order; the
original ids are kept for display and for the serving interface. Each user's sequence is
chronological (ties broken by file order). Leave-one-out:

    sequence = [i_0, ..., i_{n-3}, valid, test]
    training input  = sequence[:-2]
    validation      = predict sequence[-2] from sequence[:-2]
    test            = predict sequence[-1] from sequence[:-1]

Several datasets combine into one (:func:`combine`, ``data.combine_with``): their items and users
are keyed ``name:id`` so ids may repeat across datasets, and ``stats["datasets"]`` lists each
one's own stats in order; :meth:`SequenceDataset.parts` says which users and items are whose.

Ids are any non-empty text without tabs or line breaks (what RecBole's tab-separated files
can hold): titles with spaces, quotes and non-ASCII letters work. The saved files are
tab-separated without quoting, like the raw files; ``sequences.tsv`` lists a user's items
separated by spaces, so there an id's whitespace and ``%`` are percent-encoded
(``"Toy Story"`` -> ``Toy%20Story``; ids without either are written as they are).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

from idgenrec.atomic import atomic_directory, write_json
from idgenrec.data.textfile import DataFormatError, read_delimited

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
        """The same catalogue with a fixed random subset of ``count`` users (all when ``None`` or too few).

        A combined dataset samples ``count`` users of each of its datasets: the same users as the
        dataset on its own, so a small dataset is not drowned by a large one.
        """
        if count is None:
            return self
        parts = self.parts()
        if parts:
            users = sorted(part.users[i] for part in parts for i in _subset(len(part.users), count, seed))
        else:
            users = _subset(self.num_users, count, seed)
        if len(users) == self.num_users:
            return self
        return SequenceDataset(
            self.name, self.item_ids, self.item_titles, self.item_texts,
            [self.user_ids[u] for u in users], [self.sequences[u] for u in users], self.stats,
        )

    def item_index(self) -> dict[str, int]:
        return {item: index for index, item in enumerate(self.item_ids)}

    # -- several datasets in one -------------------------------------------------------

    def parts(self) -> list["DatasetPart"]:
        """The datasets combined into this one, with their users and items (empty for a single dataset)."""
        names = [entry["name"] for entry in self.stats.get("datasets", [])]
        if not names:
            return []
        users: dict[str, list[int]] = {name: [] for name in names}
        items: dict[str, list[int]] = {name: [] for name in names}
        for kind, ids, found in (("user", self.user_ids, users), ("item", self.item_ids, items)):
            for index, key in enumerate(ids):
                name = key.split(KEY_SEPARATOR, 1)[0]
                if name not in found:
                    raise ValueError(f"{self.name}: {kind} {key!r} is not keyed by one of the combined datasets {names}")
                found[name].append(index)
        return [DatasetPart(name, users[name], items[name]) for name in names]

    def part(self, name: str) -> "SequenceDataset":
        """Dataset ``name`` of a combined one on its own: its own ids, items renumbered, its own stats."""
        found = {p.name: p for p in self.parts()}
        if name not in found:
            raise KeyError(f"{self.name}: no combined dataset {name!r} (has {sorted(found)})")
        part = found[name]
        renumbered = {item: index for index, item in enumerate(part.items)}
        prefix = len(name) + len(KEY_SEPARATOR)
        stats = next(dict(entry) for entry in self.stats["datasets"] if entry["name"] == name)
        stats.pop("name")
        return SequenceDataset(
            name=name,
            item_ids=[self.item_ids[i][prefix:] for i in part.items],
            item_titles=[self.item_titles[i] for i in part.items],
            item_texts=[self.item_texts[i] for i in part.items],
            user_ids=[self.user_ids[u][prefix:] for u in part.users],
            sequences=[[renumbered[i] for i in self.sequences[u]] for u in part.users],
            stats=stats,
        )

    # -- persistence: artifacts/prepared/{items.tsv, sequences.tsv, stats.json} --------

    def save(self, folder: str | Path) -> None:
        with atomic_directory(folder) as tmp:
            _write_tsv(tmp / "items.tsv", ["item_id", "title", "text"], zip(self.item_ids, self.item_titles, self.item_texts))
            rows = ((user, " ".join(encode_id(self.item_ids[i]) for i in seq)) for user, seq in zip(self.user_ids, self.sequences))
            _write_tsv(tmp / "sequences.tsv", ["user_id", "items"], rows)
            write_json(tmp / "stats.json", {"name": self.name, **self.stats})

    @classmethod
    def load(cls, folder: str | Path) -> "SequenceDataset":
        """Read a prepared folder; a damaged file is a :class:`DataFormatError` naming it, its line and field."""
        folder = Path(folder)
        missing = [f for f in ("items.tsv", "sequences.tsv", "stats.json") if not (folder / f).exists()]
        if missing:
            raise FileNotFoundError(f"{folder}: prepared dataset incomplete, missing {missing} (run `idgenrec data prepare`)")
        items = _read_tsv(folder / "items.tsv", ["item_id", "title", "text"])
        users = _read_tsv(folder / "sequences.tsv", ["user_id", "items"])
        stats_path = folder / "stats.json"
        try:
            stats = json.loads(stats_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataFormatError(stats_path, None, None, f"not valid JSON ({err}); rerun `idgenrec data prepare`") from None
        if not isinstance(stats, dict) or not isinstance(stats.get("name"), str):
            raise DataFormatError(stats_path, None, "name", "expected a JSON object with the dataset's `name`")
        item_ids = [row[0] for row in items]
        index: dict[str, int] = {}
        for line, item in enumerate(item_ids, start=2):
            if not item or item in index:
                problem = "empty item id" if not item else f"duplicate item {item!r} (first on line {index[item] + 2})"
                raise DataFormatError(folder / "items.tsv", line, "item_id", problem)
            index[item] = line - 2
        sequences = []
        for line, (_, text) in enumerate(users, start=2):
            try:
                sequences.append([index[decode_id(i)] for i in text.split()])
            except KeyError as err:
                raise DataFormatError(folder / "sequences.tsv", line, "items", f"unknown item {err.args[0]!r}") from None
        return cls(
            name=stats.pop("name"),
            item_ids=item_ids,
            item_titles=[row[1] for row in items],
            item_texts=[row[2] for row in items],
            user_ids=[row[0] for row in users],
            sequences=sequences,
            stats=stats,
        )


def _subset(size: int, count: int, seed: int) -> list[int]:
    """``count`` of ``range(size)`` at random (``seed``), sorted; all of them when there are no more."""
    return list(range(size)) if count >= size else sorted(random.Random(seed).sample(range(size), count))


KEY_SEPARATOR = ":"  # `name:id`: an item or user of a combined dataset


@dataclass(frozen=True)
class DatasetPart:
    """One dataset of a combined one: its name, and the indices of its users and items there."""

    name: str
    users: list[int]
    items: list[int]


def combine(datasets: Sequence[SequenceDataset]) -> SequenceDataset:
    """One dataset holding every one of ``datasets``: ids keyed ``name:id``, in order, each one's stats kept."""
    names = [d.name for d in datasets]
    if len(set(names)) != len(names):
        raise ValueError(f"datasets to combine need distinct names, got {names}")
    item_ids, titles, texts, user_ids, sequences = [], [], [], [], []
    for dataset in datasets:
        offset = len(item_ids)
        item_ids += [f"{dataset.name}{KEY_SEPARATOR}{item}" for item in dataset.item_ids]
        titles += dataset.item_titles
        texts += dataset.item_texts
        user_ids += [f"{dataset.name}{KEY_SEPARATOR}{user}" for user in dataset.user_ids]
        sequences += [[offset + i for i in sequence] for sequence in dataset.sequences]
    stats = {
        "users": len(user_ids),
        "items": len(item_ids),
        "interactions": sum(len(s) for s in sequences),
        "datasets": [{"name": d.name, **d.stats} for d in datasets],
    }
    return SequenceDataset("+".join(names), item_ids, titles, texts, user_ids, sequences, stats)


def encode_id(item: str) -> str:
    """An id as one space-free token of ``sequences.tsv``: whitespace and ``%`` percent-encoded."""
    if not any(ch.isspace() or ch == "%" for ch in item):
        return item
    return "".join(quote(ch, safe="") if ch.isspace() or ch == "%" else ch for ch in item)


def decode_id(token: str) -> str:
    return unquote(token) if "%" in token else token


def _write_tsv(path: Path, header: list[str], rows) -> None:
    """Tab-separated, no quoting; a tab or line break inside a field would shift columns, so it is an error."""
    lines = ["\t".join(header)]
    for row in rows:
        for name, value in zip(header, row):
            if any(ch in value for ch in "\t\n\r"):
                raise ValueError(f"{path.name}: {name} {value!r} contains a tab or line break")
        lines.append("\t".join(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _read_tsv(path: Path, header: Sequence[str]) -> list[list[str]]:
    names, rows = read_delimited(path, "\t")
    if names != list(header):
        raise DataFormatError(path, 1, "header", f"expected columns {list(header)}, found {names}; rerun `idgenrec data prepare`")
    return [row.fields for row in rows]
