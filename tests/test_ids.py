"""Textual IDs: warm-up, diverse beam search, uniqueness guarantees, the table, kinds, CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from idgenrec.backbone import build_seq2seq, build_tokenizer, load_seq2seq, vocabulary_corpus
from idgenrec.config import BackboneConfig, IdConfig, Params, WarmupConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.ids import ItemIdTable, generate_unique_ids, id_quality, make_id_table, random_ids, title_ids, warm_up_generator
from idgenrec.ids.diverse import diverse_beam_candidates
from idgenrec.ids.table import HEADER
from idgenrec.ids.text import keyword_phrase, normalise, round_trips
from idgenrec.ids.trie import IdTrie

pytestmark = pytest.mark.model

TINY = BackboneConfig(profile="tiny", hidden_size=32, encoder_layers=1, decoder_layers=1)
FAST_IDS = IdConfig(beam_groups=4, length_span=4, max_diversity_penalty=3.0, batch_size=16)


def _adversarial_dataset() -> SequenceDataset:
    """Identical texts, empty text, very long text, non-ASCII and punctuation-only titles."""
    titles = (
        ["Toy Story (1995)", "Amélie (2001)", "東京物語 (1953)", "Crème Brûlée Ñandú", "!!! ??? ...", ""]
        + ["Same Movie"] * 12
        + [f"Film {i} about cats, dogs & mice" for i in range(10)]
        + ["Epic " + "very long title words " * 200]
    )
    texts = [f"title: {t}; genres: Comedy, Drama" if t else "" for t in titles]
    texts[4] = "!!! ??? ..."
    return SequenceDataset(
        name="adversarial", item_ids=[str(i + 1) for i in range(len(titles))], item_titles=titles, item_texts=texts,
        user_ids=["u1", "u2"], sequences=[[0, 1, 2, 3], [4, 5, 6, 0]],
    )


@pytest.fixture(scope="module")
def dataset() -> SequenceDataset:
    return _adversarial_dataset()


@pytest.fixture(scope="module")
def generator(dataset, tmp_path_factory):
    """A tiny generator warmed up for a few steps, saved and loaded as the pipeline does."""
    folder = tmp_path_factory.mktemp("generator")
    params = Params(backbone=TINY, warmup=WarmupConfig(epochs=8, batch_size=16, learning_rate=3e-3, bf16=False), ids=FAST_IDS)
    metrics = warm_up_generator(dataset, params, folder, progress=False)
    assert metrics["final_loss"] < metrics["first_loss"]
    return load_seq2seq(folder)


def assert_guarantees(ids: list[str], n: int, tokenizer) -> None:
    assert len(ids) == n
    assert len(set(ids)) == n, "duplicate IDs"
    for text in ids:
        assert text.strip(), "empty ID"
        assert any(c.isalnum() for c in text), f"punctuation-only ID {text!r}"
        assert normalise(text, tokenizer) == text
        tokens = tokenizer.encode(text, add_special_tokens=False)
        assert tokenizer.unk_token_id not in tokens
        assert tokenizer.decode(tokens) == text, f"{text!r} does not round-trip"


# -- text rules -----------------------------------------------------------------------


def test_normalise_lowercases_strips_accents_and_punctuation():
    assert normalise("  Amélie (2001)!  Crème--Brûlée ") == "amelie 2001 creme brulee"
    assert normalise("!!! ...") == ""


def test_keyword_phrase_uses_title_then_other_fields():
    text = "title: Toy Story (1995); year: 1995; genres: Animation, Children's, Comedy"
    assert keyword_phrase("Toy Story (1995)", text, 4) == "toy story 1995 animation"
    assert keyword_phrase("The Heat", "title: The Heat; genres: Crime", 4) == "heat crime"
    assert keyword_phrase("", "", 4) == ""


# -- diverse beam search --------------------------------------------------------------


def test_diverse_groups_differ_and_respect_lengths(generator):
    model, tokenizer = generator
    batch = tokenizer(["title: Toy Story; genres: Comedy", "title: Same Movie"], padding=True, return_tensors="pt")
    ranked = diverse_beam_candidates(
        model, tokenizer, batch.input_ids, batch.attention_mask, groups=5, penalty=1e4, min_tokens=2, max_tokens=4
    )
    for candidates in ranked:
        assert len(candidates) == 5
        assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)
        assert all(2 <= len(c.tokens) <= 4 for c in candidates)
        # a huge penalty forces different first tokens across groups
        assert len({c.tokens[0] for c in candidates}) == 5
        assert all(t not in tokenizer.all_special_ids for c in candidates for t in c.tokens)


def test_batched_candidates_equal_one_at_a_time(generator):
    model, tokenizer = generator
    texts = ["title: Toy Story; genres: Comedy", "title: Film 3 about cats, dogs & mice; genres: Drama", ""]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    together = diverse_beam_candidates(model, tokenizer, batch.input_ids, batch.attention_mask, 4, 1.0, 1, 5)
    for text, expected in zip(texts, together):
        one = tokenizer([text], return_tensors="pt")
        alone = diverse_beam_candidates(model, tokenizer, one.input_ids, one.attention_mask, 4, 1.0, 1, 5)[0]
        assert [c.tokens for c in alone] == [c.tokens for c in expected]


def test_token_budget_caps_each_beams_use_of_a_token(generator):
    """Every candidate uses each token at most its budget's times, zero-budget tokens never; eos is free."""
    from collections import Counter

    model, tokenizer = generator
    batch = tokenizer(["title: Toy Story; genres: Comedy", "title: Story Story Story"], padding=True, return_tensors="pt")
    budget = torch.zeros(2, model.get_input_embeddings().num_embeddings, dtype=torch.long)
    budget.scatter_add_(1, batch.input_ids, batch.attention_mask)  # each token as often as the text has it
    ranked = diverse_beam_candidates(model, tokenizer, batch.input_ids, batch.attention_mask, 4, 1.0, 1, 6, budget=budget)
    for row, candidates in enumerate(ranked):
        assert candidates
        for candidate in candidates:
            assert all(budget[row, token] >= count for token, count in Counter(candidate.tokens).items()), candidate
    story = tokenizer.convert_tokens_to_ids("story")
    only_story = torch.zeros_like(budget[:1])
    only_story[0, story] = 2  # two uses, then the beam must end: at most two tokens, all "story"
    ranked = diverse_beam_candidates(model, tokenizer, batch.input_ids[1:], batch.attention_mask[1:], 3, 1.0, 1, 6, budget=only_story)
    assert ranked[0] and all(set(c.tokens) == {story} and len(c.tokens) <= 2 for c in ranked[0])


