"""A complete, loadable IDGenRec model: recommender + tokenizer + ID table (+ generator).

``IDGenRecModel.load(folder)`` alone can recommend: the folder holds the recommender
weights and tokenizer, the item-ID table the recommender was trained with (from which
the trie is rebuilt), the generator (for new items, zero-shot) and the decoding settings.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from idgenrec.atomic import atomic_directory
from idgenrec.digests import check_digests, record_digests
from idgenrec.ids.trie import IdTrie
from idgenrec.recommender.decoding import beam_search
from idgenrec.recommender.samples import PromptEncoder, pad_batch, user_id_writer
from idgenrec.recommender.item_scores import (
    catalogue_tokens, item_directions, item_embeddings, item_logits, last_item_similarity,
)
from idgenrec.recommender.sequences import SequenceEncoder
from idgenrec.backbone import autocast, prompt_token_limit
from idgenrec.backbone.causal import hidden_states

RECOMMENDER_DIR, GENERATOR_DIR, ID_TABLE, SETTINGS = "recommender", "generator", "item_ids.tsv", "settings.json"


@dataclass(frozen=True)
class DecodingSettings:
    history_length: int
    num_beams: int
    bf16: bool = True
    batch_size: int = 64
    user_id_words: int = 0  # 0: prompts say "the user"; else see UserIdWriter
    architecture: str = "seq2seq"  # how the recommender reads a history: seq2seq prompts or causal sequences
    ranking: str = "beams"  # beams: trie-constrained beam search; items: every item scored by its ID (causal)
    similarity_weight: float = 0.0  # items: weight of each item's ID similarity to the last item read (see _item_ranking)


class IDGenRecModel:
    """Implements the :class:`idgenrec.evaluation.Recommender` contract."""

    def __init__(self, recommender, tokenizer, id_table, settings: DecodingSettings, generator=None):
        self.recommender = recommender.eval()
        self.tokenizer = tokenizer
        self.id_table = id_table
        self.settings = settings
        self.generator = generator
        self.item_tokens = id_table.token_ids(tokenizer)
        encoder = SequenceEncoder if settings.architecture == "causal" else PromptEncoder
        self.prompts = encoder(tokenizer, self.item_tokens, settings.history_length, prompt_token_limit(recommender))
        self.trie = IdTrie(self.item_tokens, self.prompts.eos)
        self.catalogue = catalogue_tokens(self.item_tokens)
        self._items: tuple[tuple, dict[str, torch.Tensor]] | None = None  # item matrices and the weights they were made from
        self.user_ids = user_id_writer(id_table.textual_ids, settings.user_id_words)

    @property
    def device(self) -> torch.device:
        return next(self.recommender.parameters()).device

    def recommend_with_scores(
        self,
        histories: Sequence[Sequence[int]],
        k: int,
        exclude_seen: bool = False,
        constrained: bool = True,
        candidates: Collection[int] | None = None,
    ) -> tuple[list[list[int]], list[list[float]]]:
        """Top-``k`` items (indices) and their scores (log-probabilities), per history.

        ``candidates`` restricts the recommendations to those items (e.g. new arrivals);
        with beams the trie is pruned per prompt, so every beam ends on a candidate.
        ``constrained=False`` decodes beams without the trie (to measure what it buys).
        """
        outside = set(range(len(self.id_table))) - set(candidates) if candidates is not None else set()
        if self.settings.ranking == "items":
            rank = self._item_ranking
        else:
            rank = functools.partial(self._beam_ranking, constrained=constrained)
        # Sort by prompt length so batches carry little padding; restore order at the end.
        order = sorted(range(len(histories)), key=lambda i: len(histories[i][-self.settings.history_length :]))
        results: dict[int, tuple[list[int], list[float]]] = {}
        for start in range(0, len(order), self.settings.batch_size):
            chunk = order[start : start + self.settings.batch_size]
            prompts = [
                self.prompts.encode(histories[i], user_id=self.user_ids(histories[i]) if self.user_ids else "")
                for i in chunk
            ]
            input_ids = pad_batch([p.input_ids for p in prompts], self.tokenizer.pad_token_id).to(self.device)
            mask = (input_ids != self.tokenizer.pad_token_id).long()
            exclude = [(set(histories[i]) if exclude_seen else set()) | outside for i in chunk]
            last_items = [histories[i][-1] if len(histories[i]) else None for i in chunk]
            with autocast(self.device, self.settings.bf16):
                ranked = rank(input_ids, mask, k, exclude, last_items)
            for i, row_items, row_scores in zip(chunk, *ranked):
                results[i] = (row_items[:k], row_scores[:k])
        return [results[i][0] for i in range(len(histories))], [results[i][1] for i in range(len(histories))]

    def _beam_ranking(self, input_ids, mask, k: int, exclude: list[set[int]], last_items, constrained: bool):
        """Trie-constrained beam search: the method's generative decoding."""
        result = beam_search(
            self.recommender, input_ids, mask, max(k, self.settings.num_beams), self.prompts.eos,
            self.trie if constrained else None, self.trie.max_depth, exclude if any(exclude) else None,
        )
        return result.items, result.scores

    @torch.no_grad()
    def _item_ranking(self, input_ids, mask, k: int, exclude: list[set[int]], last_items: list[int | None]):
        """Every item scored by its ID where the next ID starts (:func:`item_logits`); causal only.

        With ``similarity_weight``, each item's logit gains that weight times the cosine between its
        ID embedding and the last item's (:func:`last_item_similarity`): the next item often resembles
        the last one, and the term reads only IDs, so it holds for items and catalogues never trained on.
        """
        states = hidden_states(self.recommender, input_ids=input_ids, attention_mask=mask)
        last = states[torch.arange(states.size(0), device=states.device), mask.sum(dim=1) - 1]
        logits = item_logits(self.recommender, last, self.item_embeddings()).float()
        if self.settings.similarity_weight:
            logits += self.settings.similarity_weight * last_item_similarity(self.item_directions(), last_items)
        scores = torch.log_softmax(logits, dim=-1)
        for row, items in enumerate(exclude):
            if items:
                scores[row, list(items)] = float("-inf")
        top = scores.topk(min(k, scores.size(1)), dim=1)
        ranked = [
            [(item, score) for item, score in zip(items, values) if score != float("-inf")]
            for items, values in zip(top.indices.tolist(), top.values.tolist())
        ]
        return [[item for item, _ in row] for row in ranked], [[score for _, score in row] for row in ranked]

    def item_embeddings(self) -> torch.Tensor:
        """Every item's embedding for :meth:`_item_ranking`, made once per state of the embedding weights.

        The weights' version counter moves with every in-place update (an optimizer step between
        validations), so a cached matrix is never used with weights it was not made from.
        """
        return self._item_matrices()["embeddings"]

    def item_directions(self) -> torch.Tensor:
        """Every item's unit ID direction for the similarity term (:func:`item_directions`), cached as the embeddings."""
        matrices = self._item_matrices()
        if "directions" not in matrices:
            matrices["directions"] = item_directions(matrices["embeddings"])
        return matrices["directions"]

    def _item_matrices(self) -> dict[str, torch.Tensor]:
        weight = self.recommender.get_input_embeddings().weight
        key = (weight.data_ptr(), weight._version, weight.device)
        if self._items is None or self._items[0] != key:
            self._items = (key, {"embeddings": item_embeddings(self.recommender, self.catalogue.to(weight.device))})
        return self._items[1]

    def recommend(
        self,
        histories: Sequence[Sequence[int]],
        k: int,
        exclude_seen: bool = False,
        candidates: Collection[int] | None = None,
    ) -> list[list[int]]:
        return self.recommend_with_scores(histories, k, exclude_seen, candidates=candidates)[0]

    def for_catalogue(self, item_ids: Sequence[str]) -> "IDGenRecModel":
        """This model with its items numbered as ``item_ids`` (a dataset's items, in its order).

        Item indices in histories and recommendations then refer to ``item_ids``; an item the
        model knows but ``item_ids`` lacks is not recommended. Every item of ``item_ids`` must
        be known (new ones: :func:`idgenrec.recommender.new_items.add_items`).
        """
        item_ids = list(item_ids)
        if item_ids == self.id_table.item_ids:
            return self
        table = type(self.id_table)(item_ids, [self.id_table.textual_ids[index] for index in self.indices(item_ids)])
        return IDGenRecModel(self.recommender, self.tokenizer, table, self.settings, self.generator)

    def indices(self, item_ids: Sequence[str]) -> list[int]:
        """The model's index of each original item id; ValueError naming the ids it does not know."""
        position = {item: index for index, item in enumerate(self.id_table.item_ids)}
        missing = [item for item in item_ids if item not in position]
        if missing:
            raise ValueError(
                f"{len(missing)} of {len(item_ids)} items are not in the model's ID table (e.g. {missing[:5]}); "
                "add them with `idgenrec add-items`"
            )
        return [position[item] for item in item_ids]

    # -- persistence ---------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        from idgenrec.backbone import save_seq2seq

        with atomic_directory(folder) as tmp:
            save_seq2seq(self.recommender, self.tokenizer, tmp / RECOMMENDER_DIR)
            if self.generator is not None:
                save_seq2seq(self.generator, self.tokenizer, tmp / GENERATOR_DIR)
            self.id_table.save(tmp / ID_TABLE)
            (tmp / SETTINGS).write_text(json.dumps(asdict(self.settings), indent=2), encoding="utf-8")
            record_digests(tmp)

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str | None = None) -> "IDGenRecModel":
        from idgenrec.backbone import load_seq2seq
        from idgenrec.ids import ItemIdTable

        folder = Path(folder)
        settings_path = folder / SETTINGS
        if not settings_path.exists():
            raise FileNotFoundError(f"{folder}: not an IDGenRec model folder (no {SETTINGS}); train one with `idgenrec train`")
        check_digests(folder)
        try:
            settings = DecodingSettings(**json.loads(settings_path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{settings_path}: corrupt decoding settings: {err}") from None
        recommender, tokenizer = load_seq2seq(folder / RECOMMENDER_DIR)
        generator = None
        if (folder / GENERATOR_DIR).exists():
            generator, _ = load_seq2seq(folder / GENERATOR_DIR)
        if device is not None:
            recommender.to(device)
            if generator is not None:
                generator.to(device)
        return cls(recommender, tokenizer, ItemIdTable.load(folder / ID_TABLE), settings, generator)
