"""Backbones as configuration: pruned tokenizer, model contract, checkpoints, clear errors."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer

from idgenrec.backbone import (
    BackboneUnavailableError,
    build_seq2seq,
    build_tokenizer,
    load_seq2seq,
    save_seq2seq,
    vocabulary_corpus,
)
from idgenrec.backbone.vocabulary import minilm_folder
from idgenrec.config import BackboneConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.recommender.prompts import prompt_vocabulary_text

pytestmark = pytest.mark.model

TINY = BackboneConfig(profile="tiny", hidden_size=32, encoder_layers=1, decoder_layers=1)
CORPUS = [
    "title: Toy Story (1995); year: 1995; genres: Animation, Children's, Comedy",
    "title: Amélie (2001); year: 2001; genres: Comedy, Romance",
    "title: Sedu Ionic Ceramic Tourmaline Flat Iron; brand: Sedu; categories: Beauty, Hair Care",
    prompt_vocabulary_text(),
    "I do not know " + "long text " * 100 + "tailword",  # past the wheel's 128-token truncation
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TINY, CORPUS)


def _dataset() -> SequenceDataset:
    return SequenceDataset(
        name="toy", item_ids=["1", "2"], item_titles=["Toy Story", "Heat"],
        item_texts=["title: Toy Story; genres: Animation", "title: Heat; genres: Crime"],
        user_ids=["u"], sequences=[[0, 1, 0]],
    )


def test_vocabulary_corpus_covers_items_prompts_and_numbers():
    corpus = vocabulary_corpus(_dataset())
    joined = " ".join(corpus)
    for text in ["title: Toy Story; genres: Animation", "Heat", prompt_vocabulary_text(), "0 1 2 3 4 5 6 7 8 9"]:
        assert text in joined


def test_pruned_tokenizer_tokenizes_corpus_like_minilm(tokenizer):
    full = Tokenizer.from_file(str(minilm_folder() / "tokenizer.json"))
    full.no_padding()
    full.no_truncation()
    assert len(tokenizer) < 400  # vs 30,522
    for text in CORPUS:
        expected = full.encode(text, add_special_tokens=False).tokens
        assert tokenizer.convert_ids_to_tokens(tokenizer.encode(text, add_special_tokens=False)) == expected


def test_pruned_tokenizer_specials_and_numbers(tokenizer):
    assert tokenizer.convert_ids_to_tokens([tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.cls_token_id]) == [
        "[PAD]", "[SEP]", "[CLS]",
    ]
    for number in ["0", "7", "1234567890", "40213"]:
        ids = tokenizer.encode(number, add_special_tokens=False)
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == number
    # decode must not rewrite text ("do not" -> "don't" clean-up is off)
    assert tokenizer.decode(tokenizer.encode("i do not know", add_special_tokens=False)) == "i do not know"


def test_model_contract(tokenizer):
    generator = build_seq2seq(TINY, tokenizer, "generator", seed=0)
    recommender = build_seq2seq(TINY, tokenizer, "recommender", seed=1)
    embeddings = recommender.get_input_embeddings()
    assert generator.get_input_embeddings().num_embeddings == embeddings.num_embeddings == len(tokenizer)
    # encoder, decoder and LM head share one matrix
    assert recommender.get_output_embeddings().weight is embeddings.weight
    assert recommender.decoder.get_input_embeddings().weight is embeddings.weight
    assert recommender.config.decoder_start_token_id == tokenizer.cls_token_id
    batch = tokenizer(["toy story comedy", "amelie"], padding=True, return_tensors="pt")
    start = torch.full((2, 1), recommender.config.decoder_start_token_id)
    by_ids = recommender(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=start).logits
    assert by_ids.shape == (2, 1, len(tokenizer))
    # a one-hot "soft" token p @ E is exactly the real token: inputs_embeds path is the same model
    one_hot = torch.nn.functional.one_hot(batch.input_ids, len(tokenizer)).float()  # (B, S, V)
    by_embeds = recommender(
        inputs_embeds=one_hot @ embeddings.weight, attention_mask=batch.attention_mask, decoder_input_ids=start
    ).logits
    torch.testing.assert_close(by_embeds, by_ids)
    encoded = recommender.get_encoder()(inputs_embeds=one_hot @ embeddings.weight, attention_mask=batch.attention_mask)
    assert encoded.last_hidden_state.shape == (2, batch.input_ids.size(1), TINY.hidden_size)


def test_offline_profile_starts_from_minilm_rows(tokenizer):
    from safetensors.torch import load_file

    config = BackboneConfig(profile="offline", encoder_layers=1, decoder_layers=1)
    model = build_seq2seq(config, tokenizer, "recommender")
    minilm = load_file(str(minilm_folder() / "model.safetensors"))["embeddings.word_embeddings.weight"]
    vocab = (minilm_folder() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    story = tokenizer.convert_tokens_to_ids("story")
    torch.testing.assert_close(model.get_input_embeddings().weight[story], minilm[vocab.index("story")])
    assert len(model.encoder.encoder.layer) == 1 and len(model.decoder.bert.encoder.layer) == 1
    assert model.config.encoder.hidden_size == 384


def test_cross_attention_starts_as_a_copy_of_self_attention_in_the_recommender_only(tokenizer):
    config = BackboneConfig(profile="offline", encoder_layers=1, decoder_layers=2)  # the default: "self"
    recommender = build_seq2seq(config, tokenizer, "recommender")
    for layer, minilm in zip(recommender.decoder.bert.encoder.layer, ("0", "1")):
        for name, weight in layer.attention.state_dict().items():
            torch.testing.assert_close(layer.crossattention.state_dict()[name], weight, msg=f"layer {minilm}: {name}")
    query = "self.query.weight"
    generator = build_seq2seq(config, tokenizer, "generator")
    random_init = build_seq2seq(config.model_copy(update={"cross_attention_init": "random"}), tokenizer, "recommender")
    for model in (generator, random_init):  # random cross-attention, pretrained self-attention
        layer = model.decoder.bert.encoder.layer[0]
        assert not torch.equal(layer.crossattention.state_dict()[query], layer.attention.state_dict()[query])


def test_dropout_setting_reaches_every_dropout_and_survives_a_checkpoint(tokenizer, tmp_path):
    default = build_seq2seq(BackboneConfig(profile="offline", encoder_layers=1, decoder_layers=1), tokenizer, "recommender")
    assert {m.p for m in default.modules() if isinstance(m, torch.nn.Dropout)} == {0.1}  # MiniLM's own
    config = BackboneConfig(profile="offline", encoder_layers=1, decoder_layers=1, dropout=0.0)
    model = build_seq2seq(config, tokenizer, "recommender")
    save_seq2seq(model, tokenizer, tmp_path / "ckpt")
    loaded, _ = load_seq2seq(tmp_path / "ckpt")
    for built in (model, loaded):
        assert {m.p for m in built.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
        assert built.config.encoder.attention_probs_dropout_prob == 0.0


def test_save_load_round_trip(tokenizer, tmp_path):
    model = build_seq2seq(TINY, tokenizer, "generator")
    save_seq2seq(model, tokenizer, tmp_path / "ckpt")
    loaded, loaded_tokenizer = load_seq2seq(tmp_path / "ckpt")
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert loaded_tokenizer.eos_token_id == tokenizer.eos_token_id
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
    batch = tokenizer(["toy story"], return_tensors="pt")
    start = torch.tensor([[model.config.decoder_start_token_id]])
    torch.testing.assert_close(
        loaded(input_ids=batch.input_ids, decoder_input_ids=start).logits,
        model(input_ids=batch.input_ids, decoder_input_ids=start).logits,
    )


def test_saving_the_same_weights_again_writes_the_same_bytes(tokenizer, tmp_path):
    # safetensors' save_model wrote its alias map in a new order on every call, so DVC saw an
    # unchanged checkpoint as changed. Several saves make a lucky repeat of one order unlikely.
    model = build_seq2seq(TINY, tokenizer, "recommender")
    folders = [tmp_path / f"ckpt{k}" for k in range(6)]
    for folder in folders:
        save_seq2seq(model, tokenizer, folder)
    names = sorted(p.name for p in folders[0].iterdir())
    assert "model.safetensors" in names
    for folder in folders[1:]:
        assert sorted(p.name for p in folder.iterdir()) == names
        for name in names:
            assert (folder / name).read_bytes() == (folders[0] / name).read_bytes(), f"{folder.name}/{name} differs"
    loaded, _ = load_seq2seq(folders[-1])
    assert loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor, msg=name)


def test_load_errors_name_the_folder(tokenizer, tmp_path):
    with pytest.raises(BackboneUnavailableError, match="nowhere.*missing"):
        load_seq2seq(tmp_path / "nowhere")
    save_seq2seq(build_seq2seq(TINY, tokenizer, "generator"), tokenizer, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"not weights")
    with pytest.raises(BackboneUnavailableError, match="ckpt.*corrupt"):
        load_seq2seq(tmp_path / "ckpt")


def test_unavailable_hub_checkpoint_fails_at_once_with_advice(tokenizer):
    config = BackboneConfig(profile="paper", recommender_checkpoint="no-such-org/no-such-model", generator_checkpoint="nope/x")
    with pytest.raises(BackboneUnavailableError, match="no-such-org/no-such-model.*on disk.*HF_HUB_OFFLINE"):
        build_tokenizer(config, CORPUS)
    with pytest.raises(BackboneUnavailableError, match="nope/x"):
        build_seq2seq(config, tokenizer, "generator")


def test_tiny_model_trains_quickly(tokenizer):
    from idgenrec.config import WarmupConfig
    from idgenrec.ids.warmup import train_keyword_phrases

    model = build_seq2seq(TINY, tokenizer, "generator")
    pairs = [(CORPUS[0], "toy story animation"), (CORPUS[1], "amelie comedy"), (CORPUS[2], "sedu ionic ceramic")] * 4
    result = train_keyword_phrases(
        model, tokenizer, pairs, WarmupConfig(epochs=10, batch_size=12, learning_rate=3e-3, bf16=False), 64, progress=False
    )
    assert result["steps"] == 10
    assert result["final_loss"] < result["first_loss"]


@pytest.mark.parametrize("has_kernels", [True, False])
def test_cpu_bf16_autocast_only_where_the_cpu_has_bf16_kernels(monkeypatch, caplog, has_kernels):
    """Emulated bf16 ran a matmul ~90x slower than fp32 on an AVX2-only CPU: fall back to fp32 there."""
    from idgenrec.backbone import seq2seq

    monkeypatch.setattr(seq2seq, "cpu_has_bf16_kernels", lambda: has_kernels)
    seq2seq._warn_bf16_unavailable.cache_clear()
    with caplog.at_level("WARNING", logger="idgenrec"), seq2seq.autocast(torch.device("cpu"), True):
        assert torch.is_autocast_enabled("cpu") == has_kernels
        product = torch.ones(4, 4) @ torch.ones(4, 4)
    assert product.dtype == (torch.bfloat16 if has_kernels else torch.float32)
    assert ("no bf16 kernels" in caplog.text) == (not has_kernels)
    with seq2seq.autocast(torch.device("cpu"), False):
        assert not torch.is_autocast_enabled("cpu")
    assert seq2seq.training_precision(torch.device("cpu"), True) == ("bf16" if has_kernels else "fp32")
    assert seq2seq.training_precision(torch.device("cpu"), False) == "fp32"


def test_training_attention_is_eager_on_cpu_same_loss_and_given_back(tokenizer):
    """A CPU training step runs eager attention (faster than SDPA's kernels there) with the same loss;
    the model gets its SDPA attention back afterwards, also when the step fails."""
    from idgenrec.backbone import training_kernels

    model = build_seq2seq(TINY, tokenizer, "recommender").eval()
    batch = tokenizer(CORPUS[:3], padding=True, return_tensors="pt")  # rows of different lengths: padding masked
    decoder_input_ids = torch.full((3, 4), model.config.decoder_start_token_id)

    def loss():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=decoder_input_ids).logits
        return logits.logsumexp(-1).mean()

    reference = loss()
    seen = []
    with training_kernels(torch.device("cpu"), model):
        seen.append(model.config.encoder._attn_implementation)
        torch.testing.assert_close(loss(), reference, rtol=1e-5, atol=1e-5)
    assert seen == ["eager"] and model.config.encoder._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError), training_kernels(torch.device("cpu"), model):
        raise RuntimeError("step failed")
    assert (model.config.encoder._attn_implementation, model.config.decoder._attn_implementation) == ("sdpa", "sdpa")
