"""The causal (decoder-only) recommender on a tiny random backbone and the planted pattern."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from idgenrec.config import BackboneConfig, Params, PhaseConfig, TrainingConfig
from idgenrec.ids.trie import IdTrie
from idgenrec.recommender.decoding import beam_search
from idgenrec.recommender.samples import TrainingSample, pad_batch, training_samples
from idgenrec.recommender.sequences import SequenceEncoder, TrainingWindow, training_windows
from idgenrec.recommender.training import WindowBatches, sequence_batch_loss, train_recommender_phase
from test_recommender import THREE_PHASES, WORDS, _tiny_params, folder_bytes, planted_dataset, warm_generator_and_ids

pytestmark = pytest.mark.model

TINY_CAUSAL = BackboneConfig(
    profile="tiny", hidden_size=32, encoder_layers=1, decoder_layers=1, architecture="causal", causal_layers=2,
    causal_dropout=0.0,
)


@pytest.fixture(scope="module")
def backbone():
    from idgenrec.backbone import build_seq2seq, build_tokenizer, vocabulary_corpus
    from idgenrec.backbone.causal import build_causal

    dataset = planted_dataset()
    tokenizer = build_tokenizer(TINY_CAUSAL, vocabulary_corpus(dataset))
    recommender = build_causal(TINY_CAUSAL, tokenizer, seed=0)
    generator = build_seq2seq(TINY_CAUSAL, tokenizer, "generator", seed=1)
    item_tokens = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in WORDS]
    return dataset, tokenizer, recommender, generator, item_tokens


@pytest.fixture(scope="module")
def trained(backbone):
    dataset, tokenizer, recommender, _, item_tokens = backbone
    encoder = SequenceEncoder(tokenizer, item_tokens, history_length=5)
    windows = training_windows([dataset.train_sequence(u) for u in range(dataset.num_users)], 5, 4)
    config = TrainingConfig(batch_size=8, bf16=False, warmup_ratio=0.0, history_length=5, window_stride=4)
    losses = train_recommender_phase(
        recommender, WindowBatches(encoder, windows, config), config,
        PhaseConfig(phase="recommender", epochs=60, learning_rate=5e-3), seed=0,
    )
    return encoder, losses


def test_windows_make_every_item_but_the_first_a_target_once_with_context_before_it():
    sequences = [list(range(10)), [7, 8], [5]]
    windows = training_windows(sequences, length=4, stride=3)
    targets = {user: [] for user in range(len(sequences))}
    for window in windows:
        assert 1 <= window.first_target < len(window.items) <= 4
        targets[window.user] += window.items[window.first_target :]
    assert sorted(targets[0]) == list(range(1, 10))
    assert targets[1] == [8] and targets[2] == []
    # A stride as long as the window is capped so each window's first target keeps one item of context.
    assert all(w.first_target >= 1 for w in training_windows(sequences, length=4, stride=4))


def test_a_sequence_is_labelled_with_the_next_token_on_its_targets_only(backbone):
    _, tokenizer, _, _, item_tokens = backbone
    encoder = SequenceEncoder(tokenizer, item_tokens, history_length=5)
    encoded = encoder.encode_items([0, 1, 2], first_target=1)
    ids, labels = encoded.input_ids, encoded.labels
    assert ids[: len(encoder.prefix)] == encoder.prefix
    assert ids[-1] == encoder.eos and ids.count(encoder.eos) == 3
    scored = [(t, label) for t, label in enumerate(labels) if label != -100]
    # the tokens of items 1 and 2 and the separator closing each, each predicted from the position before it
    assert [label for _, label in scored] == [*encoder.target(1), *encoder.target(2)]
    assert all(ids[t + 1] == label for t, label in scored)
    assert scored[0][0] == encoded.item_spans[1][0] - 1  # item 1's first token, read off the separator before it


def test_a_window_too_long_for_the_positions_keeps_its_most_recent_items(backbone):
    _, tokenizer, _, _, item_tokens = backbone
    full = SequenceEncoder(tokenizer, item_tokens, history_length=6).encode_window(TrainingWindow(0, (0, 1, 2, 3, 4, 5), 1))
    limit = len(full.input_ids) - 4
    short = SequenceEncoder(tokenizer, item_tokens, 6, max_tokens=limit).encode_window(TrainingWindow(0, (0, 1, 2, 3, 4, 5), 1))
    assert len(short.input_ids) <= limit
    kept = [item for *_, item in short.item_spans]
    assert kept == [2, 3, 4, 5]  # items 0 and 1 (3 tokens each with their separators) no longer fit
    targets = [item for position, (*_, item) in enumerate(short.item_spans) if short.labels[short.item_spans[position][0] - 1] != -100]
    assert targets == kept[1:]  # the oldest kept item becomes context


def test_loss_falls_and_the_planted_pattern_is_learned(backbone, trained):
    dataset, tokenizer, recommender, _, item_tokens = backbone
    encoder, losses = trained
    assert losses[-1] < 0.3 * losses[0]
    trie = IdTrie(item_tokens, encoder.eos)
    histories = [[i, (i + 1) % len(WORDS)] for i in range(len(WORDS))]
    inputs = pad_batch([encoder.encode(h).input_ids for h in histories], tokenizer.pad_token_id)
    result = beam_search(recommender, inputs, (inputs != tokenizer.pad_token_id).long(), 4, encoder.eos, trie, trie.max_depth)
    correct = sum(items[0] == (i + 2) % len(WORDS) for i, items in enumerate(result.items))
    assert correct >= len(WORDS) - 1


def test_constrained_beam_search_is_exact_and_padding_free_when_beams_cover_the_catalogue(backbone):
    """Exhaustive search over right-padded histories of different lengths: every item once, scored as
    teacher forcing scores it on the history alone (the padding and the other rows change nothing)."""
    from idgenrec.backbone.causal import build_causal

    _, tokenizer, _, _, item_tokens = backbone
    recommender = build_causal(TINY_CAUSAL, tokenizer, seed=3).eval()
    encoder = SequenceEncoder(tokenizer, item_tokens, history_length=5)
    trie = IdTrie(item_tokens, encoder.eos)
    histories = ([2, 3, 4], [6], [0, 1], [5, 7, 1, 2, 3])
    inputs = pad_batch([encoder.encode(h).input_ids for h in histories], tokenizer.pad_token_id)
    result = beam_search(recommender, inputs, (inputs != tokenizer.pad_token_id).long(), len(WORDS), encoder.eos, trie, trie.max_depth)
    with torch.no_grad():
        for row, history in enumerate(histories):
            assert sorted(result.items[row]) == list(range(len(WORDS)))
            assert result.scores[row] == sorted(result.scores[row], reverse=True)
            prompt = encoder.encode(history).input_ids
            for item, score in zip(result.items[row], result.scores[row]):
                sequence = torch.tensor([prompt + encoder.target(item)])
                log_probs = torch.log_softmax(recommender(input_ids=sequence).logits.float(), -1)[0]
                written = range(len(prompt) - 1, sequence.size(1) - 1)
                expected = sum(log_probs[t, sequence[0, t + 1]].item() for t in written)
                assert score == pytest.approx(expected, abs=2e-5)


def test_only_target_positions_are_scored_and_padding_changes_nothing(backbone):
    _, tokenizer, _, _, item_tokens = backbone
    from idgenrec.backbone.causal import build_causal
    from idgenrec.recommender.sequences import collate_sequences

    model = build_causal(TINY_CAUSAL, tokenizer, seed=4).eval()
    encoder = SequenceEncoder(tokenizer, item_tokens, history_length=6)
    long = encoder.encode_items([0, 1, 2, 3, 4], first_target=2)
    short = encoder.encode_items([5, 6], first_target=1)
    cpu = torch.device("cpu")
    with torch.no_grad():
        together = sequence_batch_loss(model, collate_sequences([long, short], tokenizer.pad_token_id), cpu)
        logits = [torch.log_softmax(model(input_ids=torch.tensor([s.input_ids])).logits[0].float(), -1) for s in (long, short)]
    terms = [-lp[t, label].item() for s, lp in zip((long, short), logits) for t, label in enumerate(s.labels) if label != -100]
    assert together.item() == pytest.approx(sum(terms) / len(terms), abs=1e-5)


def test_seen_branches_mark_where_each_earlier_item_leaves_a_targets_id(backbone):
    _, tokenizer, _, _, item_tokens = backbone
    a, b, c, d = (item_tokens[i][0] for i in range(4))
    encoder = SequenceEncoder(tokenizer, [[a, b], [a, c], [d], [a, b, c]], history_length=6)
    encoded = encoder.encode_items([0, 1, 2, 3], first_target=1, seen_branches=True)
    starts = [start for start, _, _ in encoded.item_spans]
    # Step s of a target is predicted at its span's start - 1 + s. Item 1 [a c ;] leaves item 0 [a b ;]
    # at step 1; item 2 [d ;] leaves both at step 0 on a (once); item 3 [a b c ;] leaves item 0 at
    # step 2 (its separator), item 1 at step 1 (c), item 2 at step 0 (d).
    assert sorted(encoded.seen_branches) == sorted([
        (starts[1], b), (starts[2] - 1, a), (starts[3] + 1, encoder.eos), (starts[3], c), (starts[3] - 1, d),
    ])
    assert all(encoded.labels[position] not in (-100, token) for position, token in encoded.seen_branches)
    assert encoder.encode_items([0, 1, 2, 3], first_target=1).seen_branches == ()


def test_seen_unlikelihood_on_a_window_adds_minus_log_one_minus_p_per_labelled_position(backbone):
    _, tokenizer, _, _, item_tokens = backbone
    from idgenrec.backbone.causal import build_causal
    from idgenrec.recommender.sequences import collate_sequences

    model = build_causal(TINY_CAUSAL, tokenizer, seed=4).eval()
    encoder = SequenceEncoder(tokenizer, item_tokens, history_length=6)
    windows = [encoder.encode_items([0, 1, 2, 3, 4], first_target=2, seen_branches=True),
               encoder.encode_items([5, 6], first_target=1, seen_branches=True)]
    batch = collate_sequences(windows, tokenizer.pad_token_id, seen_branches=True)
    cpu = torch.device("cpu")
    with torch.no_grad():
        plain = sequence_batch_loss(model, batch, cpu).item()
        weighted = sequence_batch_loss(model, batch, cpu, seen_weight=2.0).item()
        probabilities = [torch.softmax(model(input_ids=torch.tensor([s.input_ids])).logits[0].float(), -1) for s in windows]
    labelled = sum(label != -100 for s in windows for label in s.labels)
    term = -sum(torch.log1p(-p[t, token]).item() for s, p in zip(windows, probabilities) for t, token in s.seen_branches)
    assert len(batch.seen_branches) == sum(len(s.seen_branches) for s in windows) > 0
    assert weighted == pytest.approx(plain + 2.0 * term / labelled, rel=1e-5)


def test_item_loss_is_the_catalogue_cross_entropy_of_mean_id_token_logits_where_each_target_starts(backbone):
    _, tokenizer, _, _, item_tokens = backbone
    from idgenrec.backbone.causal import build_causal
    from idgenrec.recommender.item_scores import catalogue_tokens
    from idgenrec.recommender.sequences import collate_sequences

    model = build_causal(TINY_CAUSAL, tokenizer, seed=5).eval()
    encoder = SequenceEncoder(tokenizer, item_tokens, history_length=6)
    windows = [encoder.encode_items([0, 1, 2, 0, 4], first_target=2), encoder.encode_items([5, 6], first_target=1)]
    batch = collate_sequences(windows, tokenizer.pad_token_id, catalogue=catalogue_tokens(item_tokens))
    cpu = torch.device("cpu")
    embeddings = model.get_input_embeddings().weight
    items = torch.stack([embeddings[tokens].mean(dim=0) for tokens in item_tokens])  # (I, H)
    expected_ce, expected_seen, targets = 0.0, 0.0, 0
    with torch.no_grad():
        plain = sequence_batch_loss(model, batch, cpu).item()
        with_items = sequence_batch_loss(model, batch, cpu, item_weight=2.0).item()
        with_seen = sequence_batch_loss(model, batch, cpu, item_weight=2.0, item_seen_weight=0.5).item()
        for encoded, first in zip(windows, (2, 1)):
            states = model.bert(input_ids=torch.tensor([encoded.input_ids])).last_hidden_state[0]
            spans = encoded.item_spans
            for index in range(first, len(spans)):
                start, _, target = spans[index]
                scores = torch.log_softmax(model.cls.predictions.transform(states[start - 1]) @ items.T, -1)
                expected_ce -= scores[target].item()
                # the target itself is never its own "seen" item (item 0 is seen before the second 0)
                seen = {item for _, _, item in spans[:index]} - {target}
                expected_seen -= sum(torch.log1p(-scores[item].exp()).item() for item in seen)
                targets += 1
    assert [tuple(row) for row in batch.target_items.tolist()] == [
        (row, start - 1, item) for row, s in enumerate(windows) for start, _, item in s.item_spans[(2, 1)[row]:]
    ]
    assert with_items == pytest.approx(plain + 2.0 * expected_ce / targets, rel=1e-5)
    assert with_seen == pytest.approx(with_items + 0.5 * expected_seen / targets, rel=1e-5)


def test_item_ranking_scores_the_whole_catalogue_and_learns_the_planted_pattern(tmp_path, backbone):
    from idgenrec.backbone.causal import build_causal
    from idgenrec.ids import ItemIdTable
    from idgenrec.recommender.model import DecodingSettings, IDGenRecModel

    dataset, tokenizer, _, _, item_tokens = backbone
    recommender = build_causal(TINY_CAUSAL, tokenizer, seed=0)
    encoder = SequenceEncoder(tokenizer, item_tokens, history_length=5)
    windows = training_windows([dataset.train_sequence(u) for u in range(dataset.num_users)], 5, 4)
    config = TrainingConfig(batch_size=8, bf16=False, warmup_ratio=0.0, history_length=5, window_stride=4, item_loss=1.0)
    train_recommender_phase(
        recommender, WindowBatches(encoder, windows, config), config,
        PhaseConfig(phase="recommender", epochs=40, learning_rate=5e-3), seed=0,
    )
    settings = DecodingSettings(5, 2, bf16=False, architecture="causal", ranking="items")
    model = IDGenRecModel(recommender, tokenizer, ItemIdTable(dataset.item_ids, WORDS), settings)
    histories = [[i, (i + 1) % len(WORDS)] for i in range(len(WORDS))]
    items, scores = model.recommend_with_scores(histories, k=len(WORDS))
    assert sum(row[0] == (i + 2) % len(WORDS) for i, row in enumerate(items)) >= len(WORDS) - 1
    # every item is ranked, past the beam width; scores are log-probabilities over the catalogue, best first
    assert all(sorted(row) == list(range(len(WORDS))) for row in items)
    assert all(row == sorted(row, reverse=True) for row in scores)
    assert sum(torch.tensor(scores[0]).exp()).item() == pytest.approx(1.0, abs=1e-4)
    excluded = model.recommend(histories, k=len(WORDS), exclude_seen=True)
    assert all(len(row) == len(WORDS) - 2 and not set(row) & set(h) for row, h in zip(excluded, histories))
    assert model.recommend([[0, 1]], k=3, candidates=[4, 5]) in ([[4, 5]], [[5, 4]])
    model.save(tmp_path / "model")
    loaded = IDGenRecModel.load(tmp_path / "model")
    assert loaded.settings.ranking == "items" and loaded.recommend(histories, k=3) == [row[:3] for row in items]
    # a heavy last-item similarity term puts first the item whose ID is most like the last one's (never the
    # last item itself, which the term leaves to the model); scores stay log-probabilities
    similar = IDGenRecModel(recommender, tokenizer, model.id_table, dataclasses.replace(settings, similarity_weight=1e4))
    ranked, similar_scores = similar.recommend_with_scores(histories, k=len(WORDS))
    directions = similar.item_directions()
    for history, row in zip(histories, ranked):
        alike = directions @ directions[history[-1]]
        alike[history[-1]] = float("-inf")
        assert row[0] == int(alike.argmax())
    assert sum(torch.tensor(similar_scores[0]).exp()).item() == pytest.approx(1.0, abs=1e-4)
    assert similar.recommend(histories, k=3, exclude_seen=True) == excluded_top3(similar, histories)
    similar.save(tmp_path / "similar")
    assert IDGenRecModel.load(tmp_path / "similar").settings.similarity_weight == 1e4
    # the item matrix is made once, and made again after the weights change in place (a training step)
    cached = loaded.item_embeddings()
    assert loaded.item_embeddings() is cached
    with torch.no_grad():
        loaded.recommender.get_input_embeddings().weight.mul_(-1.0)
    assert torch.allclose(loaded.item_embeddings(), -cached)


def excluded_top3(model, histories):
    """Top 3 of the full ranking with each history's items removed (what exclude_seen must return)."""
    full = model.recommend(histories, k=len(model.id_table))
    return [[item for item in row if item not in history][:3] for row, history in zip(full, histories)]