# -- unique IDs -----------------------------------------------------------------------


def test_learned_ids_guarantees_on_adversarial_items(dataset, generator):
    model, tokenizer = generator
    ids, stats = generate_unique_ids(model, tokenizer, dataset.item_texts, FAST_IDS, progress=False)
    assert_guarantees(ids, dataset.num_items, tokenizer)
    resolved = ("resolved_first_choice", "resolved_by_candidate", "resolved_by_penalty", "resolved_by_length", "fallbacks")
    assert sum(stats[k] for k in resolved) == dataset.num_items
    assert stats["passes"] >= 2  # the twelve identical texts cannot all be served by one pass of 4 groups


def test_learned_ids_are_deterministic(dataset, generator):
    model, tokenizer = generator
    first, _ = generate_unique_ids(model, tokenizer, dataset.item_texts, FAST_IDS, progress=False)
    second, _ = generate_unique_ids(model, tokenizer, dataset.item_texts, FAST_IDS.model_copy(update={"batch_size": 5}), progress=False)
    assert first == second  # batch composition does not change the result


def test_fallback_always_terminates_and_is_counted(generator):
    model, tokenizer = generator
    texts = ["title: Same Movie; genres: Comedy"] * 15
    config = IdConfig(beam_groups=2, length_span=2, diversity_penalty=1.0, max_diversity_penalty=1.0, max_length_raises=0)
    ids, stats = generate_unique_ids(model, tokenizer, texts, config, progress=False)
    assert_guarantees(ids, len(texts), tokenizer)
    assert stats["fallbacks"] >= 13  # at most two distinct candidates for fifteen identical items


def test_untrained_model_still_gives_valid_ids(dataset):
    tokenizer = build_tokenizer(TINY, vocabulary_corpus(dataset))
    model = build_seq2seq(TINY, tokenizer, "generator", seed=3)
    ids, _ = generate_unique_ids(model, tokenizer, dataset.item_texts[:8], FAST_IDS, progress=False)
    assert_guarantees(ids, 8, tokenizer)


# -- other kinds ----------------------------------------------------------------------


