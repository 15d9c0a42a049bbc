"""Diverse (group) beam search, batched over items, written here (transformers 5 dropped it).

Follows Vijayakumar et al. (2018) as transformers 4 implemented it, specialised to groups
of one beam: at every step the groups choose in order, and group ``g`` pays
``penalty * count(token)`` for each token that groups ``0..g-1`` of the same item chose at
this step (Hamming diversity). Penalised scores accumulate in the beam score, as in
transformers. A group whose best token is eos records a finished hypothesis (score
divided by its length) and continues with its best other token; it is done once its
finished score beats what the running beam can still reach. With one beam per group
there is never any beam reordering, so the decoder's key/value cache is reused as is.

The decoder computes only the rows that can still change a result: step 0 one row per item
(every group of an item starts from the same token, so all its groups share those logits),
then one row per live beam. A beam that is done emits padding and its scores never move, so
its rows leave the batch (with their cache rows) once enough beams are done to pay for the
copy. Without this, every beam of a batch ran until the batch's slowest beam finished, and the
first step repeated each item's cross-attention keys and values once per group.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Candidate:
    tokens: list[int]  # ID tokens, no start/eos
    score: float  # length-normalised (penalised) log-probability


@torch.no_grad()
def diverse_beam_candidates(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    input_ids: torch.Tensor,  # (B, S) padded item texts
    attention_mask: torch.Tensor,  # (B, S)
    groups: int,
    penalty: float,
    min_tokens: int,
    max_tokens: int,
    length_penalty: float = 1.0,
    budget: torch.Tensor | None = None,  # (B, V) int: how often each item's ID may use each token (eos: always)
) -> list[list[Candidate]]:
    """Up to ``groups`` candidates per item, best first, each ``min_tokens..max_tokens`` long.

    With ``budget``, a beam that has used a token as often as its budget allows cannot pick it
    again (each beam keeps its own count); a token with budget 0 is never picked.
    """
    batch = input_ids.size(0)
    beams = batch * groups  # N = B * G; beam n belongs to item n // G, group n % G
    eos = tokenizer.eos_token_id
    device = next(model.parameters()).device  # the search's state lives beside the model (CPU or GPU)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    item_hidden = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, S, H)
    banned = torch.tensor(sorted(set(tokenizer.all_special_ids) - {eos}), dtype=torch.long, device=device)
    if budget is not None:
        budget = budget.to(device).repeat_interleave(groups, dim=0)  # (N, V), counts down per beam
        budget[:, eos] = max_tokens + 1

    generated = torch.full((beams, max_tokens), tokenizer.pad_token_id, dtype=torch.long, device=device)  # (N, T)
    running = torch.zeros(batch, groups, device=device)  # accumulated penalised log-prob of the live beam
    finished = torch.full((batch, groups), float("-inf"), device=device)  # best finished hypothesis score
    finished_len = torch.zeros(batch, groups, dtype=torch.long, device=device)
    done = torch.zeros(batch, groups, dtype=torch.bool, device=device)
    # The decoder's batch: R rows, row r decoding beam rows[r]; step 0 runs the first group's beam of each item.
    rows = torch.arange(batch, device=device) * groups
    decoder = _Rows(item_hidden, attention_mask, groups)
    last = torch.full((batch, 1), model.config.decoder_start_token_id, dtype=torch.long, device=device)
    for step in range(max_tokens):
        logp_rows = decoder.step(model, last)  # (R, V)
        if step == 0:
            logp = logp_rows.repeat_interleave(groups, dim=0)  # (N, V): an item's groups share the first step
        else:
            # Done beams ignore their scores (they emit padding and keep theirs): -inf stands in for them.
            logp = torch.full((beams, logp_rows.size(-1)), float("-inf"), device=device)
            logp[rows] = logp_rows
        logp[:, banned] = float("-inf")
        if budget is not None:
            logp = logp.masked_fill(budget <= 0, float("-inf"))
        if step < min_tokens:
            logp[:, eos] = float("-inf")
        logp = logp.view(batch, groups, -1)  # (B, G, V)
        chosen = torch.zeros(batch, logp.size(-1), device=device)  # (B, V) tokens picked by earlier groups this step
        tokens = torch.empty(batch, groups, dtype=torch.long, device=device)
        for g in range(groups):
            scores = logp[:, g] - penalty * chosen + running[:, g, None]  # (B, V)
            top_scores, top_tokens = scores.topk(2, dim=-1)  # (B, 2)
            eos_first = (top_tokens[:, 0] == eos) & ~done[:, g]
            hypothesis = top_scores[:, 0] / (step + 1) ** length_penalty  # ID tokens + eos
            better = eos_first & (hypothesis > finished[:, g])
            finished[:, g] = torch.where(better, hypothesis, finished[:, g])
            finished_len[:, g] = torch.where(better, step, finished_len[:, g])
            # The live beam continues with the best non-eos token (eos below rank 1 is ignored).
            keep = torch.where(eos_first, top_tokens[:, 1], top_tokens[:, 0])
            keep_score = torch.where(eos_first, top_scores[:, 1], top_scores[:, 0])
            keep = torch.where(done[:, g], tokenizer.pad_token_id, keep)
            running[:, g] = torch.where(done[:, g], running[:, g], keep_score)
            chosen.scatter_add_(1, keep[:, None], (~done[:, g]).float()[:, None])
            tokens[:, g] = keep
            done[:, g] |= finished[:, g] >= running[:, g] / (step + 1) ** length_penalty
        generated[:, step] = tokens.view(-1)
        if budget is not None:
            budget.scatter_add_(1, tokens.view(-1, 1), -(~done).view(-1, 1).long())  # done beams emit padding
        if bool(done.all()):
            break
        live = (~done).view(-1).nonzero().flatten()  # beams still decoding, in beam order
        if step == 0:  # from one row per item to one per live beam
            decoder.select(live // groups, live)
            rows = live
        elif _worth_compacting(len(live), len(rows)):
            decoder.select(torch.searchsorted(rows, live), live)  # rows and live are both in beam order
            rows = live
        last = tokens.view(-1, 1)[rows]
    # Beams still live at the length limit count as hypotheses of max_tokens tokens.
    at_limit = running / max_tokens**length_penalty
    better = ~done & (at_limit > finished)
    finished = torch.where(better, at_limit, finished)
    finished_len = torch.where(better, max_tokens, finished_len)
    # one copy to the host: reading the ranked candidates element by element from a GPU would sync per element
    return _ranked(generated.view(batch, groups, -1).cpu(), finished.cpu(), finished_len.cpu())


def _worth_compacting(live: int, rows: int) -> bool:
    """Drop done beams from the decoder's batch once a quarter of its rows are done: copying the
    live rows' caches costs far less than a decoder step, but is not free."""
    return live <= rows * 3 // 4


