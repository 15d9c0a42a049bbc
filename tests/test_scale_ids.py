"""ID generation at catalogue scale: the compacted diverse beam search returns what the dense one did."""

from __future__ import annotations

import pytest
import torch

from idgenrec.backbone import load_seq2seq
from idgenrec.config import BackboneConfig, IdConfig, Params, WarmupConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.ids import generate_unique_ids, warm_up_generator
from idgenrec.ids import diverse
from idgenrec.ids import unique as unique_module
from idgenrec.ids.diverse import Candidate, _ranked, diverse_beam_candidates

pytestmark = pytest.mark.model

TINY = BackboneConfig(profile="tiny", hidden_size=32, encoder_layers=1, decoder_layers=1)
IDS = IdConfig(beam_groups=5, length_span=5, max_diversity_penalty=3.0, batch_size=8)


@torch.no_grad()
def dense_reference(model, tokenizer, input_ids, attention_mask, groups, penalty, min_tokens, max_tokens, budget=None):
    """The search as it was before rows were compacted: every beam of the batch decoded at every step."""
    batch, beams, eos = input_ids.size(0), input_ids.size(0) * groups, tokenizer.eos_token_id
    hidden = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.repeat_interleave(groups, 0)
    mask = attention_mask.repeat_interleave(groups, 0)
    banned = torch.tensor(sorted(set(tokenizer.all_special_ids) - {eos}), dtype=torch.long)
    if budget is not None:
        budget = budget.repeat_interleave(groups, dim=0)
        budget[:, eos] = max_tokens + 1
    generated = torch.full((beams, max_tokens), tokenizer.pad_token_id, dtype=torch.long)
    last = torch.full((beams, 1), model.config.decoder_start_token_id, dtype=torch.long)
    running, finished = torch.zeros(batch, groups), torch.full((batch, groups), float("-inf"))
    finished_len, done = torch.zeros(batch, groups, dtype=torch.long), torch.zeros(batch, groups, dtype=torch.bool)
    cache = None
    for step in range(max_tokens):
        out = model(encoder_outputs=(hidden,), attention_mask=mask, decoder_input_ids=last, cache=cache, use_cache=True)
        cache = out.cache
        logp = out.logits[:, -1].float().log_softmax(-1)
        logp[:, banned] = float("-inf")
        if budget is not None:
            logp = logp.masked_fill(budget <= 0, float("-inf"))
        if step < min_tokens:
            logp[:, eos] = float("-inf")
        logp = logp.view(batch, groups, -1)
        chosen = torch.zeros(batch, logp.size(-1))
        tokens = torch.empty(batch, groups, dtype=torch.long)
        for g in range(groups):
            top_scores, top_tokens = (logp[:, g] - penalty * chosen + running[:, g, None]).topk(2, dim=-1)
            eos_first = (top_tokens[:, 0] == eos) & ~done[:, g]
            better = eos_first & (top_scores[:, 0] / (step + 1) > finished[:, g])
            finished[:, g] = torch.where(better, top_scores[:, 0] / (step + 1), finished[:, g])
            finished_len[:, g] = torch.where(better, step, finished_len[:, g])
            keep = torch.where(done[:, g], tokenizer.pad_token_id, torch.where(eos_first, top_tokens[:, 1], top_tokens[:, 0]))
            running[:, g] = torch.where(done[:, g], running[:, g], torch.where(eos_first, top_scores[:, 1], top_scores[:, 0]))
            chosen.scatter_add_(1, keep[:, None], (~done[:, g]).float()[:, None])
            tokens[:, g] = keep
            done[:, g] |= finished[:, g] >= running[:, g] / (step + 1)
        generated[:, step] = tokens.view(-1)
        if budget is not None:
            budget.scatter_add_(1, tokens.view(-1, 1), -(~done).view(-1, 1).long())
        last = tokens.view(-1, 1)
        if bool(done.all()):
            break
    better = ~done & (running / max_tokens > finished)
    finished = torch.where(better, running / max_tokens, finished)
    finished_len = torch.where(better, max_tokens, finished_len)
    return _ranked(generated.view(batch, groups, -1), finished, finished_len)


