"""Turn users' histories into tokenized prompts, without re-tokenizing text per sample.

Each template is tokenized once as fixed pieces around ``{user}`` and ``{history}``;
each item's textual ID is tokenized once. A prompt is then a concatenation of token
lists, and we know exactly which positions hold which history item (the soft-ID phase
replaces those positions with differentiable embeddings).
"""

from __future__ import annotations

import heapq
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from idgenrec.recommender.prompts import ANONYMOUS_USER, HISTORY_SEPARATOR, TEMPLATES, draw_template

_PLACEHOLDER = re.compile(r"(\{user\}|\{history\})")


@dataclass(frozen=True)
class EncodedPrompt:
    input_ids: list[int]
    # (start, end, item) for each history item's ID tokens inside input_ids, oldest first
    item_spans: list[tuple[int, int, int]]


def end_of_sequence_id(tokenizer) -> int:
    """The token that ends a seq2seq model's output: eos (T5), else [SEP] (BERT)."""
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if eos is None:
        raise ValueError("the tokenizer defines neither an eos nor a sep token; decoding needs one")
    return eos


class PromptEncoder:
    """Builds token-id prompts from item indices using a fixed item -> token-ids table.

    ``max_tokens`` is the most tokens the recommender's encoder reads (MiniLM's learned positions:
    512; see ``backbone.prompt_token_limit``). A longer prompt keeps its most recent items that
    fit: long textual IDs (a Beauty product's title is up to 40 tokens) times a history of 20
    would otherwise overflow the position table mid-training.
    """

    def __init__(self, tokenizer, item_tokens: Sequence[Sequence[int]], history_length: int, max_tokens: int | None = None):
        self.tokenizer = tokenizer
        self.item_tokens = [list(t) for t in item_tokens]
        self.history_length = history_length
        self.max_tokens = max_tokens
        self.eos = end_of_sequence_id(tokenizer)
        # BERT-style encoders expect [CLS] ... [SEP]; T5 expects ... </s>.
        self.prefix = [tokenizer.cls_token_id] if tokenizer.cls_token_id is not None else []
        self.suffix = [tokenizer.sep_token_id if tokenizer.sep_token_id is not None else self.eos]
        self.separator = self._tokens(HISTORY_SEPARATOR.strip())
        self.anonymous_user = self._tokens(ANONYMOUS_USER)
        self.templates = [self._split_template(t) for t in TEMPLATES]

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _split_template(self, template: str) -> list[str | list[int]]:
        pieces: list[str | list[int]] = []
        for piece in _PLACEHOLDER.split(template):
            if piece in ("{user}", "{history}"):
                pieces.append(piece)
            elif piece.strip():
                pieces.append(self._tokens(piece.strip()))
        return pieces

    def target(self, item: int) -> list[int]:
        return self.item_tokens[item] + [self.eos]

    def encode(self, history: Sequence[int], template: int = 0, user_id: str = "") -> EncodedPrompt:
        """The prompt for the last ``history_length`` items of ``history`` (fewer if ``max_tokens`` says so).

        ``user`` then the user's ID if given.
        """
        history = list(history)[-self.history_length :]
        prompt = self._encode(history, template, user_id)
        while self.max_tokens is not None and len(prompt.input_ids) > self.max_tokens:
            if not history:
                raise ValueError(
                    f"template {template} with user ID {user_id!r} is {len(prompt.input_ids)} tokens without any "
                    f"history, more than the recommender's {self.max_tokens} positions"
                )
            history = history[1:]  # the oldest item goes first
            prompt = self._encode(history, template, user_id)
        return prompt

    def _encode(self, history: Sequence[int], template: int, user_id: str) -> EncodedPrompt:
        ids = list(self.prefix)
        spans: list[tuple[int, int, int]] = []
        for piece in self.templates[template]:
            if piece == "{user}":
                ids += self._tokens(f"user {user_id}") if user_id else self.anonymous_user
            elif piece == "{history}":
                for position, item in enumerate(history):
                    if position:
                        ids += self.separator
                    start = len(ids)
                    ids += self.item_tokens[item]
                    spans.append((start, len(ids), item))
            else:
                ids += piece
        ids += self.suffix
        return EncodedPrompt(ids, spans)


class UserIdWriter:
    """A user's textual ID, written from the items the user had *before* the item to predict.

    The ID is the ``words`` most frequent words across those items' textual IDs (ties: the
    more recent word first). It summarises the whole history, beyond the prompt's window of
    the last items, and by construction it can never contain the target: the reference
    code's user IDs were generated from the whole sequence, test item included.
    """

    def __init__(self, item_ids: Sequence[str], words: int):
        if words < 1:
            raise ValueError(f"a user ID needs at least one word, got words={words}")
        self.item_words = [text.split() for text in item_ids]
        self.words = words

    def _top(self, counts: dict[str, int], last_seen: dict[str, int]) -> str:
        best = heapq.nlargest(self.words, counts, key=lambda word: (counts[word], last_seen[word]))
        return " ".join(best)

    def __call__(self, items: Sequence[int]) -> str:
        """The ID of a user whose history is ``items`` (oldest first)."""
        return next(iter(self.along(items, start=len(items))))

    def along(self, sequence: Sequence[int], start: int = 1) -> Iterator[str]:
        """The ID before each position ``i >= start`` of ``sequence``, in one incremental pass."""
        counts: dict[str, int] = {}
        last_seen: dict[str, int] = {}
        for position, item in enumerate(sequence[:start]):
            self._add(item, position, counts, last_seen)
        yield self._top(counts, last_seen)
        for position in range(start, len(sequence)):
            self._add(sequence[position], position, counts, last_seen)
            yield self._top(counts, last_seen)

    def _add(self, item: int, position: int, counts: dict[str, int], last_seen: dict[str, int]) -> None:
        for word in self.item_words[item]:
            counts[word] = counts.get(word, 0) + 1
            last_seen[word] = position


