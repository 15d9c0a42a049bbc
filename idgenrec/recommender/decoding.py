"""Batched beam search over item IDs, constrained by the ID prefix trie.

Every finished beam is a complete, valid item ID, so the recommender can only name real
items. seq2seq: the encoder runs once per prompt; the decoder keeps its key/value cache and
the cache is reordered as beams are re-ranked. causal: the history is read once (its
key/value cache is then copied to each beam), and each step feeds one token per beam. ``trie=None`` gives plain (unconstrained)
beam search at the same width, used to measure what the constraint costs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from idgenrec.ids.trie import IdTrie

NEG_INF = float("-inf")


@dataclass(frozen=True)
class BeamResult:
    items: list[list[int]]  # per prompt, best first; -1 where a beam is not a valid item
    scores: list[list[float]]  # summed log-probabilities of the beams


@functools.cache
def _cache_argument(model_class) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def decoder_step(model, encoder_outputs, attention_mask, decoder_input_ids, cache):
    """One cached decoder step; returns (logits of the last position, new cache).

    transformers renamed the cache argument (``past_key_values`` -> ``cache``, 5.2x);
    both spellings are accepted so a GPU image with another 5.x release works too.
    """
    name = _cache_argument(type(model))
    out = model(
        encoder_outputs=encoder_outputs,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids,
        use_cache=True,
        **{name: cache},
    )
    return out.logits[:, -1, :], getattr(out, name)


def _reorder_cache(cache, beam_index: torch.Tensor):
    """Reorder the decoder's self-attention cache to follow the re-ranked beams.

    Beams are only re-ranked within their own prompt, and every beam of a prompt holds the
    same cross-attention keys and values (one encoder output, repeated), so that half of an
    encoder-decoder cache stays as it is. Copying it at every step, as a whole-cache reorder
    does, made decoding 1.7x slower (benchmarks/results/decoding-speed-ml-100k.md).
    """
    if cache is None:
        return None
    self_attention = getattr(cache, "self_attention_cache", None)
    if self_attention is not None:
        self_attention.reorder_cache(beam_index)
        return cache
    if hasattr(cache, "reorder_cache"):
        cache.reorder_cache(beam_index)
        return cache
    # Legacy tuples: (self key, self value, cross key, cross value) per layer.
    return tuple((*(t.index_select(0, beam_index) for t in layer[:2]), *layer[2:]) for layer in cache)


class _Seq2seqSteps:
    """Next-token logits of an encoder-decoder's beams: the prompts encoded once, the decoder cached."""

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_beams: int):
        self.model = model
        encoder_outputs = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask)
        # (B*K, S, d): every beam of a prompt attends to the same encoder output
        expand = torch.arange(input_ids.size(0), device=input_ids.device).repeat_interleave(num_beams)
        encoder_outputs.last_hidden_state = encoder_outputs.last_hidden_state.index_select(0, expand)
        self.encoder_outputs = encoder_outputs
        self.memory_mask = attention_mask.index_select(0, expand)
        self.cache = None
        start = model.config.decoder_start_token_id
        self.start = torch.full((expand.size(0), 1), start, dtype=torch.long, device=input_ids.device)

    def first(self) -> torch.Tensor:
        logits, self.cache = decoder_step(self.model, self.encoder_outputs, self.memory_mask, self.start, None)
        return logits

    def next(self, tokens: torch.Tensor, beam_origin: torch.Tensor) -> torch.Tensor:
        self.cache = _reorder_cache(self.cache, beam_origin)
        logits, self.cache = decoder_step(self.model, self.encoder_outputs, self.memory_mask, tokens, self.cache)
        return logits


class _CausalSteps:
    """Next-token logits of a decoder-only model's beams: each history read once, then one token per step.

    Histories are right-padded; the padding stays masked in the cache and each row's new
    tokens take the positions after its own last token.
    """

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_beams: int):
        self.model = model
        self.name = _cache_argument(type(model))
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
        lengths = attention_mask.sum(dim=1)  # (B,)
        rows = torch.arange(input_ids.size(0), device=input_ids.device)
        expand = rows.repeat_interleave(num_beams)
        self.logits = out.logits[rows, lengths - 1].index_select(0, expand)  # (B*K, V): the next ID's first token
        self.cache = _reorder_cache(getattr(out, self.name), expand)
        self.mask = attention_mask.index_select(0, expand)
        self.position = lengths.index_select(0, expand)[:, None]  # (B*K, 1)

    def first(self) -> torch.Tensor:
        return self.logits

    def next(self, tokens: torch.Tensor, beam_origin: torch.Tensor) -> torch.Tensor:
        # Beams only move within their prompt, so the mask and positions need no reordering.
        self.cache = _reorder_cache(self.cache, beam_origin)
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.size(0), 1)], dim=1)
        out = self.model(
            input_ids=tokens, attention_mask=self.mask, position_ids=self.position, use_cache=True, **{self.name: self.cache}
        )
        self.position = self.position + 1
        self.cache = getattr(out, self.name)
        return out.logits[:, -1, :]


