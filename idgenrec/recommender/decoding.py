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

    Every beam of a history shares that history's keys and values, which are most of what
    attention reads (about 300 tokens of history against at most one ID of new tokens). A
    per-beam cache, as transformers keeps it, copies the whole history K times and again at
    every re-ranking and every step: on ML-100k (history 50, 10 beams) those copies took most
    of decoding. Here each layer keeps the history's keys and values once per prompt, (B, h, T, d),
    and only the beams' own new tokens per beam, (B*K, h, t, d); a beam's queries are folded into
    its prompt's batch row, so attention to the history is one batched matmul with no copy.
    The layers' own modules do every projection, so the weights and the maths are the model's.
    Histories are right-padded: the padding is masked, and each row's new tokens take the
    positions after its own last token.
    """

    def __init__(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor, num_beams: int):
        self.model, self.beams = model, num_beams
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True)
        cache = getattr(out, _cache_argument(type(model)))
        self.history = [(layer.keys, layer.values) for layer in cache.layers]  # per layer, (B, h, T, d) each
        self.new: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(self.history)
        # (B, 1, 1, T): 0 on the history's tokens, -inf on its padding
        self.history_bias = torch.zeros(attention_mask.shape, dtype=self.history[0][0].dtype, device=input_ids.device)
        self.history_bias = self.history_bias.masked_fill(attention_mask == 0, NEG_INF)[:, None, None, :]
        lengths = attention_mask.sum(dim=1)  # (B,)
        rows = torch.arange(input_ids.size(0), device=input_ids.device)
        expand = rows.repeat_interleave(num_beams)
        self.logits = out.logits[rows, lengths - 1].index_select(0, expand)  # (B*K, V): the next ID's first token
        self.position = lengths.index_select(0, expand)[:, None]  # (B*K, 1)

    def first(self) -> torch.Tensor:
        return self.logits

    def next(self, tokens: torch.Tensor, beam_origin: torch.Tensor) -> torch.Tensor:
        # Beams only move within their prompt: the shared history and the positions need no reordering.
        self.new = [None if kv is None else (kv[0].index_select(0, beam_origin), kv[1].index_select(0, beam_origin))
                    for kv in self.new]
        bert = self.model.bert
        hidden = bert.embeddings(input_ids=tokens, position_ids=self.position)  # (N, 1, H), N = B*K
        for index, layer in enumerate(bert.encoder.layer):
            context = self._attend(layer.attention.self, hidden, index)
            attended = layer.attention.output(context, hidden)
            hidden = layer.output(layer.intermediate(attended), attended)
        self.position = self.position + 1
        return self.model.cls(hidden)[:, -1, :]

    def _attend(self, attention, hidden: torch.Tensor, index: int) -> torch.Tensor:
        """One new token per beam attends to its prompt's history and to its own earlier new tokens."""
        rows, heads = hidden.size(0), attention.num_attention_heads
        prompts, size = rows // self.beams, attention.attention_head_size

        def heads_of(projection):  # (N, 1, H) -> (N, h, 1, d)
            return projection(hidden).view(rows, 1, heads, size).transpose(1, 2)

        query, key, value = heads_of(attention.query), heads_of(attention.key), heads_of(attention.value)
        if self.new[index] is not None:
            key, value = torch.cat([self.new[index][0], key], dim=2), torch.cat([self.new[index][1], value], dim=2)
        self.new[index] = (key, value)
        history_keys, history_values = self.history[index]
        # the K beams' queries of a prompt as K query rows of its batch row: (B, h, K, d)
        folded = query.view(prompts, self.beams, heads, size).transpose(1, 2)
        to_history = folded @ history_keys.transpose(-1, -2) * attention.scaling + self.history_bias  # (B, h, K, T)
        to_new = (query @ key.transpose(-1, -2) * attention.scaling)  # (N, h, 1, t)
        to_new = to_new.view(prompts, self.beams, heads, -1).transpose(1, 2)  # (B, h, K, t)
        weights = torch.softmax(torch.cat([to_history, to_new], dim=-1).float(), dim=-1).to(query.dtype)
        on_history, on_new = weights.split([to_history.size(-1), to_new.size(-1)], dim=-1)
        context = on_history @ history_values  # (B, h, K, d)
        on_new = on_new.transpose(1, 2).reshape(rows, heads, 1, -1)  # (N, h, 1, t)
        context = context.transpose(1, 2).reshape(rows, heads, 1, size) + on_new @ value  # (N, h, 1, d)
        return context.transpose(1, 2).reshape(rows, 1, heads * size)


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