def user_id_writer(item_ids: Sequence[str], words: int) -> UserIdWriter | None:
    """The writer for ``training.user_id_words`` (None when user IDs are off)."""
    return UserIdWriter(item_ids, words) if words else None


@dataclass(frozen=True)
class TrainingSample:
    user: int
    history: tuple[int, ...]
    target: int
    user_id: str = ""  # written from the items before the target only ("" when user IDs are off)
    later: tuple[int, ...] = ()  # the training items after the target, extra targets of the same prompt


def training_samples(
    train_sequences: Sequence[Sequence[int]],
    history_length: int,
    user_ids: UserIdWriter | None = None,
    later_targets: int = 0,
) -> list[TrainingSample]:
    """Every prefix of every training sequence: predict items[i] from items[:i][-history_length:].

    ``later_targets`` > 0 also keeps up to that many items after items[i] as extra targets of the
    same prompt (see ``TrainingConfig.later_targets``); they come from the training sequence only.
    """
    samples = []
    for user, sequence in enumerate(train_sequences):
        written = user_ids.along(sequence) if user_ids else None
        for i in range(1, len(sequence)):
            user_id = next(written) if written else ""
            history = tuple(sequence[max(0, i - history_length) : i])
            later = tuple(sequence[i + 1 : i + 1 + later_targets])
            samples.append(TrainingSample(user, history, sequence[i], user_id, later))
    return samples


def pad_batch(rows: Sequence[Sequence[int]], pad_value: int, width: int | None = None) -> torch.Tensor:
    """Rows padded to ``width`` (default: the longest row) with ``pad_value``."""
    longest = max(len(r) for r in rows)
    if width is not None and width < longest:
        raise ValueError(f"a row of {longest} tokens does not fit width {width}")
    width = longest if width is None else width
    out = torch.full((len(rows), width), pad_value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, S) padded with pad id
    attention_mask: torch.Tensor  # (B, S)
    decoder_input_ids: torch.Tensor  # (R, T) decoder start + target[:-1]
    labels: torch.Tensor  # (R, T) target tokens + eos, padding = -100
    prompts: list[EncodedPrompt]
    # (R,) the prompt each target row belongs to: R == B unless prompts carry later targets
    target_rows: torch.Tensor
    # (N, 3) rows of (target row, decoder step, token): where a history item's ID leaves the
    # target's, the token it would continue with (see :func:`seen_item_branches`); None when off
    seen_branches: torch.Tensor | None = None

    @property
    def size(self) -> int:
        """Prompts in the batch (what a loss is averaged over)."""
        return len(self.prompts)


def seen_item_branches(targets: Sequence[Sequence[int]], histories: Sequence[Sequence[Sequence[int]]]) -> torch.Tensor:
    """(target row, step, token) for every place where a history item's ID branches off its row's target.

    ``targets[r]`` and each of ``histories[r]`` are full decoder targets (ID tokens + eos). Along
    the target's prefix, the token at the first position where a history ID differs is the one
    move that would start decoding that already-seen item; an item equal to the target (a repeat)
    is skipped. Each (row, step, token) appears once.
    """
    branches = set()
    for row, (target, history) in enumerate(zip(targets, histories)):
        for seen in history:
            if list(seen) == list(target):
                continue
            step = 0
            while step < min(len(seen), len(target)) and seen[step] == target[step]:
                step += 1
            if step < len(seen) and step < len(target):
                branches.add((row, step, seen[step]))
    return torch.tensor(sorted(branches), dtype=torch.long).reshape(-1, 3)


def target_tensors(
    targets: Sequence[Sequence[int]], pad_id: int, decoder_start_id: int, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing: (decoder_input_ids, labels), each (B, T); label padding is -100.

    ``width`` fixes T (default: the longest target); an empty target is a row that only pads.
    """
    decoder_inputs = pad_batch([[decoder_start_id, *t[:-1]] for t in targets], pad_id, width)
    return decoder_inputs, pad_batch(targets, -100, width)


def collate(
    prompts: Sequence[EncodedPrompt],
    targets: Sequence[Sequence[int]],
    pad_id: int,
    decoder_start_id: int,
    target_rows: Sequence[int] | None = None,
    target_width: int | None = None,
    seen_branches: torch.Tensor | None = None,
) -> Batch:
    """Pad prompts and targets; ``target_rows[r]`` names the prompt of target ``r`` (default: one each).

    ``target_width`` pads every target to that many tokens (see :func:`target_tensors`).
    """
    input_ids = pad_batch([p.input_ids for p in prompts], pad_id)
    decoder_inputs, labels = target_tensors(targets, pad_id, decoder_start_id, target_width)
    rows = torch.arange(len(prompts)) if target_rows is None else torch.tensor(list(target_rows), dtype=torch.long)
    if len(rows) != len(targets):
        raise ValueError(f"{len(targets)} targets but {len(rows)} target rows")
    return Batch(input_ids, (input_ids != pad_id).long(), decoder_inputs, labels, list(prompts), rows, seen_branches)


def length_grouped_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort within windows of 50 batches by length: far less padding, still random."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def encode_samples(
    encoder: PromptEncoder, samples: Sequence[TrainingSample], rng: random.Random, template_mode: str
) -> list[EncodedPrompt]:
    return [encoder.encode(s.history, draw_template(rng, template_mode), s.user_id) for s in samples]
