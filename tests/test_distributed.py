"""Training on several processes: each trains its share of every batch, and together they make one process's step."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from idgenrec.config import ConfigError, Params, RuntimeConfig, load_params
from idgenrec.distributed import Ranks, token_share
from idgenrec.recommender.samples import collate
from idgenrec.recommender.sequences import SequenceEncoder, TrainingWindow, collate_sequences
from idgenrec.recommender.training import batch_loss, batch_share
from test_causal import TINY_CAUSAL
from test_recommender import THREE_PHASES, _tiny_params, planted_dataset

pytestmark = pytest.mark.model


def test_shares_cover_every_row_once_and_differ_by_at_most_one():
    for count in (0, 1, 2, 7, 16):
        for world in (1, 2, 3):
            shares = [Ranks(rank, world).share(count) for rank in range(world)]
            rows = [row for share in shares for row in range(count)[share]]
            assert rows == list(range(count))
            sizes = [share.stop - share.start for share in shares]
            assert max(sizes) - min(sizes) <= 1


def _gradients(model, loss) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def _shared_gradients(model, batch, config, world: int) -> tuple[list[torch.Tensor], float]:
    """The gradients and loss that ``world`` processes would sum, computed one share after another."""
    total_grads, total_loss = None, 0.0
    for rank in range(world):
        part, weight = batch_share(batch, Ranks(rank, world))
        if part is None:
            continue
        loss = batch_loss(model, part, torch.device("cpu"), config) * weight
        grads = _gradients(model, loss)
        total_loss += float(loss.detach())
        total_grads = grads if total_grads is None else [a + b for a, b in zip(total_grads, grads)]
    return total_grads, total_loss


@pytest.mark.parametrize("world", [2, 3])
def test_causal_shares_sum_to_the_whole_batch_gradient(world):
    from idgenrec.backbone import build_tokenizer, vocabulary_corpus
    from idgenrec.backbone.causal import build_causal
    from idgenrec.config import TrainingConfig
    from test_recommender import WORDS

    dataset = planted_dataset()
    tokenizer = build_tokenizer(TINY_CAUSAL, vocabulary_corpus(dataset))
    model = build_causal(TINY_CAUSAL, tokenizer, seed=0)
    item_tokens = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in WORDS]
    encoder = SequenceEncoder(tokenizer, item_tokens, history_length=6)
    # Windows of different lengths: the shares hold different numbers of target tokens.
    windows = [TrainingWindow(user=0, items=tuple(range(n)), first_target=1) for n in (2, 6, 3, 5, 4)]
    batch = collate_sequences([encoder.encode_window(w) for w in windows], tokenizer.pad_token_id)
    config = TrainingConfig(bf16=False)
    whole_loss = batch_loss(model, batch, torch.device("cpu"), config)
    whole = _gradients(model, whole_loss)
    summed, loss = _shared_gradients(model, batch, config, world)
    assert loss == pytest.approx(float(whole_loss.detach()), rel=1e-5)
    for a, b in zip(whole, summed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_seq2seq_shares_with_later_targets_sum_to_the_whole_batch_gradient():
    from idgenrec.backbone import build_seq2seq, build_tokenizer, vocabulary_corpus
    from idgenrec.recommender.samples import EncodedPrompt
    from test_recommender import TINY, WORDS

    dataset = planted_dataset()
    tokenizer = build_tokenizer(TINY, vocabulary_corpus(dataset))
    model = build_seq2seq(TINY, tokenizer, "recommender", seed=0)

    words = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in WORDS]
    eos = tokenizer.sep_token_id
    prompts = [EncodedPrompt(input_ids=[tokenizer.cls_token_id, *sum(words[i : i + 1 + i % 3], []), eos], item_spans=[])
               for i in range(5)]
    targets_per_prompt = [[words[1]], [words[2], words[0]], [words[3] + words[4]], [words[0], words[2]], [words[4]]]
    targets_per_prompt = [[[*t, eos] for t in ts] for ts in targets_per_prompt]
    targets = [t for ts in targets_per_prompt for t in ts]
    rows = [p for p, ts in enumerate(targets_per_prompt) for _ in ts]
    batch = collate(prompts, targets, tokenizer.pad_token_id, model.config.decoder_start_token_id, rows)
    from idgenrec.config import TrainingConfig

    config = TrainingConfig(bf16=False)
    whole_loss = batch_loss(model, batch, torch.device("cpu"), config)
    whole = _gradients(model, whole_loss)
    summed, loss = _shared_gradients(model, batch, config, 2)
    assert loss == pytest.approx(float(whole_loss.detach()), rel=1e-5)
    for a, b in zip(whole, summed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_token_share_weighs_a_share_by_its_targets():
    labels = torch.tensor([[1, 2, -100], [3, -100, -100], [4, 5, 6]])
    assert token_share(labels, slice(0, 1)) == pytest.approx(2 / 6)
    assert token_share(labels, slice(1, 3)) == pytest.approx(4 / 6)


def test_processes_are_a_validated_setting(tmp_path):
    assert Params().runtime.processes == 1
    path = tmp_path / "params.yaml"
    path.write_text("runtime:\n  processes: 0\n")
    with pytest.raises(ConfigError, match="runtime.processes"):
        load_params(path)
    with pytest.raises(ValueError, match="seen_unlikelihood needs runtime.processes 1"):
        Params(runtime=RuntimeConfig(processes=2), training=Params().training.model_copy(update={"seen_unlikelihood": 0.5}))


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_two_gloo_processes_train_like_one(tmp_path):
    """Warm-up and alternating training (recommender, ID phase, regenerated IDs, re-fit) on 2 processes
    through the stage functions, as `dvc repro` and the flow call them, against 1 process."""
    from idgenrec import stages
    from idgenrec.layout import LAYOUT

    dataset = planted_dataset()
    tiny = _tiny_params(THREE_PHASES)
    # fp32 on every CPU: split batches sum their gradients in another order, which fp32 keeps within the
    # tolerances below and bf16 autocast (on CPUs with bf16 kernels) does not
    one = Params(backbone=TINY_CAUSAL, warmup=tiny.warmup.model_copy(update={"bf16": False}), ids=tiny.ids,
                 training=tiny.training.model_copy(update={"history_length": 5, "window_stride": 4, "batch_size": 8,
                                                           "bf16": False}))
    two = one.model_copy(update={"runtime": RuntimeConfig(processes=2)})
    dataset.save(tmp_path / "prepared")
    runs = {}
    for name, params in (("one", one), ("two", two)):
        files = LAYOUT.with_paths(prepared=tmp_path / "prepared").under(tmp_path / name).with_paths(
            prepared=tmp_path / "prepared")
        warm = stages.warm_up(params, files, progress=False)
        stages.generate_ids(params, files, progress=False)
        state = stages.train(params, files)
        runs[name] = (files, warm, state)

    (files1, warm1, state1), (files2, warm2, state2) = runs["one"], runs["two"]
    # The warm-up: the same losses and generator.
    assert warm2["final_loss"] == pytest.approx(warm1["final_loss"], abs=1e-4)
    for key, value in _weights(files1.generator).items():
        torch.testing.assert_close(_weights(files2.generator)[key], value, rtol=1e-4, atol=1e-5)
    # Training: the same records (losses, validation scores, selection), IDs and final weights.
    assert [r["phase"] for r in state2.records] == ["recommender", "recommender", "ids", "recommender"]
    assert (state2.best_phase, state2.best_epoch) == (state1.best_phase, state1.best_epoch)
    for r1, r2 in zip(state1.records, state2.records):
        for key in r1:
            if key.startswith(("valid_", "train_loss")):
                assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-5), (r1["phase_index"], key)
    for round_ids in ("ids-00.tsv", "ids-02.tsv"):
        assert (files2.rounds / round_ids).read_text() == (files1.rounds / round_ids).read_text()
    w1, w2 = _weights(files1.workdir / "best" / "recommender"), _weights(files2.workdir / "best" / "recommender")
    for key, value in w1.items():  # the first phase's selected model
        torch.testing.assert_close(w2[key], value, rtol=1e-4, atol=1e-5)
    for part in ("recommender", "generator"):
        w1, w2 = _weights(files1.workdir / "current" / part), _weights(files2.workdir / "current" / part)
        for key, value in w1.items():
            torch.testing.assert_close(w2[key], value, rtol=1e-4, atol=1e-5)
    # Rank 0 alone wrote the curve and the metrics (one complete JSON each).
    assert len(json.loads(files2.training_curve.read_text())) == len(state2.records)
    assert json.loads(files2.warmup_metrics.read_text())["steps"] == warm1["steps"]
