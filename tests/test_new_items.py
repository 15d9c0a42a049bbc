"""New items without training: vocabulary growth, embedding rows, IDs unique against the table, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from idgenrec.backbone import build_seq2seq, build_tokenizer, load_seq2seq, save_seq2seq
from idgenrec.backbone.seq2seq import grow_embeddings
from idgenrec.backbone.vocabulary import _with_tokens, grow_tokenizer
from idgenrec.cli import app
from idgenrec.config import IdConfig
from idgenrec.data.textfile import DataFormatError
from idgenrec.ids import ItemIdTable
from idgenrec.recommender.model import DecodingSettings, IDGenRecModel
from idgenrec.recommender.new_items import NewItems, add_items, read_new_items
from test_recommender import TINY, WORDS, backbone, planted_dataset, trained  # noqa: F401 (fixtures)

NEW = NewItems(
    item_ids=["100", "101", "3"],  # "3" is a known item: skipped
    titles=["vacation house", "zebra tea", "cherry tart"],
    texts=["title: vacation house; genres: travel", "title: zebra tea; genres: drink", "title: cherry tart; genres: food"],
)

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def model(backbone, trained):
    """The recommender trained on the planted pattern (item i -> i+1) with its generator, as a saved model holds them."""
    dataset, tokenizer, recommender, generator, _ = backbone
    table = ItemIdTable(item_ids=dataset.item_ids, textual_ids=WORDS)
    return IDGenRecModel(recommender, tokenizer, table, DecodingSettings(3, 4, bf16=False), generator)


def test_grown_tokenizer_reads_new_words_and_keeps_every_old_token(model):
    tokenizer = model.tokenizer
    assert "[UNK]" in tokenizer.tokenize("zebra") or len(tokenizer.tokenize("vacation")) > 1  # pruned: new words break
    grown, added = grow_tokenizer(tokenizer, NEW.texts)
    assert {"vacation", "zebra"} <= set(added)
    assert grown.tokenize("vacation house zebra tea") == ["vacation", "house", "zebra", "tea"]
    old_vocab = tokenizer.get_vocab()
    assert all(grown.get_vocab()[token] == index for token, index in old_vocab.items())  # ids of old tokens unchanged
    assert sorted(grown.get_vocab().values()) == list(range(len(old_vocab) + len(added)))  # new ids follow the old ones
    for text in planted_dataset().item_texts + WORDS:
        assert grown(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_a_token_that_would_retokenize_a_known_id_is_left_out(model):
    # A known ID written with the pieces "va ##cation": adding the whole word would change its tokens.
    tokenizer = _with_tokens(model.tokenizer, ["va", "##cation"])
    assert tokenizer.tokenize("vacation") == ["va", "##cation"]
    grown, added = grow_tokenizer(tokenizer, ["vacation zebra"], keep=["vacation"])
    assert "vacation" not in added and "zebra" in added
    assert grown.tokenize("vacation") == ["va", "##cation"]
    _, added_freely = grow_tokenizer(tokenizer, ["vacation zebra"])
    assert "vacation" in added_freely


def test_a_hub_tokenizer_is_left_as_it_is():
    full = build_tokenizer(TINY.model_copy(update={"prune_vocabulary": False}), [])
    assert grow_tokenizer(full, ["vacation"]) == (full, [])


def test_grown_embeddings_keep_old_rows_and_outputs_and_survive_a_save(tmp_path, model):
    recommender = build_seq2seq(TINY, model.tokenizer, "recommender", seed=3)
    known = model.tokenizer.convert_ids_to_tokens(list(range(len(model.tokenizer))))
    grown_tokenizer, added = grow_tokenizer(model.tokenizer, NEW.texts)
    encoded = model.tokenizer(["apple pie ; banana split"], return_tensors="pt")
    inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    decoder_inputs = torch.tensor([[recommender.config.decoder_start_token_id]])
    before = recommender(**inputs, decoder_input_ids=decoder_inputs).logits
    old_rows = recommender.get_input_embeddings().weight.detach().clone()
    grow_embeddings(recommender, known, added)
    rows = recommender.get_input_embeddings().weight
    assert rows.shape == (len(known) + len(added), old_rows.size(1))
    assert torch.equal(rows[: len(known)], old_rows)
    assert recommender.decoder.cls.predictions.decoder.weight is rows  # still one shared matrix
    after = recommender(**inputs, decoder_input_ids=decoder_inputs).logits
    assert torch.allclose(after[..., : len(known)], before, atol=1e-6)  # old tokens score as before
    assert after.size(-1) == len(known) + len(added)
    save_seq2seq(recommender, grown_tokenizer, tmp_path / "grown")
    loaded, loaded_tokenizer = load_seq2seq(tmp_path / "grown")
    assert torch.equal(loaded.get_input_embeddings().weight, rows)
    assert len(loaded_tokenizer) == len(known) + len(added)


def test_mapped_rows_follow_the_models_embedding_space():
    """New rows come from MiniLM's through a linear map fitted on the known rows: when the model's
    rows are a linear image of MiniLM's, a new token's row is that image too."""
    from safetensors import safe_open

    from idgenrec.backbone.seq2seq import WEIGHTS_FILE, _minilm_vocab
    from idgenrec.backbone.vocabulary import minilm_folder

    vocab = _minilm_vocab(minilm_folder())
    # More known tokens than MiniLM has dimensions (384), as in a real catalogue (ML-100k keeps 2,820).
    words = [t for t in list(vocab)[2000:4000] if t.isalpha() and t not in ("vacation", "zebra")]
    tokenizer = build_tokenizer(TINY, [" ".join(words)])
    recommender = build_seq2seq(TINY, tokenizer, "recommender", seed=3)
    known = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert len(known) > 1000
    with safe_open(str(minilm_folder() / WEIGHTS_FILE), framework="pt") as weights:
        pretrained = weights.get_tensor("embeddings.word_embeddings.weight").float()
    projection = torch.randn(pretrained.size(1), recommender.config.encoder.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        recommender.get_input_embeddings().weight.copy_(pretrained[[vocab[t] for t in known]] @ projection)
    grow_embeddings(recommender, known, ["vacation", "zebra"])
    expected = pretrained[[vocab["vacation"], vocab["zebra"]]] @ projection
    got = recommender.get_input_embeddings().weight[-2:].detach()
    assert (got - expected).norm() < 0.05 * expected.norm()
    unrelated = pretrained[[vocab["house"], vocab["tea"]]] @ projection
    assert (got - unrelated).norm() > 0.5 * expected.norm()  # the check can tell rows apart


@pytest.mark.parametrize("kind", ["learned", "title", "random"])
def test_added_items_get_unique_ids_and_can_be_recommended(tmp_path, model, kind):
    grown, stats = add_items(model, NEW, kind, IdConfig(), progress=False)
    assert stats["items_added"] == 2 and stats["items_already_known"] == 1
    assert stats["texts_with_unknown_tokens"]["after"] == 0
    assert len(model.id_table) == len(WORDS)  # the given model is untouched
    table = grown.id_table
    assert table.item_ids == [*model.id_table.item_ids, "100", "101"]
    assert len(set(table.textual_ids)) == len(table)
    assert table.textual_ids[: len(WORDS)] == WORDS
    assert grown.item_tokens[: len(WORDS)] == model.item_tokens
    if kind == "title":
        assert table.textual_ids[-2:] == ["vacation house", "zebra tea"]
    if kind == "random":
        assert set(table.textual_ids[-2:]) == {"1", "2"}  # the smallest numbers no item holds
    # Every item is reachable: with beams covering the catalogue, every item is ranked, new ones included.
    new_items = {len(WORDS), len(WORDS) + 1}
    histories = [[0, 1], [len(WORDS), 2], [len(WORDS) + 1]]  # histories may hold new items too
    ranked = grown.recommend(histories, k=len(table))
    assert all(sorted(items) == list(range(len(table))) for items in ranked)
    assert all(new_items <= set(items) for items in ranked)
    grown.save(tmp_path / "grown")
    reloaded = IDGenRecModel.load(tmp_path / "grown")
    assert reloaded.id_table.textual_ids == table.textual_ids
    assert reloaded.recommend(histories, k=3) == grown.recommend(histories, k=3)


def test_the_trained_pattern_survives_the_growth(model):
    grown, _ = add_items(model, NEW, "title", IdConfig(), progress=False)
    histories = [[i, (i + 1) % len(WORDS)] for i in range(len(WORDS))]
    assert grown.recommend(histories, k=1) == model.recommend(histories, k=1)


def test_nothing_new_returns_the_model_itself(model):
    known = NewItems(["1"], ["apple pie"], ["title: apple pie"])
    same, stats = add_items(model, known, "learned", IdConfig(), progress=False)
    assert same is model and stats["items_added"] == 0


@pytest.mark.parametrize(
    ("content", "where"),
    [
        ("item_id\ttitle\n1\tx\n", "line 1, field 'text'"),
        ("item_id\ttitle\ttext\n7\ta\tb\n7\tc\td\n", "line 3, field 'item_id'"),
        ("item_id\ttitle\ttext\n7\t\t\n", "line 2, field 'text'"),
        ("item_id\ttitle\ttext\n7\ta\n", "line 2"),
    ],
)
def test_a_malformed_items_file_names_the_line(tmp_path, content, where):
    path = tmp_path / "items.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match=where):
        read_new_items(path)


def test_an_empty_text_falls_back_to_the_title(tmp_path):
    path = tmp_path / "items.tsv"
    path.write_text("item_id\ttitle\ttext\n7\tvacation house\t\n", encoding="utf-8")
    assert read_new_items(path).texts == ["vacation house"]


def test_add_items_command_writes_a_model_that_knows_the_new_items(tmp_path, model):
    model.save(tmp_path / "model")
    items = tmp_path / "new.tsv"
    items.write_text("item_id\ttitle\ttext\n" + "".join(f"{i}\t{t}\t{x}\n" for i, t, x in zip(NEW.item_ids, NEW.titles, NEW.texts)))
    params = tmp_path / "params.yaml"
    params.write_text("ids: {kind: title}\n")
    args = ["add-items", "--items", str(items), "--model", str(tmp_path / "model"), "--output", str(tmp_path / "out"), "--params", str(params)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 new items (1 already in the model, skipped)" in result.output
    assert IDGenRecModel.load(tmp_path / "out").id_table.textual_ids[-2:] == ["vacation house", "zebra tea"]
    items.write_text("item_id\ttitle\n1\tx\n")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "no column 'text'" in result.output


def test_a_model_renumbered_for_a_catalogue_recommends_the_same_items(model):
    grown, _ = add_items(model, NEW, "title", IdConfig(), progress=False)
    order = list(reversed(grown.id_table.item_ids))  # a dataset that numbers the items its own way
    renumbered = grown.for_catalogue(order)
    histories = [[0, 1], [len(WORDS), 2]]
    as_catalogue = [[len(order) - 1 - i for i in history] for history in histories]
    expected = [[grown.id_table.item_ids[i] for i in items] for items in grown.recommend(histories, k=4)]
    got = [[order[i] for i in items] for items in renumbered.recommend(as_catalogue, k=4)]
    assert got == expected
    assert grown.for_catalogue(grown.id_table.item_ids) is grown
    with pytest.raises(ValueError, match=r"1 of 11 items are not in the model's ID table \(e.g. \['999'\]\).*add-items"):
        grown.for_catalogue([*order, "999"])


def test_own_token_ids_use_only_the_items_own_tokens(model):
    """A random generator writes anything; held to its own tokens, every ID token comes from the item's
    text, each at most as often as the text has it (no "man man 1996 romance")."""
    from collections import Counter

    grown, _ = add_items(model, NEW, "learned", IdConfig(), progress=False, own_tokens=True)
    free, _ = add_items(model, NEW, "learned", IdConfig(), progress=False, own_tokens=False)
    tokenizer = grown.tokenizer

    def tokens(text: str) -> Counter:
        return Counter(tokenizer(text, add_special_tokens=False)["input_ids"])

    for text, own_id, free_id in zip(NEW.texts[:2], grown.id_table.textual_ids[-2:], free.id_table.textual_ids[-2:]):
        assert tokens(own_id) <= tokens(text)
        assert not set(tokens(free_id)) <= set(tokens(text))  # the rule is what made the difference


def test_candidates_restrict_recommendations_to_those_items(model):
    grown, _ = add_items(model, NEW, "title", IdConfig(), progress=False)
    new_items = [len(WORDS), len(WORDS) + 1]
    histories = [[0, 1], [len(WORDS), 2]]
    items, scores = grown.recommend_with_scores(histories, k=3, candidates=new_items)
    assert [sorted(row) for row in items] == [new_items, new_items]  # both candidates, nothing else
    everything = grown.recommend(histories, k=len(grown.id_table))
    assert all(row == [i for i in full if i in new_items] for row, full in zip(items, everything))  # same order as unrestricted
    seen_out = grown.recommend(histories, k=3, exclude_seen=True, candidates=new_items)
    assert seen_out[1] == [len(WORDS) + 1]  # the history's new item is excluded as well


def test_recommend_command_reads_a_grown_model_and_limits_it_to_the_new_items(tmp_path, model):
    dataset = planted_dataset()
    dataset.save(tmp_path / "prepared")
    grown, _ = add_items(model, NEW, "title", IdConfig(), progress=False)
    grown.save(tmp_path / "grown")
    shelf = tmp_path / "shelf.tsv"
    shelf.write_text("item_id\ttitle\ttext\n100\tVacation House (2024)\tvacation house\n101\t\tzebra tea\n")
    common = ["recommend", "--user", "u0", "--prepared", str(tmp_path / "prepared"), "--model", str(tmp_path / "grown"), "--k", "2"]
    result = CliRunner().invoke(app, [*common, "--among", str(shelf)])
    assert result.exit_code == 0, result.output
    assert "top-2 among the 2 items of" in result.output
    listed = result.output.split("top-2")[1]
    assert "vacation house" in listed and "zebra tea" in listed  # their textual IDs
    assert "Vacation House (2024)" in listed  # the file's title (no title: its text, the zebra tea line)
    result = CliRunner().invoke(app, common)  # the whole catalogue: the history's items are matched by id
    assert result.exit_code == 0, result.output
    shelf.write_text("item_id\ttext\n999\tunknown\n")
    result = CliRunner().invoke(app, [*common, "--among", str(shelf)])
    assert result.exit_code == 1 and "['999']" in result.output and "add-items" in result.output


def test_a_new_item_inherits_what_was_learned_about_its_words(model):
    """Zero-shot through words: the model learned apple pie -> banana split and banana split -> cherry tart.
    Among new items only, "banana bread" follows apple pie and "cherry cola" follows banana split."""
    shelf = NewItems(["a", "b", "c"], ["banana bread", "cherry cola", "zebra tea"],
                     ["title: banana bread", "title: cherry cola", "title: zebra tea"])
    grown, _ = add_items(model, shelf, "title", IdConfig(), progress=False)
    n = len(WORDS)
    new = [n, n + 1, n + 2]
    first = [items[0] for items in grown.recommend([[0], [7, 0], [1], [0, 1]], k=3, candidates=new)]
    assert first == [n, n, n + 1, n + 1]


def _other_catalogue(root, with_text: bool = True):
    """The planted pattern's words under other item ids, in another order, in P5 files: a dataset the model never saw.

    Its ids collide with the model's ("1" is another item here): a catalogue replaces the model's, so they may.
    """
    order = [3, 7, 0, 5, 1, 6, 2, 4]  # the word of the new item id i + 1
    data = root / "data"
    data.mkdir(parents=True)
    position = {word: i for i, word in enumerate(order)}
    lines = []
    for user in range(24):
        start = (user * 5) % len(WORDS)
        words = [(start + j) % len(WORDS) for j in range(6 + user % 3)]
        lines.append(" ".join([f"v{user}", *(str(position[w] + 1) for w in words)]))
    (data / "user_sequence.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = "".join(f"{i + 1}\t{WORDS[w] if with_text or i else ''}\tfood\n" for i, w in enumerate(order))
    (data / "items.tsv").write_text("item_id\ttitle\tgenres\n" + rows, encoding="utf-8")
    params = root / "params.yaml"
    fields = "[title, genres]" if with_text else "[title]"
    params.write_text(f"data: {{name: other, format: p5, path: {data}, k_core: 1, text_fields: {fields}}}\n"
                      "ids: {kind: title}\nevaluation: {ks: [1, 5], selection_metric: ndcg@5}\n", encoding="utf-8")
    return params, order


def test_a_model_recommends_on_a_catalogue_it_never_saw_by_what_its_ids_say(tmp_path, model):
    """Zero-shot: the recommender learned "apple pie" -> "banana split" on its own items; on another catalogue,
    whose items have other ids and order, it recommends the item whose ID says what followed, untrained."""
    model.save(tmp_path / "model")
    params, order = _other_catalogue(tmp_path)
    out = tmp_path / "zero-shot"
    args = ["zero-shot", "--params", str(params), "--model", str(tmp_path / "model"), "--output", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    transferred = IDGenRecModel.load(out / "model")
    table = transferred.id_table
    word_of = {str(i + 1): WORDS[w] for i, w in enumerate(order)}
    assert sorted(table.item_ids) == sorted(word_of)
    assert [word_of[item] for item in table.item_ids] == table.textual_ids
    position = {WORDS.index(word): n for n, word in enumerate(table.textual_ids)}
    follows = [position[(WORDS.index(word) + 1) % len(WORDS)] for word in table.textual_ids]
    assert [items[0] for items in transferred.recommend([[n] for n in range(len(order))], k=1)] == follows
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["items"] == len(order) and metrics["test/seen_included/ndcg@1"] == 1.0


def test_zero_shot_refuses_items_without_text_and_writes_no_model(tmp_path, model):
    model.save(tmp_path / "model")
    params, _ = _other_catalogue(tmp_path, with_text=False)
    out = tmp_path / "zero-shot"
    result = CliRunner().invoke(app, ["zero-shot", "--params", str(params), "--model", str(tmp_path / "model"),
                                      "--output", str(out)])
    assert result.exit_code == 1
    assert "1 items have no text" in result.output and "['1']" in result.output
    assert not (out / "model").exists() and not (out / "metrics.json").exists()
