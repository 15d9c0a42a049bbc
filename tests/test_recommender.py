"""Model behaviour of the recommender on a tiny random backbone and a planted pattern."""

from __future__ import annotations

import random

import pytest
import torch

from idgenrec.config import BackboneConfig, IdConfig, Params, PhaseConfig, TrainingConfig, WarmupConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.ids.trie import IdTrie
from idgenrec.recommender.decoding import beam_search
from idgenrec.recommender.samples import PromptEncoder, UserIdWriter, pad_batch, seen_item_branches, training_samples
from idgenrec.recommender.soft_ids import ItemTextInputs, anchor_loss, differentiable_greedy_decode, id_phase_loss
from idgenrec.recommender.training import (
    PromptBatches,
    iterate_batches,
    recommender_loss,
    seen_unlikelihood_loss,
    sequence_loss,
    train_recommender_phase,
)

pytestmark = pytest.mark.model

WORDS = ["apple pie", "banana split", "cherry tart", "date cake", "fig roll", "grape jam", "kiwi tea", "lemon curd"]
TINY = BackboneConfig(profile="tiny", hidden_size=32, encoder_layers=1, decoder_layers=1)


def planted_dataset(users: int = 24) -> SequenceDataset:
    """Item i is always followed by item i+1 (mod n)."""
    n = len(WORDS)
    rng = random.Random(0)
    sequences = []
    for _ in range(users):
        start = rng.randrange(n)
        sequences.append([(start + j) % n for j in range(rng.randint(6, 9))])
    return SequenceDataset(
        name="planted",
        item_ids=[str(i + 1) for i in range(n)],
        item_titles=WORDS,
        item_texts=[f"title: {w}; genres: food" for w in WORDS],
        user_ids=[f"u{u}" for u in range(users)],
        sequences=sequences,
    )


@pytest.fixture(scope="module")
def backbone():
    from idgenrec.backbone import build_seq2seq, build_tokenizer, vocabulary_corpus

    dataset = planted_dataset()
    tokenizer = build_tokenizer(TINY, vocabulary_corpus(dataset))
    torch.manual_seed(0)
    recommender = build_seq2seq(TINY, tokenizer, "recommender", seed=0)
    generator = build_seq2seq(TINY, tokenizer, "generator", seed=1)
    item_tokens = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in WORDS]
    return dataset, tokenizer, recommender, generator, item_tokens


def _train(recommender, tokenizer, item_tokens, dataset, epochs=60):
    encoder = PromptEncoder(tokenizer, item_tokens, history_length=3)
    samples = training_samples([dataset.train_sequence(u) for u in range(dataset.num_users)], 3)
    config = TrainingConfig(batch_size=16, bf16=False, warmup_ratio=0.0)
    source = PromptBatches(encoder, samples, config, recommender.config.decoder_start_token_id)
    losses = train_recommender_phase(
        recommender, source, config, PhaseConfig(phase="recommender", epochs=epochs, learning_rate=5e-3), seed=0
    )
    return encoder, losses


@pytest.fixture(scope="module")
def trained(backbone):
    dataset, tokenizer, recommender, generator, item_tokens = backbone
    encoder, losses = _train(recommender, tokenizer, item_tokens, dataset)
    return encoder, losses


def test_loss_falls_and_the_planted_pattern_is_learned(backbone, trained):
    dataset, tokenizer, recommender, _, item_tokens = backbone
    encoder, losses = trained
    assert losses[-1] < 0.3 * losses[0]
    trie = IdTrie(item_tokens, encoder.eos)
    prompts = [encoder.encode([i, (i + 1) % len(WORDS)]) for i in range(len(WORDS))]
    ids = pad_batch([p.input_ids for p in prompts], tokenizer.pad_token_id)
    result = beam_search(recommender, ids, (ids != tokenizer.pad_token_id).long(), 4, encoder.eos, trie, trie.max_depth)
    top1 = [items[0] for items in result.items]
    correct = sum(top == (i + 2) % len(WORDS) for i, top in enumerate(top1))
    assert correct >= len(WORDS) - 1


