"""New items for a trained model without training (zero-shot): IDs, vocabulary and trie grow.

IDs are words, so an item the model never saw can join it: the bundled ID generator
writes the new item's ID from its text, by default from that text's own tokens only (or
the title / a fresh number for the other ID kinds), unique against the IDs the model knows. A pruned vocabulary would split the new
words into letters, so the tokenizer first takes back the MiniLM tokens they need, and
both models get embedding rows for them (see ``grow_embeddings``). The recommender can
then read the new items in histories and recommend them; nothing is trained.
:func:`for_catalogue` does the same for a whole other catalogue, in place of the model's own.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from idgenrec.backbone.seq2seq import grow_embeddings
from idgenrec.backbone.vocabulary import grow_tokenizer
from idgenrec.config import IdConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.data.textfile import DataFormatError, read_delimited
from idgenrec.ids.kinds import IdKind, ids_of_kind
from idgenrec.ids.table import ItemIdTable
from idgenrec.recommender.model import IDGenRecModel


@dataclass(frozen=True)
class NewItems:
    item_ids: list[str]
    titles: list[str]
    texts: list[str]

    def __len__(self) -> int:
        return len(self.item_ids)


def read_new_items(path: str | Path) -> NewItems:
    """Items from a tab-separated file with a header: ``item_id``, ``text`` and optionally ``title``.

    A prepared dataset's ``items.tsv`` has this layout. An empty text falls back to the
    title; a duplicate item id, or an item with neither, is an error naming its line.
    """
    path = Path(path)
    names, rows = read_delimited(path, "\t")
    missing = [name for name in ("item_id", "text") if name not in names]
    if missing:
        raise DataFormatError(path, 1, missing[0], f"no column {missing[0]!r}; the header has {names}")
    item_col, text_col = names.index("item_id"), names.index("text")
    title_col = names.index("title") if "title" in names else None
    first_line: dict[str, int] = {}
    items = NewItems([], [], [])
    for row in rows:
        item = row.fields[item_col].strip()
        title = row.fields[title_col].strip() if title_col is not None else ""
        text = row.fields[text_col].strip() or title
        if not item:
            raise DataFormatError(path, row.line, "item_id", "empty item id")
        if item in first_line:
            raise DataFormatError(path, row.line, "item_id", f"duplicate item {item!r} (first on line {first_line[item]})")
        if not text:
            raise DataFormatError(path, row.line, "text", f"item {item!r} has neither text nor title to write its ID from")
        first_line[item] = row.line
        items.item_ids.append(item)
        items.titles.append(title)
        items.texts.append(text)
    return items


def add_items(
    model: IDGenRecModel,
    items: NewItems,
    kind: IdKind,
    config: IdConfig,
    progress: bool = True,
    own_tokens: bool = True,
) -> tuple[IDGenRecModel, dict]:
    """A copy of ``model`` that also knows ``items`` (those it already has are skipped), and what was done.

    ``kind`` is the ID kind the model was trained with (``ids.kind``); ``config`` the ID
    generation settings. The given model is left unchanged. ``own_tokens`` (learned IDs):
    the generator may only write tokens of the item's own text. Unconstrained, a generator
    warmed up on the old catalogue writes old titles for new ones (ML-100k: "Clockers" ->
    "clockwork orange 1995 drama"; 64% of the new IDs' words were the item's own).
    """
    known = set(model.id_table.item_ids)
    fresh = [i for i, item in enumerate(items.item_ids) if item not in known]
    stats: dict = {"items_added": len(fresh), "items_already_known": len(items) - len(fresh), "tokens_added": 0}
    if not fresh:
        return model, stats
    if kind == "learned" and model.generator is None:
        raise ValueError("learned IDs for new items need the model's ID generator, and this model folder has none")
    titles = [items.titles[i] for i in fresh]
    texts = [items.texts[i] for i in fresh]
    tokenizer, recommender, generator, vocabulary = _with_words_of(model, titles, texts)
    stats.update(vocabulary)
    ids, id_stats = ids_of_kind(
        kind, titles, texts, generator, tokenizer, config, progress, taken=model.id_table.textual_ids, own_tokens=own_tokens
    )
    stats["ids"] = id_stats
    table = ItemIdTable(
        item_ids=[*model.id_table.item_ids, *(items.item_ids[i] for i in fresh)],
        textual_ids=[*model.id_table.textual_ids, *ids],
    )
    grown = IDGenRecModel(recommender, tokenizer, table, model.settings, generator)
    if grown.item_tokens[: len(model.id_table)] != model.item_tokens:  # grow_tokenizer's promise; the recommender depends on it
        raise RuntimeError("adding tokens changed the tokens of a known item's ID")
    return grown, stats


def _with_words_of(model: IDGenRecModel, titles: Sequence[str], texts: Sequence[str]) -> tuple:
    """(tokenizer, recommender, generator, stats): copies of the model's that also read these texts' words.

    The model's own tokens keep their ids and embedding rows; new tokens get rows mapped from the
    pretrained model's (``grow_embeddings``).
    """
    tokenizer, added = grow_tokenizer(model.tokenizer, [*texts, *titles], keep=model.id_table.textual_ids)
    known_tokens = model.tokenizer.convert_ids_to_tokens(list(range(len(model.tokenizer))))
    recommender = copy.deepcopy(model.recommender)
    grow_embeddings(recommender, known_tokens, added)
    generator = None
    if model.generator is not None:
        generator = copy.deepcopy(model.generator)
        grow_embeddings(generator, known_tokens, added)
    stats = {"tokens_added": len(added),
             "texts_with_unknown_tokens": {"before": _with_unknown(model.tokenizer, texts), "after": _with_unknown(tokenizer, texts)}}
    return tokenizer, recommender, generator, stats


def for_catalogue(
    model: IDGenRecModel,
    dataset: SequenceDataset,
    kind: IdKind,
    config: IdConfig,
    progress: bool = True,
    own_tokens: bool = True,
) -> tuple[IDGenRecModel, dict]:
    """The trained model over ``dataset``'s catalogue in place of its own, without training (zero-shot transfer).

    Every item of ``dataset`` gets an ID of ``kind`` from its text, unique within the new
    catalogue: learned IDs come from the trained generator (``own_tokens``: from tokens of the
    item's own text, as for new items). The vocabulary grows with the new words as it does for
    new items; the recommender is the trained one, reading histories of the new IDs. Items
    without text are refused: their IDs could only be the fallback text's words.
    """
    fallback = dataset.stats.get("fallback_text")  # what preparation wrote for an item without text
    without = [item for item, text in zip(dataset.item_ids, dataset.item_texts)
               if fallback and text == fallback.format(item_id=item)]
    if without:
        raise ValueError(f"{dataset.name}: {len(without)} items have no text (e.g. {without[:5]}); zero-shot IDs are "
                         "written from each item's text: give them text (data.text_fields) or drop them")
    if kind == "learned" and model.generator is None:
        raise ValueError("learned IDs for another catalogue need the model's ID generator, and this model folder has none")
    titles, texts = list(dataset.item_titles), list(dataset.item_texts)
    tokenizer, recommender, generator, stats = _with_words_of(model, titles, texts)
    ids, id_stats = ids_of_kind(kind, titles, texts, generator, tokenizer, config, progress, own_tokens=own_tokens)
    table = ItemIdTable(item_ids=list(dataset.item_ids), textual_ids=ids)
    return IDGenRecModel(recommender, tokenizer, table, model.settings, generator), {"items": len(ids), **stats, "ids": id_stats}


def _with_unknown(tokenizer, texts: Sequence[str]) -> int:
    unk = tokenizer.unk_token_id
    return sum(unk in ids for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"])
