"""Diverse (group) beam search, batched over items, written here (transformers 5 dropped it).

Follows Vijayakumar et al. (2018) as transformers 4 implemented it, specialised to groups
of one beam: at every step the groups choose in order, and group ``g`` pays
``penalty * count(token)`` for each token that groups ``0..g-1`` of the same item chose at
this step (Hamming diversity). Penalised scores accumulate in the beam score, as in
transformers. A group whose best token is eos records a finished hypothesis (score
divided by its length) and continues with its best other token; it is done once its
finished score beats what the running beam can still reach. With one beam per group
there is never any beam reordering, so the decoder's key/value cache is reused as is.
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
    hidden = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    hidden = hidden.repeat_interleave(groups, dim=0)  # (N, S, H)
    mask = attention_mask.repeat_interleave(groups, dim=0)  # (N, S)
    banned = torch.tensor(sorted(set(tokenizer.all_special_ids) - {eos}), dtype=torch.long, device=device)
    if budget is not None:
        budget = budget.to(device).repeat_interleave(groups, dim=0)  # (N, V), counts down per beam
        budget[:, eos] = max_tokens + 1

    generated = torch.full((beams, max_tokens), tokenizer.pad_token_id, dtype=torch.long, device=device)  # (N, T)
    last = torch.full((beams, 1), model.config.decoder_start_token_id, dtype=torch.long, device=device)
    running = torch.zeros(batch, groups, device=device)  # accumulated penalised log-prob of the live beam
    finished = torch.full((batch, groups), float("-inf"), device=device)  # best finished hypothesis score
    finished_len = torch.zeros(batch, groups, dtype=torch.long, device=device)
    done = torch.zeros(batch, groups, dtype=torch.bool, device=device)
    cache = None
    for step in range(max_tokens):
        out = model(encoder_outputs=(hidden,), attention_mask=mask, decoder_input_ids=last, cache=cache, use_cache=True)
        cache = out.cache
        logp = out.logits[:, -1].float().log_softmax(-1)  # (N, V)
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
        last = tokens.view(-1, 1)
        if bool(done.all()):
            break
    # Beams still live at the length limit count as hypotheses of max_tokens tokens.
    at_limit = running / max_tokens**length_penalty
    better = ~done & (at_limit > finished)
    finished = torch.where(better, at_limit, finished)
    finished_len = torch.where(better, max_tokens, finished_len)
    # one copy to the host: reading the ranked candidates element by element from a GPU would sync per element
    return _ranked(generated.view(batch, groups, -1).cpu(), finished.cpu(), finished_len.cpu())


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