def test_constrained_beam_search_is_exact_when_beams_cover_the_catalogue(backbone):
    """With as many beams as items the search is exhaustive: every item comes back once,
    with the log-probability that teacher forcing gives its ID.

    The model is untrained on purpose: a trained one is so sure of each ID's last tokens that
    a decoder reading another beam's past tokens scores the same. Several prompts of different
    lengths in one batch check the cache: the self-attention half must follow the re-ranked
    beams, the cross-attention half must stay with each beam's own prompt.
    """
    from idgenrec.backbone import build_seq2seq

    _, tokenizer, _, _, item_tokens = backbone
    recommender = build_seq2seq(TINY, tokenizer, "recommender", seed=3).eval()
    encoder = PromptEncoder(tokenizer, item_tokens, history_length=3)
    trie = IdTrie(item_tokens, encoder.eos)
    prompts = [encoder.encode(history).input_ids for history in ([2, 3, 4], [6], [0, 1], [5, 7, 1])]
    ids = pad_batch(prompts, tokenizer.pad_token_id)
    result = beam_search(recommender, ids, (ids != tokenizer.pad_token_id).long(), len(WORDS), encoder.eos, trie, trie.max_depth)
    with torch.no_grad():
        for row, prompt in enumerate(prompts):
            assert sorted(result.items[row]) == list(range(len(WORDS)))
            assert result.scores[row] == sorted(result.scores[row], reverse=True)
            alone = torch.tensor([prompt])
            for item, score in zip(result.items[row], result.scores[row]):
                target = torch.tensor([encoder.target(item)])
                decoder_inputs = torch.tensor([[recommender.config.decoder_start_token_id, *encoder.target(item)[:-1]]])
                logits = recommender(input_ids=alone, attention_mask=torch.ones_like(alone), decoder_input_ids=decoder_inputs).logits
                expected = torch.log_softmax(logits.float(), -1).gather(-1, target[..., None]).sum().item()
                assert score == pytest.approx(expected, abs=2e-5)


def test_excluded_items_are_never_recommended(backbone, trained):
    dataset, tokenizer, recommender, _, item_tokens = backbone
    encoder, _ = trained
    trie = IdTrie(item_tokens, encoder.eos)
    ids = torch.tensor([encoder.encode([0, 1]).input_ids])
    excluded = {2, 3, 5}
    result = beam_search(recommender, ids, torch.ones_like(ids), 5, encoder.eos, trie, trie.max_depth, exclude=[excluded])
    # Every beam goes to a recommendable item: 5 beams give 5 items, none excluded.
    assert len(result.items[0]) == 5 and not excluded & set(result.items[0])
    assert all(item >= 0 for item in result.items[0])
    # With beams covering the catalogue, exclusion equals the exhaustive ranking minus the excluded items.
    full = beam_search(recommender, ids, torch.ones_like(ids), len(WORDS), encoder.eos, trie, trie.max_depth)
    wide = beam_search(recommender, ids, torch.ones_like(ids), len(WORDS), encoder.eos, trie, trie.max_depth, exclude=[excluded])
    assert wide.items[0] == [item for item in full.items[0] if item not in excluded]


def test_soft_ids_use_real_probabilities_and_stop_at_eos(backbone):
    dataset, tokenizer, _, generator, _ = backbone
    inputs = ItemTextInputs(tokenizer, dataset.item_texts, 32)
    ids, mask = inputs.batch([0, 1, 2], "cpu")
    probs, keep = differentiable_greedy_decode(generator, ids, mask, 5, tokenizer.sep_token_id)
    assert torch.allclose(probs.sum(-1), torch.ones(probs.shape[:2]), atol=1e-4)
    assert keep[:, 0].all()
    # once a step is dropped (eos reached) no later step is kept
    assert (keep[:, 1:] <= keep[:, :-1]).all()


