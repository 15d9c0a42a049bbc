"""Raw data -> the prepared :class:`SequenceDataset` (the protocol every number uses).

1. implicit feedback: every interaction counts, whatever its rating;
2. iterative k-core: drop users and items with fewer than k interactions until none is left
   (dropping an item can push a user under k, and back);
3. each user's history in time order, ties broken by file order (ML-100k has many equal
   time stamps: without a tie rule the split would depend on the sort algorithm);
4. users and items renumbered in order of first appearance in the file (deterministic, and
   the order RecBole's remapping gives);
5. item text ``field: value; field: value`` from ``data.text_fields``; empty fields are
   skipped and counted; an item without a text row gets ``data.fallback_text`` (counted,
   never dropped).

Leave-one-out itself is the dataset's own view (:meth:`SequenceDataset.split_examples`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from idgenrec.config import DataSource
from idgenrec.data.dataset import SequenceDataset, combine
from idgenrec.data.readers import RawDataset, read_raw
from idgenrec.data.textfile import DataFormatError

EXAMPLES = 10  # ids listed in stats.json next to a count, to make it checkable


@dataclass(frozen=True)
class KCoreResult:
    interactions: pd.DataFrame
    iterations: int  # passes that removed something (0: the data already was a k-core)


def k_core(interactions: pd.DataFrame, k: int) -> KCoreResult:
    """Keep the largest subset where every user and every item has >= ``k`` interactions."""
    frame = interactions
    iterations = 0
    while True:
        user_counts = frame["user"].map(frame["user"].value_counts())
        item_counts = frame["item"].map(frame["item"].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            return KCoreResult(frame, iterations)
        frame = frame[keep]
        iterations += 1
        if frame.empty:
            return KCoreResult(frame, iterations)


def chronological(interactions: pd.DataFrame) -> pd.DataFrame:
    """Rows grouped by user (users in first-appearance order), each user's rows by
    (timestamp, file order). ``order`` is unique, so the result does not depend on the
    sort algorithm's stability."""
    user_rank = pd.Series(pd.factorize(interactions["user"])[0], index=interactions.index)
    keys = interactions.assign(_user_rank=user_rank)
    return keys.sort_values(["_user_rank", "timestamp", "order"]).drop(columns="_user_rank")


def item_texts(
    items: list[str], table: pd.DataFrame, fields: list[str], fallback: str
) -> tuple[list[str], list[str], dict]:
    """(titles, texts, counts) for ``items``; see the module docstring for the rules."""
    rows = {record["item"]: record for record in table.to_dict("records")}
    titles, texts = [], []
    missing = {field: 0 for field in fields}
    without_row: list[str] = []
    empty_text: list[str] = []
    for item in items:
        row = rows.get(item)
        if row is None:
            without_row.append(item)
            titles.append("")
            texts.append(fallback.format(item_id=item))
            continue
        parts = []
        for field in fields:
            value = _one_line(row.get(field))
            if value:
                parts.append(f"{field}: {value}")
            else:
                missing[field] += 1
        titles.append(_one_line(row.get("title")))
        if not parts:
            empty_text.append(item)
        texts.append("; ".join(parts) if parts else fallback.format(item_id=item))
    counts = {
        "missing_fields": missing,
        "items_without_text": len(without_row),
        "items_without_text_examples": without_row[:EXAMPLES],
        "items_with_empty_text": len(empty_text),
        "items_with_empty_text_examples": empty_text[:EXAMPLES],
    }
    return titles, texts, counts


def _one_line(value) -> str:
    """A text field as one line of a tab-separated file (tabs and carriage returns become spaces)."""
    return str(value or "").replace("\t", " ").replace("\r", " ").strip()


def build_dataset(raw: RawDataset, config: DataSource) -> SequenceDataset:
    """The prepared dataset and its stats, in memory."""
    kept = k_core(raw.interactions, config.k_core)
    if kept.interactions.empty:
        raw_counts = _counts(raw.interactions)
        raise DataFormatError(
            raw.interactions_file, None, "data.k_core",
            f"{config.k_core}-core filtering leaves no interactions (before filtering: {raw_counts['users']} users, "
            f"{raw_counts['items']} items, {raw_counts['interactions']} interactions); lower data.k_core or add data",
        )
    ordered = chronological(kept.interactions)
    # First appearance in the file (not in the sorted order): RecBole's remapping order.
    in_file_order = kept.interactions
    user_ids = list(pd.unique(in_file_order["user"]))
    item_ids = list(pd.unique(in_file_order["item"]))
    item_index = {item: i for i, item in enumerate(item_ids)}
    sequences_by_user = ordered.groupby("user", sort=False)["item"].agg(list)
    sequences = [[item_index[i] for i in sequences_by_user[user]] for user in user_ids]
    titles, texts, text_counts = item_texts(item_ids, raw.item_text, list(config.text_fields), config.fallback_text)
    stats = {
        "format": config.format,
        "source": str(config.path),
        "interactions_file": str(raw.interactions_file),
        "item_file": str(raw.item_file) if raw.item_file else None,
        "time": raw.time_kind,
        "raw": _counts(raw.interactions),
        "k_core": config.k_core,
        "k_core_iterations": kept.iterations,
        "users": len(user_ids),
        "items": len(item_ids),
        "interactions": int(len(ordered)),
        "text_fields": list(config.text_fields),
        "fallback_text": config.fallback_text,
        **text_counts,
    }
    return SequenceDataset(
        name=config.name, item_ids=item_ids, item_titles=titles, item_texts=texts,
        user_ids=user_ids, sequences=sequences, stats=stats,
    )


def prepare(config: DataSource, output: str | Path) -> SequenceDataset:
    """Read, prepare and save to ``output`` (atomically: all of it or nothing).

    With ``data.combine_with``, each dataset is prepared on its own (its own k-core) and the
    results are combined (:func:`~idgenrec.data.dataset.combine`).
    """
    datasets = [build_dataset(read_raw(source), source) for source in config.sources]
    dataset = datasets[0] if len(datasets) == 1 else combine(datasets)
    dataset.save(output)
    return dataset


def _counts(interactions: pd.DataFrame) -> dict[str, int]:
    return {
        "users": int(interactions["user"].nunique()),
        "items": int(interactions["item"].nunique()),
        "interactions": int(len(interactions)),
    }