def test_title_ids_are_unique_with_counters(dataset, generator):
    _, tokenizer = generator
    ids, stats = title_ids(dataset.item_titles, dataset.item_texts, tokenizer)
    assert_guarantees(ids, dataset.num_items, tokenizer)
    assert ids[0] == "toy story 1995" and ids[1] == "amelie 2001"
    assert ids[6:9] == ["same movie", "same movie 2", "same movie 3"]
    assert ids[4:6] == ["item", "item 2"]  # punctuation-only and empty titles and texts
    assert stats == {"collisions": 12, "fallbacks": 2}


def test_random_ids_are_a_seeded_permutation(generator):
    _, tokenizer = generator
    ids, _ = random_ids(50, seed=7)
    assert sorted(int(i) for i in ids) == list(range(1, 51))
    assert ids == random_ids(50, seed=7)[0] != random_ids(50, seed=8)[0]
    assert_guarantees(ids, 50, tokenizer)


@pytest.mark.parametrize("kind", ["learned", "title", "random"])
def test_make_id_table_feeds_the_trie(kind, dataset, generator):
    model, tokenizer = generator
    table, quality = make_id_table(kind, dataset, model, tokenizer, FAST_IDS, progress=False)
    assert table.item_ids == dataset.item_ids
    assert quality["unique_ratio"] == 1.0 and quality["empty_ids"] == 0 and quality["kind"] == kind
    trie = IdTrie(table.token_ids(tokenizer), tokenizer.eos_token_id)
    assert len(trie) == dataset.num_items


# -- the table ------------------------------------------------------------------------