@pytest.mark.parametrize("anchor_weight", [0.0, 1.0])
def test_id_phase_gradients_reach_the_generator_and_never_the_recommender(backbone, trained, anchor_weight):
    dataset, tokenizer, recommender, generator, _ = backbone
    encoder, _ = trained
    for p in recommender.parameters():
        p.requires_grad_(False)
    try:
        inputs = ItemTextInputs(tokenizer, dataset.item_texts, 32)
        prompts = [encoder.encode([0, 1, 2]), encoder.encode([4, 5])]
        targets = [encoder.target(3), encoder.target(6)]
        generator.zero_grad(set_to_none=True)
        recommender.zero_grad(set_to_none=True)
        current = [encoder.target(i) for i in range(dataset.num_items)]
        loss = id_phase_loss(
            generator, recommender, prompts, targets, inputs, 4, encoder.eos, tokenizer.pad_token_id, current, anchor_weight
        )
        loss.backward()
    finally:
        for p in recommender.parameters():
            p.requires_grad_(True)
    generator_grads = [p.grad for p in generator.parameters() if p.grad is not None]
    assert generator_grads and any(g.abs().sum() > 0 for g in generator_grads)
    assert all(p.grad is None for p in recommender.parameters())


def test_id_phase_anchor_adds_the_generators_loss_on_the_current_ids(backbone, trained):
    dataset, tokenizer, recommender, generator, _ = backbone
    encoder, _ = trained
    inputs = ItemTextInputs(tokenizer, dataset.item_texts, 32)
    prompts, targets = [encoder.encode([0, 1, 2])], [encoder.target(3)]
    current = [encoder.target(i) for i in range(dataset.num_items)]
    with torch.no_grad():
        plain = id_phase_loss(generator, recommender, prompts, targets, inputs, 4, encoder.eos, tokenizer.pad_token_id)
        anchored = id_phase_loss(
            generator, recommender, prompts, targets, inputs, 4, encoder.eos, tokenizer.pad_token_id, current, 2.0
        )
        anchor = anchor_loss(generator, *inputs.batch([0, 1, 2], "cpu"), [current[i] for i in (0, 1, 2)], tokenizer.pad_token_id)
    assert anchor > 0
    torch.testing.assert_close(anchored, plain + 2.0 * anchor)


def _tiny_params(schedule) -> Params:
    return Params(
        backbone=TINY,
        warmup=WarmupConfig(epochs=3, batch_size=8, learning_rate=3e-3),
        ids=IdConfig(beam_groups=4, batch_size=8),
        training=TrainingConfig(
            history_length=3, batch_size=16, bf16=False, num_beams=4, soft_id_max_tokens=4, schedule=schedule
        ),
    )


THREE_PHASES = [  # recommender, ID phase, recommender on the new IDs
    PhaseConfig(phase="recommender", epochs=2, learning_rate=3e-3),
    PhaseConfig(phase="ids", epochs=0.5, learning_rate=1e-3),
    PhaseConfig(phase="recommender", epochs=1, learning_rate=1e-3),
]


def warm_generator_and_ids(tmp_path, dataset, params, device: str = "cpu") -> None:
    """Write ``generator/`` and ``ids.tsv`` under ``tmp_path``: the inputs of ``alternating.train``."""
    from idgenrec.backbone import load_seq2seq
    from idgenrec.ids import make_id_table, warm_up_generator

    warm_up_generator(dataset, params, tmp_path / "generator")
    generator, tokenizer = load_seq2seq(tmp_path / "generator")
    table, _ = make_id_table("learned", dataset, generator.to(device), tokenizer, params.ids)
    table.save(tmp_path / "ids.tsv")


def folder_bytes(folder) -> dict:
    """Every file's bytes by relative path, but the wall-clock timings (.dvcignore skips them)."""
    from idgenrec.recommender.alternating import TIMINGS

    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != TIMINGS}


