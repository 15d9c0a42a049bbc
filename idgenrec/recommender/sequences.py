"""The causal recommender's input: a user's items written as textual IDs, one after another.

A sequence is ``[CLS] Sequence of items for the user : id ; id ; ... ; id ;``: each item's
ID tokens followed by the separator, which also ends an ID (the trie's end-of-ID token), so
the model predicts the next item by writing its ID and then ``;``. In training, one forward
pass over a window of up to ``history_length`` items gives the loss on the ID (and closing
separator) of every target item in it, each predicted from the items before it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from idgenrec.recommender.prompts import HISTORY_SEPARATOR, SEQUENCE_INSTRUCTION
from idgenrec.recommender.samples import (
    EncodedPrompt, TrainingSample, length_grouped_batches, pad_batch, seen_item_branches,
)


@dataclass(frozen=True)
class TrainingWindow:
    user: int
    items: tuple[int, ...]  # consecutive training items of the user, oldest first
    first_target: int  # items[first_target:] are this window's targets; the ones before are context only


def training_windows(train_sequences: Sequence[Sequence[int]], length: int, stride: int) -> list[TrainingWindow]:
    """Windows of up to ``length`` items that make every training item but each user's first a target once.

    Windows end every ``stride`` items from the end of a sequence (as SASRec's do); the last
    ``stride`` items of a window are its targets, the ones before are their context. The
    stride is capped at ``length - 1`` so each window's first target has an item before it.
    """
    step = max(1, min(stride, length - 1))
    windows = []
    for user, sequence in enumerate(train_sequences):
        end = len(sequence)
        while end > 1:
            start = max(0, end - length)
            first = max(1, end - step)
            windows.append(TrainingWindow(user, tuple(sequence[start:end]), first - start))
            end -= step
    return windows


@dataclass(frozen=True)
class EncodedSequence(EncodedPrompt):
    # labels[t]: the token at t + 1 where that token belongs to a target item's ID or its closing
    # separator, else -100 (next-token labels aligned with input_ids)
    labels: list[int] = ()
    # (position, token) where the ID of an item earlier in the sequence leaves a target's ID: the
    # token at that position that would start writing the already-seen item (empty unless asked for)
    seen_branches: tuple[tuple[int, int], ...] = ()
    # (position, item) for every target item: the position whose next-token label is the item's
    # first ID token, where the item-level loss scores the whole catalogue (training.item_loss)
    target_items: tuple[tuple[int, int], ...] = ()


class SequenceEncoder:
    """Token ids of item sequences, from a fixed item -> token-ids table (the causal twin of ``PromptEncoder``).

    ``max_tokens`` is the most positions the model has (MiniLM: 512); a longer sequence keeps
    its most recent items. At decoding, room is kept for the longest ID (``reserve``).
    """

    def __init__(self, tokenizer, item_tokens: Sequence[Sequence[int]], history_length: int, max_tokens: int | None = None):
        self.tokenizer = tokenizer
        self.item_tokens = [list(t) for t in item_tokens]
        self.history_length = history_length
        self.max_tokens = max_tokens
        separator = tokenizer(HISTORY_SEPARATOR.strip(), add_special_tokens=False)["input_ids"]
        if len(separator) != 1:
            raise ValueError(f"the separator {HISTORY_SEPARATOR.strip()!r} must be one token, the tokenizer gives {separator}")
        self.eos = separator[0]  # ends every ID: the trie's end-of-ID token
        clashing = [item for item, tokens in enumerate(self.item_tokens) if self.eos in tokens]
        if clashing:
            raise ValueError(f"{len(clashing)} item IDs contain the separator token (e.g. item {clashing[0]})")
        prefix = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []
        self.prefix = prefix + tokenizer(SEQUENCE_INSTRUCTION, add_special_tokens=False)["input_ids"]
        self.reserve = max((len(t) + 1 for t in self.item_tokens), default=0)

    def target(self, item: int) -> list[int]:
        """The tokens the model writes for ``item``: its ID, then the separator."""
        return self.item_tokens[item] + [self.eos]

    def _fit(self, items: Sequence[int], reserve: int) -> list[int]:
        """The most recent of ``items`` whose tokens fit ``max_tokens`` with ``reserve`` positions to spare."""
        items = list(items)
        if self.max_tokens is None:
            return items
        budget = self.max_tokens - reserve - len(self.prefix)
        kept, used = 0, 0
        for item in reversed(items):
            used += len(self.item_tokens[item]) + 1
            if used > budget:
                break
            kept += 1
        if kept == 0 and items:
            raise ValueError(
                f"the most recent item's ID alone does not fit the recommender's {self.max_tokens} positions"
            )
        return items[len(items) - kept :]

    def encode(self, history: Sequence[int], template: int = 0, user_id: str = "") -> EncodedPrompt:
        """The decoding input for the last ``history_length`` items of ``history``: ends with a separator,
        where the next ID starts. ``template`` and ``user_id`` exist for the seq2seq encoder's signature."""
        del template, user_id
        return self.encode_items(self._fit(list(history)[-self.history_length :], self.reserve))

    def encode_items(
        self, items: Sequence[int], first_target: int | None = None, seen_branches: bool = False
    ) -> EncodedSequence:
        """``items`` as a sequence; with ``first_target``, labels on ``items[first_target:]``.

        ``seen_branches`` also lists, for every target, where each item before it in the
        sequence branches off its ID (``training.seen_unlikelihood``).
        """
        ids = list(self.prefix)
        spans: list[tuple[int, int, int]] = []
        targeted: list[bool] = [False] * len(ids)
        for position, item in enumerate(items):
            start = len(ids)
            ids += self.item_tokens[item]
            spans.append((start, len(ids), item))
            ids.append(self.eos)
            is_target = first_target is not None and position >= first_target
            targeted += [is_target] * (len(ids) - start)
        labels = [ids[t + 1] if targeted[t + 1] else -100 for t in range(len(ids) - 1)] + [-100]
        branches: tuple[tuple[int, int], ...] = ()
        if seen_branches and first_target is not None:
            targets = range(first_target, len(items))
            found = seen_item_branches(
                [self.target(items[p]) for p in targets], [[self.target(i) for i in items[:p]] for p in targets]
            ).tolist()
            # Step s of a target's tokens is predicted at the position before it: its span's start - 1 + s.
            branches = tuple((spans[first_target + row][0] - 1 + step, token) for row, step, token in found)
        first = len(items) if first_target is None else first_target
        target_items = tuple((start - 1, item) for start, _, item in spans[first:])
        return EncodedSequence(ids, spans, labels, branches, target_items)

    def encode_window(self, window: TrainingWindow, seen_branches: bool = False) -> EncodedSequence:
        """A training window; too long for the positions, it keeps its most recent items (targets stay last)."""
        kept = self._fit(window.items, reserve=0)
        dropped = len(window.items) - len(kept)
        return self.encode_items(kept, max(window.first_target - dropped, 1), seen_branches)

    def encode_sample(self, sample: TrainingSample) -> tuple[EncodedSequence, int]:
        """An ID-phase input: the sample's history then its target (labelled); returns it and the number of
        target tokens at its end (the history's items are replaced by soft IDs, which changes their length)."""
        history = self._fit(sample.history, reserve=len(self.target(sample.target)))
        encoded = self.encode_items([*history, sample.target], first_target=len(history))
        # Only the history's items are spans to replace: the target stays as the tokens it is scored on.
        return EncodedSequence(encoded.input_ids, encoded.item_spans[:-1], encoded.labels), len(self.target(sample.target))


@dataclass
class SequenceBatch:
    input_ids: torch.Tensor  # (B, T), right-padded with the pad id
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T) next-token labels, -100 where there is no target
    # (N, 3) rows of (sequence, position, token) from EncodedSequence.seen_branches; None when off
    seen_branches: torch.Tensor | None = None
    # (M, 3) rows of (sequence, position, item) from EncodedSequence.target_items; None when off
    target_items: torch.Tensor | None = None
    # (I, L) every item's ID tokens, padded with -1: what target_items' items index (None when off)
    catalogue: torch.Tensor | None = None
    # (P, 2) rows of (target, item): each target_items row's earlier items in its sequence, itself
    # left out (training.item_seen_unlikelihood); None when off
    seen_items: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.input_ids.size(0)