class _Rows:
    """The decoder's batch of rows: its key/value cache and each row's encoder states and mask."""

    def __init__(self, item_hidden: torch.Tensor, item_mask: torch.Tensor, groups: int):
        self.item_hidden, self.item_mask, self.groups = item_hidden, item_mask, groups  # (B, S, H), (B, S)
        self.hidden, self.mask = item_hidden, item_mask  # step 0: one row per item
        self.cache = None

    def step(self, model: PreTrainedModel, last: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (R, V) of the next token of each row, given its last token (R, 1)."""
        out = model(encoder_outputs=(self.hidden,), attention_mask=self.mask, decoder_input_ids=last, cache=self.cache, use_cache=True)
        self.cache = out.cache
        return out.logits[:, -1].float().log_softmax(-1)

    def select(self, source: torch.Tensor, beams: torch.Tensor) -> None:
        """New rows decoding ``beams``: row i continues the current row ``source[i]``."""
        self.cache.reorder_cache(source)  # index_select of every layer's self- and cross-attention keys and values
        items = beams // self.groups
        self.hidden, self.mask = self.item_hidden.index_select(0, items), self.item_mask.index_select(0, items)


def _ranked(generated: torch.Tensor, finished: torch.Tensor, lengths: torch.Tensor) -> list[list[Candidate]]:
    """Per item, its groups' hypotheses sorted best first (ties: lower group first)."""
    result = []
    for item in range(generated.size(0)):
        candidates = [
            Candidate(generated[item, g, : lengths[item, g]].tolist(), float(finished[item, g]))
            for g in range(generated.size(1))
            if finished[item, g] > float("-inf")
        ]
        result.append(sorted(candidates, key=lambda c: -c.score))
    return result