def test_resumed_run_ends_like_an_uninterrupted_one(tmp_path):
    from idgenrec.recommender import alternating

    dataset = planted_dataset()
    params = _tiny_params(THREE_PHASES)
    warm_generator_and_ids(tmp_path, dataset, params)

    full = alternating.train(params, dataset, tmp_path / "generator", tmp_path / "ids.tsv", tmp_path / "full")

    # Interrupted after the first phase, then resumed by calling train() again.
    alternating.start_or_resume(params, dataset, tmp_path / "generator", tmp_path / "ids.tsv", tmp_path / "resumed")
    alternating.run_phase(params, dataset, tmp_path / "resumed", 0)
    resumed = alternating.train(params, dataset, tmp_path / "generator", tmp_path / "ids.tsv", tmp_path / "resumed")

    drop_time = lambda records: [{k: v for k, v in r.items() if "second" not in k} for r in records]
    assert drop_time(resumed.records) == drop_time(full.records)
    # Timings come back with the state (the curve and MLflow log them) but are kept out of the
    # files DVC hashes: the two runs took different times and wrote the same folder.
    assert all(r["seconds"] > 0 for r in full.records)
    assert folder_bytes(tmp_path / "full") == folder_bytes(tmp_path / "resumed")
    # every validation records its top-k lists' catalogue coverage: a collapsed run shows there
    validations = [r for r in full.records if r["phase"] == "recommender"]
    assert validations and all(0 < r[f"valid_coverage@{max(params.evaluation.ks)}"] <= 1 for r in validations)

    # A damaged checkpoint of the finished run (DVC reruns the stage when its folder changed): resuming would keep
    # it, so the run starts over and, deterministic, ends with the same bytes.
    intact = folder_bytes(tmp_path / "full")
    weights = tmp_path / "full" / alternating.BEST / "recommender" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    alternating.train(params, dataset, tmp_path / "generator", tmp_path / "ids.tsv", tmp_path / "full")
    assert folder_bytes(tmp_path / "full") == intact
    assert resumed.best_score == full.best_score
    assert (tmp_path / "full" / "rounds" / "ids-02.tsv").exists()
    a = (tmp_path / "full" / "current" / "item_ids.tsv").read_text()
    b = (tmp_path / "resumed" / "current" / "item_ids.tsv").read_text()
    assert a == b
    # Same params, new data: the finished run must not be taken for this one.
    assert alternating.start_or_resume(params, dataset, tmp_path / "generator", tmp_path / "ids.tsv", tmp_path / "full").completed_phases == 3
    grown = planted_dataset(users=30)
    state = alternating.start_or_resume(params, grown, tmp_path / "generator", tmp_path / "ids.tsv", tmp_path / "full")
    assert state.completed_phases == 0


def test_a_lost_or_broken_timings_file_costs_the_timings_only(tmp_path, caplog):
    """The state resumes without its seconds; a missing file is normal (``dvc checkout``), a bad one warns."""
    from idgenrec.recommender.alternating import TIMINGS, TrainingState

    records = [{"phase": "recommender", "valid_ndcg@10": 0.1, "seconds": 12.5}, {"phase": "ids", "ids_seconds": 3.0}]
    TrainingState(fingerprint="f", completed_phases=2, best_score=0.1, records=records).save(tmp_path)
    assert TrainingState.load(tmp_path).records == records
    untimed = [{"phase": "recommender", "valid_ndcg@10": 0.1}, {"phase": "ids"}]

    timings = tmp_path / TIMINGS
    good = timings.read_text()
    for broken, expected in [("[{}]", "does not match the 2 records"), ('[{"seconds": 1', "unreadable")]:
        timings.write_text(broken)
        caplog.clear()
        with caplog.at_level("WARNING", logger="idgenrec"):
            assert TrainingState.load(tmp_path).records == untimed
        assert f"{timings}: {expected}" in caplog.text
    timings.unlink()
    caplog.clear()
    with caplog.at_level("WARNING", logger="idgenrec"):
        state = TrainingState.load(tmp_path)
    assert state.records == untimed and state.completed_phases == 2
    assert caplog.text == ""
    timings.write_text(good)
    assert TrainingState.load(tmp_path).records == records