def collate_sequences(
    sequences: Sequence[EncodedSequence], pad_id: int, seen_branches: bool = False,
    catalogue: torch.Tensor | None = None,
) -> SequenceBatch:
    """A batch of ``sequences``; with ``catalogue`` (:func:`~idgenrec.recommender.item_scores.catalogue_tokens`), their target items too."""
    input_ids = pad_batch([s.input_ids for s in sequences], pad_id)
    labels = pad_batch([s.labels for s in sequences], -100)
    return SequenceBatch(
        input_ids, (input_ids != pad_id).long(), labels,
        _rows(sequences, "seen_branches") if seen_branches else None,
        _rows(sequences, "target_items") if catalogue is not None else None,
        catalogue,
        _seen_items(sequences) if catalogue is not None else None,
    )


def _rows(sequences: Sequence[EncodedSequence], field: str) -> torch.Tensor:
    """(N, 3) rows of (sequence, *pair) over every sequence's ``field`` pairs."""
    rows = [(row, *pair) for row, s in enumerate(sequences) for pair in getattr(s, field)]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 3)


def _seen_items(sequences: Sequence[EncodedSequence]) -> torch.Tensor:
    """(P, 2) rows of (target, item) over every sequence's targets, in ``target_items`` order."""
    rows, target = [], 0
    for s in sequences:
        items = [item for _, _, item in s.item_spans]
        first = len(items) - len(s.target_items)
        for index in range(first, len(items)):
            rows += [(target, item) for item in set(items[:index]) - {items[index]}]
            target += 1
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 2)


def window_batches(
    encoder: SequenceEncoder, windows: Sequence[TrainingWindow], indices: Sequence[int], batch_size: int,
    rng: random.Random, pad_id: int, seen_branches: bool = False, catalogue: torch.Tensor | None = None,
) -> Iterator[SequenceBatch]:
    """Batches of ``batch_size`` windows, grouped by length (little padding), in random order."""
    encoded = [encoder.encode_window(windows[i], seen_branches) for i in indices]
    for batch in length_grouped_batches([len(s.input_ids) for s in encoded], batch_size, rng):
        yield collate_sequences([encoded[i] for i in batch], pad_id, seen_branches, catalogue)