@torch.no_grad()
def beam_search(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    num_beams: int,
    eos_token_id: int,
    trie: IdTrie | None,
    max_steps: int,
    exclude: Sequence[set[int]] | None = None,
) -> BeamResult:
    """Beam search for ``B`` prompts (seq2seq) or histories (causal, right-padded) at once.

    input_ids / attention_mask: (B, S). With a trie, a beam's state is a trie node, the
    allowed next tokens come from it, and eos is allowed only where it completes an ID.
    With ``exclude``, no token leads toward an ID whose items are all excluded for that
    prompt, so the beams are spent on recommendable items only.
    """
    device = input_ids.device
    batch, vocab = input_ids.size(0), model.get_input_embeddings().weight.size(0)
    steps_of = _Seq2seqSteps if model.config.is_encoder_decoder else _CausalSteps
    steps = steps_of(model, input_ids, attention_mask, num_beams)
    tokens = torch.empty((batch * num_beams, 0), dtype=torch.long, device=device)
    # Only the first beam of each prompt is live at step 0, so the K beams start distinct.
    scores = torch.full((batch, num_beams), NEG_INF, device=device)
    scores[:, 0] = 0.0
    scores = scores.view(-1)
    nodes = torch.full((batch * num_beams,), IdTrie.ROOT, dtype=torch.long, device=device)
    blocked = trie.blocked_nodes(exclude, device) if trie is not None and exclude is not None else None
    prompt_of_row = torch.arange(batch * num_beams, device=device) // num_beams
    finished = torch.zeros(batch * num_beams, dtype=torch.bool, device=device)
    logits = steps.first()
    for step in range(max_steps):
        log_probs = torch.log_softmax(logits.float(), dim=-1)  # (B*K, V)
        if trie is not None:
            allowed = trie.allowed_mask(nodes, vocab, blocked, prompt_of_row)
            log_probs = log_probs.masked_fill(~allowed, NEG_INF)
        # A finished beam stays as it is: it may only "emit" eos at no cost.
        log_probs[finished] = NEG_INF
        log_probs[finished, eos_token_id] = 0.0
        candidates = (scores[:, None] + log_probs).view(batch, num_beams * vocab)
        top_scores, top_index = candidates.topk(num_beams, dim=-1)  # (B, K)
        beam_origin = (top_index // vocab + torch.arange(batch, device=device)[:, None] * num_beams).view(-1)
        next_token = (top_index % vocab).view(-1)
        scores = top_scores.view(-1)
        tokens = torch.cat([tokens.index_select(0, beam_origin), next_token[:, None]], dim=1)
        was_finished = finished.index_select(0, beam_origin)
        finished = was_finished | (next_token == eos_token_id)
        if trie is not None:
            parents = nodes.index_select(0, beam_origin)
            nodes = torch.where(was_finished, parents, trie.step_many(parents, next_token))
        if bool(finished.all()) or step == max_steps - 1:
            break
        logits = steps.next(next_token[:, None], beam_origin)
    return _collect(tokens, scores, finished, nodes, trie, batch, num_beams)


def _collect(tokens, scores, finished, nodes, trie, batch: int, num_beams: int) -> BeamResult:
    items: list[list[int]] = []
    beam_scores: list[list[float]] = []
    flat_scores = scores.tolist()
    node_items = trie.items_at(nodes).tolist() if trie is not None else None
    done = finished.tolist()
    for b in range(batch):
        row_items, row_scores = [], []
        for r in range(b * num_beams, (b + 1) * num_beams):
            if flat_scores[r] == NEG_INF or not done[r]:
                continue
            row_items.append(node_items[r] if node_items is not None else -1)
            row_scores.append(flat_scores[r])
        items.append(row_items)
        beam_scores.append(row_scores)
    return BeamResult(items, beam_scores)