def test_a_finished_run_is_not_resumed_after_a_change_to_the_training_code_or_to_selection(tmp_path, monkeypatch, caplog):
    """DVC reruns `train` on its kept folder after a code change: that must retrain, not resume."""
    from idgenrec.recommender import alternating

    dataset = planted_dataset()
    params = _tiny_params([PhaseConfig(phase="recommender", epochs=0.5, learning_rate=1e-3)])
    warm_generator_and_ids(tmp_path, dataset, params)
    code = tmp_path / "code"
    (code / "recommender").mkdir(parents=True)
    (code / "recommender" / "training.py").write_text("STEP = 1\n")
    (code / "evaluation.py").write_text("K = 10\n")
    monkeypatch.setattr(alternating, "PACKAGE_ROOT", code)
    monkeypatch.setattr(alternating, "TRAINING_CODE", ("recommender", "evaluation.py"))
    inputs = (dataset, tmp_path / "generator", tmp_path / "ids.tsv", tmp_path / "run")

    alternating.train(params, *inputs)
    assert alternating.start_or_resume(params, *inputs).completed_phases == 1  # same code: resumed, nothing to run
    (code / "recommender" / "__pycache__").mkdir()
    (code / "recommender" / "__pycache__" / "training.pyc").write_bytes(b"compiled")  # not source: no change
    assert alternating.start_or_resume(params, *inputs).completed_phases == 1

    (code / "recommender" / "training.py").write_text("STEP = 2\n")
    with caplog.at_level("INFO", logger="idgenrec"):
        assert alternating.start_or_resume(params, *inputs).completed_phases == 0  # retrains from the start
    assert "other params, inputs or training code (phases finished: 1); starting over" in caplog.text
    alternating.train(params, *inputs)
    other_selection = params.model_copy(update={"evaluation": params.evaluation.model_copy(update={"exclude_seen": not params.evaluation.exclude_seen})})
    assert alternating.start_or_resume(other_selection, *inputs).completed_phases == 0
    alternating.train(params, *inputs)
    report_only = params.model_copy(update={"evaluation": params.evaluation.model_copy(update={"sample_users": 5})})
    assert alternating.start_or_resume(report_only, *inputs).completed_phases == 1  # the final report's users only


def test_user_ids_are_written_from_the_items_before_the_target_only():
    writer = UserIdWriter(["red apple", "green apple", "red wine", "blue cheese"], words=2)
    assert writer([0, 1]) == "apple green"  # apple twice; green and red once each, green more recent
    assert writer([0, 1, 2]) == "red apple"  # red now twice and more recent than apple
    assert writer([]) == ""
    sequence = [0, 1, 2, 3, 2]
    samples = training_samples([sequence], history_length=2, user_ids=writer)
    assert [s.user_id for s in samples] == [writer(sequence[:i]) for i in range(1, len(sequence))]
    # What comes at or after the target never changes the user's ID (the reference code's leak).
    changed = training_samples([[0, 1, 3, 3, 3]], history_length=2, user_ids=writer)
    assert [s.user_id for s in changed][:2] == [s.user_id for s in samples][:2]
    assert all(s.user_id == "" for s in training_samples([sequence], history_length=2))


def test_later_targets_come_from_the_training_sequence_after_the_target():
    samples = training_samples([[5, 6, 7, 8, 9]], history_length=2, later_targets=2)
    assert [(s.history, s.target, s.later) for s in samples] == [
        ((5,), 6, (7, 8)), ((5, 6), 7, (8, 9)), ((6, 7), 8, (9,)), ((7, 8), 9, ()),
    ]
    assert all(s.later == () for s in training_samples([[5, 6, 7, 8, 9]], history_length=2))


def test_later_targets_share_their_prompts_encoder_pass(backbone):
    """A batch whose prompts carry later targets has the loss of the same targets with each prompt
    repeated once per target: the shared encoder pass changes the cost, not the objective."""
    dataset, tokenizer, recommender, _, item_tokens = backbone
    encoder = PromptEncoder(tokenizer, item_tokens, history_length=3)
    samples = training_samples([dataset.train_sequence(u) for u in range(4)], 3, later_targets=2)
    config = TrainingConfig(batch_size=8, bf16=False)
    start = recommender.config.decoder_start_token_id
    indices = list(range(len(samples)))
    batch = next(iterate_batches(encoder, samples, indices, config, random.Random(0), tokenizer.pad_token_id, start))
    targets_per_prompt = torch.bincount(batch.target_rows, minlength=len(batch.prompts))
    assert batch.labels.size(0) > len(batch.prompts) and targets_per_prompt.min() >= 1
    repeated = pad_batch([batch.prompts[r].input_ids for r in batch.target_rows.tolist()], tokenizer.pad_token_id)
    with torch.no_grad():
        shared = recommender_loss(recommender, batch, torch.device("cpu"))
        logits = recommender(
            input_ids=repeated,
            attention_mask=(repeated != tokenizer.pad_token_id).long(),
            decoder_input_ids=batch.decoder_input_ids,
        ).logits
        expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), ignore_index=-100)
    assert shared.item() == pytest.approx(expected.item(), rel=1e-5)