def test_table_round_trip_and_quality(dataset, generator, tmp_path):
    _, tokenizer = generator
    ids, _ = title_ids(dataset.item_titles, dataset.item_texts, tokenizer)
    table = ItemIdTable(item_ids=dataset.item_ids, textual_ids=ids)
    table.save(tmp_path / "ids.tsv", tokenizer)
    header = (tmp_path / "ids.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert header == HEADER
    assert ItemIdTable.load(tmp_path / "ids.tsv") == table


def test_id_quality_by_hand(generator):
    _, tokenizer = generator
    data = SequenceDataset(
        name="q", item_ids=["a", "b"], item_titles=["Toy Story", "Heat"],
        item_texts=["title: Toy Story; genres: Comedy", "title: Heat; genres: Crime"], user_ids=[], sequences=[],
    )
    table = ItemIdTable(item_ids=["a", "b"], textual_ids=["toy comedy story", "heat 2"])
    quality = id_quality(table, data, tokenizer)
    assert quality["items"] == 2 and quality["unique_ratio"] == 1.0
    assert quality["mean_words"] == 2.5 and quality["max_words"] == 3
    assert quality["own_word_fraction"] == pytest.approx(4 / 5)  # "2" is not in Heat's text


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["1\ttoy story\t2\t2", "2\ttoy story\t2\t2"], "line 3: duplicate textual_id 'toy story' \\(first on line 2\\)"),
        (["1\ttoy\t1\t1", "1\theat\t1\t1"], "line 3: duplicate item_id '1'"),
        (["1\t \t0\t0"], "line 2: empty"),
        (["1"], "line 2: expected 4"),
    ],
)
def test_table_load_names_the_bad_line(tmp_path, rows, message):
    path = tmp_path / "ids.tsv"
    path.write_text("\n".join(["\t".join(HEADER), *rows]) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        ItemIdTable.load(path)


def test_table_load_rejects_a_wrong_header(tmp_path):
    path = tmp_path / "ids.tsv"
    path.write_text("a\tb\n1\tx\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: expected header"):
        ItemIdTable.load(path)


# -- CLI ------------------------------------------------------------------------------


def test_cli_warmup_generate_show(dataset, tmp_path):
    from idgenrec.cli import app

    dataset.save(tmp_path / "prepared")
    params = tmp_path / "params.yaml"
    params.write_text(
        "backbone: {profile: tiny, hidden_size: 32, encoder_layers: 1, decoder_layers: 1}\n"
        "warmup: {epochs: 2, batch_size: 16, bf16: false}\n"
        "ids: {beam_groups: 4, length_span: 4, max_diversity_penalty: 3.0}\n",
        encoding="utf-8",
    )
    runner = CliRunner()
    common = ["--params", str(params), "--prepared", str(tmp_path / "prepared")]
    result = runner.invoke(
        app, ["ids", "warmup", *common, "--output", str(tmp_path / "gen"), "--metrics", str(tmp_path / "warmup.json")]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app,
        ["ids", "generate", *common, "--generator", str(tmp_path / "gen"), "--output", str(tmp_path / "ids"),
         "--metrics", str(tmp_path / "ids.json")],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ids.json").read_text())["unique_ratio"] == 1.0
    result = runner.invoke(
        app, ["ids", "show", "1", "--prepared", str(tmp_path / "prepared"), "--ids", str(tmp_path / "ids" / "item_ids.tsv")]
    )
    assert result.exit_code == 0, result.output
    assert "Toy Story (1995)" in result.output and "id:" in result.output
    result = runner.invoke(
        app, ["ids", "show", "nope", "--prepared", str(tmp_path / "prepared"), "--ids", str(tmp_path / "ids" / "item_ids.tsv")]
    )
    assert result.exit_code == 1 and "'nope' is not in" in result.output


def test_cli_generate_without_generator_names_the_folder(dataset, tmp_path):
    from idgenrec.cli import app

    dataset.save(tmp_path / "prepared")
    params = tmp_path / "params.yaml"
    params.write_text("backbone: {profile: tiny}\n", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["ids", "generate", "--params", str(params), "--prepared", str(tmp_path / "prepared"), "--generator", str(tmp_path / "missing")]
    )
    assert result.exit_code == 1 and "missing" in result.output and "idgenrec ids warmup" in result.output


# -- the trie ------------------------------------------------------------------------


def test_trie_batched_lookups_agree_with_the_paths():
    import random

    rng = random.Random(0)
    eos, vocab = 2, 40
    sequences = list({tuple(rng.randrange(4, vocab) for _ in range(rng.randint(1, 4))) for _ in range(200)})
    sequences = [s for s in sequences if not any(s == t[: len(s)] and s != t for t in sequences)] + [(3,), (3, 8)]
    trie = IdTrie(sequences, eos)
    assert len(trie) == len(sequences)
    # every node reachable from a path prefix, plus a dead beam
    nodes = sorted({trie.walk(s[:i]) for s in sequences for i in range(len(s) + 2)} | {IdTrie.DEAD})
    nodes_t = torch.tensor(nodes)
    mask = trie.allowed_mask(nodes_t, vocab)
    for row, node in enumerate(nodes):
        expected = {t for t in range(vocab) if trie.step(node, t) >= 0} or {eos}  # finished or dead: eos only
        assert set(mask[row].nonzero().flatten().tolist()) == expected, node
    tokens = torch.tensor([rng.randrange(vocab + 5) for _ in nodes])  # some beyond every edge token
    assert trie.step_many(nodes_t, tokens).tolist() == [trie.step(n, int(t)) for n, t in zip(nodes, tokens)]
    items = {trie.walk([*s, eos]): item for item, s in enumerate(sequences)}
    assert trie.items_at(nodes_t).tolist() == [items.get(n, -1) for n in nodes]
    three = trie.walk([3])
    assert set(trie.allowed_tokens(three).tolist()) == {8, eos}
    # Excluding (3,) blocks only eos after 3; excluding (3, 8) too blocks the token 3 itself.
    only_short, both = sequences.index((3,)), {sequences.index((3,)), sequences.index((3, 8))}
    blocked = trie.blocked_nodes([{only_short}, both])
    rows = torch.tensor([0, 1, 0, 1])
    mask = trie.allowed_mask(torch.tensor([three, three, IdTrie.ROOT, IdTrie.ROOT]), vocab, blocked, rows)
    assert set(mask[0].nonzero().flatten().tolist()) == {8}
    assert not mask[2, eos] and mask[2, 3] and not mask[3, 3]
    assert mask[3].sum() == mask[2].sum() - 1
    # A random exclusion set: a node is blocked exactly when every item below it is excluded.
    excluded = set(rng.sample(range(len(sequences)), 60))
    blocked = trie.blocked_nodes([excluded])
    is_blocked = trie.is_blocked(blocked, torch.zeros(len(nodes) - 1, dtype=torch.long), torch.tensor(nodes[1:])).tolist()
    for node, node_blocked in zip(nodes[1:], is_blocked):  # nodes[0] is DEAD
        below = {item for item, s in enumerate(sequences) if trie.walk([*s, eos][: len(s) + 1]) >= 0
                 and any(trie.walk([*s, eos][:i]) == node for i in range(1, len(s) + 2))}
        assert node_blocked == (bool(below) and below <= excluded), node