def _catalogue() -> SequenceDataset:
    """Near-duplicate product titles (many beams share prefixes, finish at different steps) and odd texts."""
    titles = [f"{colour} {thing} {size}" for colour in ("red", "blue", "green") for thing in ("mug", "lamp shade", "sock")
              for size in ("small", "large", "xl")] + ["", "!!!", "Epic " + "long words " * 60]
    texts = [f"title: {t}; categories: Home, Kitchen" if t else "" for t in titles]
    return SequenceDataset(name="catalogue", item_ids=[str(i) for i in range(len(titles))], item_titles=titles,
                           item_texts=texts, user_ids=["u"], sequences=[[0, 1, 2]])


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    folder = tmp_path_factory.mktemp("generator")
    params = Params(backbone=TINY, warmup=WarmupConfig(epochs=6, batch_size=8, learning_rate=3e-3, bf16=False), ids=IDS)
    warm_up_generator(_catalogue(), params, folder, progress=False)
    return load_seq2seq(folder)


def _same(got: list[list[Candidate]], expected: list[list[Candidate]]) -> None:
    assert [[c.tokens for c in item] for item in got] == [[c.tokens for c in item] for item in expected]
    assert [c.score for item in got for c in item] == pytest.approx([c.score for item in expected for c in item], abs=1e-5)


@pytest.mark.parametrize("penalty, min_tokens, max_tokens, compacts", [(1.0, 1, 6, True), (3.0, 3, 8, False), (0.0, 0, 4, False)])
def test_compacted_search_returns_the_dense_searchs_candidates(generator, penalty, min_tokens, max_tokens, compacts, monkeypatch):
    model, tokenizer = generator
    batch = tokenizer(_catalogue().item_texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    args = (model, tokenizer, batch.input_ids, batch.attention_mask, 5, penalty, min_tokens, max_tokens)
    rows_per_step = []
    step = diverse._Rows.step
    monkeypatch.setattr(diverse._Rows, "step", lambda self, model, last: rows_per_step.append(len(last)) or step(self, model, last))
    _same(diverse_beam_candidates(*args), dense_reference(*args))
    assert rows_per_step[0] == len(batch.input_ids)  # step 0: one row per item
    if compacts:  # these settings finish beams at different steps: done ones leave the batch
        assert min(rows_per_step[1:]) < len(batch.input_ids) * 5


def test_compacted_search_keeps_each_beams_token_budget(generator):
    model, tokenizer = generator
    batch = tokenizer(_catalogue().item_texts[:6], padding=True, return_tensors="pt")
    budget = torch.zeros(6, model.get_input_embeddings().num_embeddings, dtype=torch.long)
    budget.scatter_add_(1, batch.input_ids, batch.attention_mask)
    args = (model, tokenizer, batch.input_ids, batch.attention_mask, 4, 1.0, 1, 6)
    _same(diverse_beam_candidates(*args, budget=budget.clone()), dense_reference(*args, budget=budget.clone()))


def test_unique_ids_are_those_of_the_dense_search(generator, monkeypatch):
    """Same seed, same IDs: the whole algorithm (passes, penalties, fallbacks) over the dense search."""
    model, tokenizer = generator
    texts = _catalogue().item_texts
    ids, _ = generate_unique_ids(model, tokenizer, texts, IDS, progress=False)
    monkeypatch.setattr(unique_module, "diverse_beam_candidates",
                        lambda model, tokenizer, input_ids, attention_mask, groups, penalty, min_tokens, max_tokens, budget=None:
                        dense_reference(model, tokenizer, input_ids, attention_mask, groups, penalty, min_tokens, max_tokens, budget))
    reference, _ = generate_unique_ids(model, tokenizer, texts, IDS, progress=False)
    assert ids == reference
    assert len(set(ids)) == len(ids)