def test_later_target_batches_have_one_decoder_shape_and_the_same_loss(backbone):
    """With later targets every batch pads its decoder side to one shape (a fixed shape keeps
    glibc's heap from fragmenting); the padding rows and tokens are masked, so the loss is unchanged."""
    dataset, tokenizer, recommender, _, item_tokens = backbone
    encoder = PromptEncoder(tokenizer, item_tokens, history_length=3)
    samples = training_samples([dataset.train_sequence(u) for u in range(6)], 3, later_targets=2)
    assert any(len(s.later) < 2 for s in samples)  # sequence ends: fewer later items than asked for
    start, pad = recommender.config.decoder_start_token_id, tokenizer.pad_token_id
    indices = list(range(len(samples)))
    width = max(len(encoder.target(item)) for item in range(len(item_tokens)))

    def batches(later_targets):
        config = TrainingConfig(batch_size=4, bf16=False, later_targets=later_targets)
        return list(iterate_batches(encoder, samples, indices, config, random.Random(0), pad, start))

    fixed, ragged = batches(2), batches(0)
    assert len(fixed) == len(ragged) > 1
    padding_rows = 0
    for padded, plain in zip(fixed, ragged):
        assert padded.labels.shape == (3 * len(padded.prompts), width)
        assert torch.equal(padded.target_rows, torch.arange(len(padded.prompts)).repeat_interleave(3))
        real = (padded.labels != -100).any(dim=1)
        assert real.sum() == plain.labels.size(0)
        padding_rows += int((~real).sum())
        with torch.no_grad():
            assert recommender_loss(recommender, padded, torch.device("cpu")).item() == pytest.approx(
                recommender_loss(recommender, plain, torch.device("cpu")).item(), rel=1e-5
            )
    assert padding_rows > 0


def test_seen_item_branches_mark_where_a_history_id_leaves_the_target():
    eos = 2
    target = [5, 6, 7, eos]
    history = [[5, 6, 9, eos], [8, eos], [5, 6, 7, eos], [5, 6, eos], [5, 6, 9, 4, eos]]
    branches = seen_item_branches([target, [8, eos]], [history, [[8, eos], [3, eos]]])
    # (row, step, token): 9 and eos part at step 2, 8 at step 0; the repeat [5, 6, 7] is skipped,
    # and the two IDs that both continue with 9 after [5, 6] give one branch.
    assert branches.tolist() == [[0, 0, 8], [0, 2, 2], [0, 2, 9], [1, 0, 3]]
    assert seen_item_branches([target], [[]]).shape == (0, 3)


def _teacher_forced_logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                     decoder_input_ids=batch.decoder_input_ids).logits


def _seen_branch_probabilities(logits, batch) -> torch.Tensor:
    """The probability of each token that would leave its target's ID for a seen item's."""
    rows, steps, tokens = batch.seen_branches.unbind(1)
    return torch.softmax(logits[rows, steps], dim=-1).gather(1, tokens.unsqueeze(1)).squeeze(1)