def test_last_item_similarity_is_the_cosine_of_centred_id_embeddings():
    from idgenrec.recommender.item_scores import item_directions, last_item_similarity

    items = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 2.0], [3.0, 2.0]])  # mean (2, 1): centred rows are diagonals
    directions = item_directions(items)
    similarity = last_item_similarity(directions, [0, None, 3])
    half = 2 ** -0.5
    assert torch.allclose(directions[0], torch.tensor([-half, -half]))
    assert torch.allclose(similarity[0], torch.tensor([0.0, 0.0, 0.0, -1.0]), atol=1e-6)  # the last item itself: 0
    assert torch.equal(similarity[1], torch.zeros(4))  # no last item: no term
    assert torch.allclose(similarity[2], torch.tensor([-1.0, 0.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(last_item_similarity(item_directions(items[:2] * torch.tensor([1.0, 0.0]) + 1), [0])[0],
                          torch.tensor([0.0, -1.0]), atol=1e-6)


def test_another_similarity_weight_is_kept_only_for_a_gain_above_the_minimum():
    from idgenrec.recommender.alternating import preferred_similarity_weight

    weights = [0.0, 1.0, 3.0]
    assert preferred_similarity_weight({"0.0": 0.100, "1.0": 0.101, "3.0": 0.095}, weights, 0.02) == 0.0  # +1%: noise
    assert preferred_similarity_weight({"0.0": 0.090, "1.0": 0.094, "3.0": 0.097}, weights, 0.02) == 3.0
    assert preferred_similarity_weight({"0.0": 0.090, "1.0": 0.097, "3.0": 0.097}, weights, 0.0) == 1.0  # ties: the first
    assert preferred_similarity_weight({"0.0": 0.0, "1.0": 0.0, "3.0": 0.0}, weights, 0.02) == 0.0


def test_similarity_settings_are_left_out_of_what_a_resumed_run_must_share():
    """They are read once the phases are done: a run resumed with other candidates retrains nothing."""
    from idgenrec.recommender.alternating import params_fingerprint

    causal = Params(backbone=TINY_CAUSAL, training=TrainingConfig(ranking="items", item_loss=1.0))
    other = causal.model_copy(update={"training": causal.training.model_copy(
        update={"similarity_weights": [0.0, 3.0], "similarity_min_gain": 0.1})})
    assert params_fingerprint(causal) == params_fingerprint(other)
    assert params_fingerprint(causal) != params_fingerprint(
        causal.model_copy(update={"training": causal.training.model_copy(update={"item_loss": 2.0})}))


def test_id_phase_gradients_reach_the_generator_and_never_the_recommender(backbone, trained):
    from idgenrec.recommender.soft_ids import ItemTextInputs, sequence_id_phase_loss

    dataset, tokenizer, recommender, generator, _ = backbone
    encoder, _ = trained
    inputs = ItemTextInputs(tokenizer, dataset.item_texts, 32)
    samples = [TrainingSample(0, (0, 1, 2), 3), TrainingSample(1, (5,), 6)]
    current = [[*tokens, tokenizer.sep_token_id] for tokens in encoder.item_tokens]
    for p in recommender.parameters():
        p.requires_grad_(False)
    try:
        generator.zero_grad(set_to_none=True)
        recommender.zero_grad(set_to_none=True)
        loss = sequence_id_phase_loss(
            generator, recommender, encoder, samples, inputs, 4, tokenizer.sep_token_id, tokenizer.pad_token_id, current, 1.0
        )
        loss.backward()
    finally:
        for p in recommender.parameters():
            p.requires_grad_(True)
    assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())
    assert all(p.grad is None for p in recommender.parameters())


def test_saved_causal_model_loads_and_recommends_the_same(tmp_path, backbone, trained):
    from idgenrec.ids import ItemIdTable
    from idgenrec.recommender.model import DecodingSettings, IDGenRecModel

    dataset, tokenizer, recommender, generator, _ = backbone
    table = ItemIdTable(item_ids=dataset.item_ids, textual_ids=WORDS)
    model = IDGenRecModel(recommender, tokenizer, table, DecodingSettings(5, 4, bf16=False, architecture="causal"), generator)
    histories = [[0, 1], [3, 4, 5], [7]]
    before = model.recommend_with_scores(histories, k=3, exclude_seen=True)
    model.save(tmp_path / "model")
    loaded = IDGenRecModel.load(tmp_path / "model")
    after = loaded.recommend_with_scores(histories, k=3, exclude_seen=True)
    assert before[0] == after[0]
    for row_before, row_after in zip(before[1], after[1]):
        assert row_before == pytest.approx(row_after, abs=1e-5)
    assert not any(set(h) & set(items) for h, items in zip(histories, after[0]))
    assert loaded.recommender.cls.predictions.decoder.weight is loaded.recommender.get_input_embeddings().weight


def test_alternating_training_runs_and_resumes_on_the_causal_recommender(tmp_path):
    from idgenrec.recommender import alternating
    from idgenrec.recommender.model import IDGenRecModel

    dataset = planted_dataset()
    tiny = _tiny_params(THREE_PHASES)
    params = Params(
        backbone=TINY_CAUSAL, warmup=tiny.warmup, ids=tiny.ids,
        training=tiny.training.model_copy(update={"history_length": 5, "window_stride": 4, "batch_size": 8}),
    )
    warm_generator_and_ids(tmp_path, dataset, params)
    full = alternating.train(params, dataset, tmp_path / "generator", tmp_path / "ids.tsv", tmp_path / "full")
    alternating.start_or_resume(params, dataset, tmp_path / "generator", tmp_path / "ids.tsv", tmp_path / "resumed")
    alternating.run_phase(params, dataset, tmp_path / "resumed", 0)
    alternating.train(params, dataset, tmp_path / "generator", tmp_path / "ids.tsv", tmp_path / "resumed")
    assert folder_bytes(tmp_path / "full") == folder_bytes(tmp_path / "resumed")
    assert [r["phase"] for r in full.records] == ["recommender", "recommender", "ids", "recommender"]
    assert (tmp_path / "full" / "rounds" / "ids-02.tsv").exists()
    model = IDGenRecModel.load(tmp_path / "full" / alternating.BEST)
    assert model.settings.architecture == "causal"
    assert all(len(items) == 3 for items in model.recommend([[0, 1], [4]], k=3))


def test_new_items_join_a_causal_model_without_training(backbone, trained):
    from idgenrec.config import IdConfig
    from idgenrec.ids import ItemIdTable
    from idgenrec.recommender.model import DecodingSettings, IDGenRecModel
    from idgenrec.recommender.new_items import NewItems, add_items

    dataset, tokenizer, recommender, generator, _ = backbone
    model = IDGenRecModel(
        recommender, tokenizer, ItemIdTable(dataset.item_ids, WORDS), DecodingSettings(5, 4, bf16=False, architecture="causal"),
        generator,
    )
    items = NewItems(["new1"], ["mango sorbet"], ["title: mango sorbet; genres: food"])
    grown, stats = add_items(model, items, "title", IdConfig(beam_groups=4, batch_size=8), progress=False)
    assert stats["items_added"] == 1
    new = len(WORDS)
    assert grown.recommend([[0, new]], k=3, candidates=[new]) == [[new]]  # the new item is written and decodable
    assert grown.id_table.textual_ids[new] == "mango sorbet"
    assert model.recommend([[0, 1]], k=3) == grown.for_catalogue(dataset.item_ids).recommend([[0, 1]], k=3)


def test_causal_settings_that_only_prompts_have_are_refused():
    with pytest.raises(ValueError, match="user_id_words"):
        Params(backbone=TINY_CAUSAL, training=TrainingConfig(user_id_words=2))
    assert Params(backbone=TINY_CAUSAL, training=TrainingConfig(seen_unlikelihood=1.0)).training.seen_unlikelihood == 1.0
    seq2seq = TINY_CAUSAL.model_copy(update={"architecture": "seq2seq"})
    with pytest.raises(ValueError, match="item_loss is for backbone.architecture 'causal'"):
        Params(backbone=seq2seq, training=TrainingConfig(item_loss=1.0))
    with pytest.raises(ValueError, match="ranking 'items' is for backbone.architecture 'causal'"):
        Params(backbone=seq2seq, training=TrainingConfig(ranking="items"))
    with pytest.raises(ValueError, match="set training.item_loss > 0"):
        Params(backbone=TINY_CAUSAL, training=TrainingConfig(item_seen_unlikelihood=1.0))
    with pytest.raises(ValueError, match="similarity_weights act on the item ranking"):
        Params(backbone=TINY_CAUSAL, training=TrainingConfig(similarity_weights=[0.0, 3.0]))
    with pytest.raises(ValueError, match="similarity_weights"):
        TrainingConfig(similarity_weights=[])
    with pytest.raises(ValueError, match="paper profile is seq2seq"):
        BackboneConfig(profile="paper", architecture="causal")


CAUSAL_PROJECT = """\
data: {name: tiny, format: p5, path: data/tiny, k_core: 5, text_fields: [title, genres]}
evaluation: {ks: [5, 10]}
backbone: {profile: tiny, hidden_size: 32, encoder_layers: 1, decoder_layers: 1, architecture: causal, causal_layers: 2, causal_dropout: 0.0}
warmup: {epochs: 3, batch_size: 8, learning_rate: 0.003}
ids: {kind: learned, beam_groups: 4, batch_size: 8, max_input_tokens: 64, seed: 0}
training:
  history_length: 5
  window_stride: 4
  batch_size: 8
  bf16: false
  num_beams: 4
  item_loss: 1.0
  item_seen_unlikelihood: 1.0
  ranking: items
  similarity_weights: [0.0, 1.0]
  soft_id_max_tokens: 4
  schedule:
    - {phase: recommender, epochs: 3, learning_rate: 0.003}
    - {phase: ids, epochs: 0.5, learning_rate: 0.001}
    - {phase: recommender, epochs: 1, learning_rate: 0.001}
registry: {margin: 0.0}
sasrec: {max_epochs: 2, patience: 1}
runtime: {processes: 1}
"""


@pytest.mark.slow
def test_a_causal_run_is_evaluated_registered_served_and_grown(tmp_path, monkeypatch):
    """The stages after training take a causal model (the default's item loss and ranking) as they take a
    seq2seq one: evaluation, the MLflow run and registry, the served pyfunc, and a new item added to the
    champion without training."""
    import mlflow
    import pandas as pd

    from idgenrec.config import load_params
    from idgenrec.recommender.alternating import preferred_similarity_weight
    from idgenrec.layout import LAYOUT
    from idgenrec.registry import grow_champion, record_pipeline_run
    from idgenrec.tracking import configure_tracking
    from test_tracking import new_store, run_tiny_pipeline, write_tiny_project

    monkeypatch.delenv("IDGENREC_TRACKING_URI", raising=False)
    root = write_tiny_project(tmp_path, CAUSAL_PROJECT)
    new_store(root)
    monkeypatch.chdir(root)
    files = run_tiny_pipeline(root)
    metrics = json.loads(files.model_metrics.read_text())
    assert 0 <= metrics["test/seen_included/ndcg@10"] <= 1
    settings = json.loads((files.model / "settings.json").read_text())
    assert settings["ranking"] == "items"
    # after the schedule, validation scored the selected model with each similarity weight and kept the best
    state = json.loads((files.workdir / "state.json").read_text())
    scores = state["valid_by_similarity_weight"]
    assert set(scores) == {"0.0", "1.0"} and scores["0.0"] == state["best_score"]
    chosen = preferred_similarity_weight(scores, [0.0, 1.0], 0.02)
    assert settings["similarity_weight"] == state["similarity_weight"] == chosen
    # the pipeline's train stage (and the Prefect flow) choose it in their last step, once
    from idgenrec import stages

    unchosen = {k: v for k, v in state.items() if k not in ("valid_by_similarity_weight", "similarity_weight")}
    (files.workdir / "state.json").write_text(json.dumps(unchosen))
    finished = stages.finish_training(load_params(root / "params.yaml"), files)
    assert finished.valid_by_similarity_weight == scores and finished.similarity_weight == state["similarity_weight"]
    configure_tracking(root)
    record = record_pipeline_run(load_params(root / "params.yaml"), LAYOUT, root=root)
    assert record["promotion"]["promoted"]
    run = mlflow.MlflowClient().get_run(record["run_id"])
    assert run.info.run_name == "tiny-learned-causal-seed0" and run.data.params["backbone.architecture"] == "causal"
    served = mlflow.pyfunc.load_model("models:/idgenrec-tiny@champion")
    answer = served.predict(pd.DataFrame({"history": [["1", "2", "3"]], "k": [3]}), params={"exclude_seen": True})
    assert len(answer.iloc[0]["item_ids"]) == 3 and not {"1", "2", "3"} & set(answer.iloc[0]["item_ids"])
    (root / "new.tsv").write_text("item_id\ttitle\ttext\n100\tbanana bread\ttitle: banana bread\n", encoding="utf-8")
    from idgenrec.recommender.new_items import read_new_items

    grown = grow_champion(load_params(root / "params.yaml"), read_new_items(root / "new.tsv"), files.grown_model,
                          files.prepared, root=root)
    assert grown.skipped is None and grown.stats["items_added"] == 1
    served = mlflow.pyfunc.load_model(f"models:/idgenrec-tiny/{grown.record['model_version']}")
    answer = served.predict(pd.DataFrame({"history": [["1", "2"]], "k": [1]}), params={"candidates": ["100"]})
    assert answer.iloc[0]["item_ids"] == ["100"]
    mlflow.set_tracking_uri(None)