def test_seen_unlikelihood_adds_minus_log_one_minus_p_and_trains_seen_items_down(backbone):
    dataset, tokenizer, recommender, _, item_tokens = backbone
    encoder = PromptEncoder(tokenizer, item_tokens, history_length=3)
    samples = training_samples([dataset.train_sequence(u) for u in range(dataset.num_users)], 3)
    start, pad = recommender.config.decoder_start_token_id, tokenizer.pad_token_id

    def first_batch(weight):
        config = TrainingConfig(batch_size=16, bf16=False, seen_unlikelihood=weight)
        return next(iterate_batches(encoder, samples, list(range(len(samples))), config, random.Random(0), pad, start))

    batch = first_batch(2.0)
    assert first_batch(0.0).seen_branches is None and len(batch.seen_branches) > 0
    logits = _teacher_forced_logits(recommender, batch)
    p = _seen_branch_probabilities(logits, batch)
    expected = sequence_loss(logits, batch.labels) - 2.0 * torch.log1p(-p).sum() / batch.labels.size(0)
    with torch.no_grad():
        assert recommender_loss(recommender, batch, torch.device("cpu"), 2.0).item() == pytest.approx(expected.item(), rel=1e-4)
        assert seen_unlikelihood_loss(logits, batch.seen_branches[:0], batch.labels.size(0)).item() == 0.0

    # Same fresh start, data and seed (not the module's model, which other tests train): with the
    # term, the seen items' branches end up less likely.
    from idgenrec.backbone import build_seq2seq

    after = {}
    for weight in (0.0, 5.0):
        model = build_seq2seq(TINY, tokenizer, "recommender", seed=0)
        config = TrainingConfig(batch_size=16, bf16=False, warmup_ratio=0.0, seen_unlikelihood=weight)
        source = PromptBatches(encoder, samples, config, model.config.decoder_start_token_id)
        train_recommender_phase(model, source, config, PhaseConfig(phase="recommender", epochs=3, learning_rate=5e-3), seed=0)
        after[weight] = _seen_branch_probabilities(_teacher_forced_logits(model.eval(), batch), batch).mean().item()
    assert after[5.0] < 0.7 * after[0.0]  # measured: 0.024 against 0.049


def test_a_user_id_goes_into_the_prompt_and_leaves_the_item_spans_intact(backbone):
    dataset, tokenizer, _, _, item_tokens = backbone
    encoder = PromptEncoder(tokenizer, item_tokens, history_length=3)
    anonymous, named = encoder.encode([0, 1, 2]), encoder.encode([0, 1, 2], user_id="apple pie")
    assert "the user" in tokenizer.decode(anonymous.input_ids)
    assert "user apple pie" in tokenizer.decode(named.input_ids)
    for prompt in (anonymous, named):
        assert [prompt.input_ids[a:b] for a, b, _ in prompt.item_spans] == [item_tokens[i] for i in (0, 1, 2)]


def test_a_prompt_longer_than_the_recommenders_positions_keeps_its_most_recent_items(backbone):
    from idgenrec.backbone import prompt_token_limit

    dataset, tokenizer, recommender, _, item_tokens = backbone
    assert prompt_token_limit(recommender) == 512  # MiniLM-style learned positions
    full = PromptEncoder(tokenizer, item_tokens, history_length=6).encode([0, 1, 2, 3, 4, 5])
    fits_three = len(full.input_ids) - (full.item_spans[3][0] - full.item_spans[0][0])  # items 3, 4, 5 and the rest
    limited = PromptEncoder(tokenizer, item_tokens, history_length=6, max_tokens=fits_three).encode([0, 1, 2, 3, 4, 5])
    assert len(limited.input_ids) <= fits_three
    assert [item for _, _, item in limited.item_spans] == [3, 4, 5]
    assert [limited.input_ids[a:b] for a, b, _ in limited.item_spans] == [item_tokens[i] for i in (3, 4, 5)]
    with pytest.raises(ValueError, match="without any history, more than the recommender's 5 positions"):
        PromptEncoder(tokenizer, item_tokens, history_length=6, max_tokens=5).encode([0, 1])


def test_a_soft_id_prompt_beyond_the_recommenders_positions_keeps_its_most_recent_items(backbone):
    from idgenrec.recommender.soft_ids import soft_prompt_embeddings

    _, tokenizer, recommender, _, item_tokens = backbone
    prompt = PromptEncoder(tokenizer, item_tokens, history_length=3).encode([0, 1, 2])
    embedding = recommender.get_input_embeddings()
    dim = embedding.weight.size(1)
    soft = torch.arange(1, 4).float().view(3, 1, 1).expand(3, 9, dim).clone()  # item i's soft ID: 9 vectors of i + 1
    keep = torch.ones(3, 9, dtype=torch.bool)
    keep[2, 5:] = False  # item 2's soft ID ended after 5 tokens
    rows = {0: 0, 1: 1, 2: 2}
    (a0, b0, _), (a1, b1, _), (a2, b2, _) = prompt.item_spans
    length = len(prompt.input_ids) - (b0 - a0) - (b1 - a1) - (b2 - a2) + 9 + 9 + 5
    embeds, mask = soft_prompt_embeddings([prompt], soft, keep, rows, embedding, max_tokens=length)
    assert embeds.shape[1] == length and int(mask.sum()) == length

    # One position short: the oldest item and the separator after it go, as PromptEncoder drops text items.
    embeds, mask = soft_prompt_embeddings([prompt], soft, keep, rows, embedding, max_tokens=length - 1)
    without_oldest = length - 9 - (a1 - b0)
    assert int(mask.sum()) == without_oldest
    values = embeds[0, :, 0].tolist()
    assert values.count(1.0) == 0 and values.count(2.0) == 9 and values.count(3.0) == 5
    hard = embedding(torch.tensor(prompt.input_ids))
    assert torch.equal(embeds[0, :a0], hard[:a0])  # the template before the history is whole
    assert torch.equal(embeds[0, a0 : a0 + 9], soft[1])  # then item 1's soft ID, where item 0's text began
    assert torch.equal(embeds[0, without_oldest - (len(prompt.input_ids) - b2) : without_oldest], hard[b2:])

    only_last = len(prompt.input_ids) - (b2 - a0) + 5
    embeds, mask = soft_prompt_embeddings([prompt], soft, keep, rows, embedding, max_tokens=only_last)
    assert int(mask.sum()) == only_last
    with pytest.raises(ValueError, match=f"{only_last} tokens with only its last history item, more than the recommender's {only_last - 1} positions: lower training.soft_id_max_tokens"):
        soft_prompt_embeddings([prompt], soft, keep, rows, embedding, max_tokens=only_last - 1)


@pytest.mark.parametrize("user_id_words", [0, 2])
def test_saved_model_loads_and_recommends_the_same(tmp_path, backbone, trained, user_id_words):
    from idgenrec.ids import ItemIdTable
    from idgenrec.recommender.model import DecodingSettings, IDGenRecModel

    dataset, tokenizer, recommender, generator, _ = backbone
    table = ItemIdTable(item_ids=dataset.item_ids, textual_ids=WORDS)
    settings = DecodingSettings(3, 4, bf16=False, user_id_words=user_id_words)
    model = IDGenRecModel(recommender, tokenizer, table, settings, generator)
    histories = [[0, 1], [3, 4, 5]]
    before = model.recommend_with_scores(histories, k=3)
    model.save(tmp_path / "model")
    after = IDGenRecModel.load(tmp_path / "model").recommend_with_scores(histories, k=3)
    assert before[0] == after[0]
    for row_before, row_after in zip(before[1], after[1]):
        assert row_before == pytest.approx(row_after, abs=1e-5)
    assert all(len(items) == 3 for items in after[0])


def test_training_with_user_ids_carries_them_into_the_selected_model(tmp_path, backbone):
    from idgenrec.backbone import save_seq2seq
    from idgenrec.ids import ItemIdTable
    from idgenrec.recommender import alternating
    from idgenrec.recommender.model import IDGenRecModel

    dataset, tokenizer, _, generator, _ = backbone
    params = _tiny_params([PhaseConfig(phase="recommender", epochs=2, learning_rate=3e-3)])
    params = params.model_copy(update={"training": params.training.model_copy(update={"user_id_words": 2})})
    save_seq2seq(generator, tokenizer, tmp_path / "generator")
    ItemIdTable(item_ids=dataset.item_ids, textual_ids=WORDS).save(tmp_path / "ids.tsv")
    state = alternating.train(params, dataset, tmp_path / "generator", tmp_path / "ids.tsv", tmp_path / "run")
    assert state.best_score is not None
    model = IDGenRecModel.load(tmp_path / "run" / alternating.BEST)
    assert model.settings.user_id_words == 2
    recommended = model.recommend([dataset.sequences[0][:-1]], k=3)[0]
    assert len(recommended) == 3 and all(0 <= item < dataset.num_items for item in recommended)
