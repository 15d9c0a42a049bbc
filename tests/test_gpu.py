"""The whole method on a CUDA device: skipped where there is none (CI), run on GPU machines.

CPU tests cannot catch a tensor left on the host while the model sits on the GPU; these do.
"""

from __future__ import annotations

import pytest
import torch

from idgenrec.config import PhaseConfig
from test_recommender import THREE_PHASES, WORDS, _tiny_params, planted_dataset, warm_generator_and_ids

pytestmark = pytest.mark.gpu  # skipped without a CUDA device (tests/conftest.py)


def test_textual_ids_on_the_gpu_equal_those_on_the_cpu(tmp_path):
    from idgenrec.backbone import load_seq2seq
    from idgenrec.ids import make_id_table, warm_up_generator

    dataset = planted_dataset()
    params = _tiny_params([PhaseConfig(phase="recommender", epochs=1, learning_rate=3e-3)])
    warm_up_generator(dataset, params, tmp_path / "generator")
    generator, tokenizer = load_seq2seq(tmp_path / "generator")
    on_cpu, _ = make_id_table("learned", dataset, generator.cpu(), tokenizer, params.ids)
    on_gpu, _ = make_id_table("learned", dataset, generator.cuda(), tokenizer, params.ids)
    assert on_gpu.textual_ids == on_cpu.textual_ids
    assert len(set(on_gpu.textual_ids)) == dataset.num_items


def test_alternating_training_and_constrained_decoding_run_on_the_gpu(tmp_path):
    from idgenrec.recommender import alternating
    from idgenrec.recommender.model import IDGenRecModel

    dataset = planted_dataset()
    params = _tiny_params(THREE_PHASES)
    params = params.model_copy(update={"training": params.training.model_copy(update={"bf16": True})})
    warm_generator_and_ids(tmp_path, dataset, params, device="cuda")
    state = alternating.train(params, dataset, tmp_path / "generator", tmp_path / "ids.tsv", tmp_path / "run")
    assert state.completed_phases == 3 and state.best_score is not None
    model = IDGenRecModel.load(tmp_path / "run" / alternating.BEST, device="cuda")
    assert model.device.type == "cuda"
    recommended = model.recommend([dataset.sequences[0][:-1], dataset.sequences[1][:-1]], k=3)
    assert all(len(items) == 3 and all(0 <= item < len(WORDS) for item in items) for items in recommended)


def test_bf16_on_the_gpu_keeps_attention_off_cudnn():
    """cuDNN attention plans every new shape (~5 ms of CPU each): 9.5x slower training steps here."""
    from idgenrec.backbone import autocast

    with autocast(torch.device("cuda"), True):
        assert torch.is_autocast_enabled("cuda")
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()


def test_the_gpus_bf16_attention_keeps_padding_out_like_the_cpu():
    """The GPU's bf16 attention kernels (flash / memory-efficient) must mask padding as the CPU does.

    A batch of prompts of different lengths through pretrained MiniLM layers (where attention,
    unlike a random tiny model's, is not near uniform): the GPU's bf16 logits must stay as close
    to the CPU's fp32 ones as the CPU's own bf16 logits are (2x in mean, 4x at most). On the CPU,
    dropping the padding mask moves the logits past those bounds (checked first, so the
    comparison can fail).
    """
    import contextlib
    import dataclasses
    import random

    from idgenrec.backbone import autocast, build_seq2seq, build_tokenizer, vocabulary_corpus
    from idgenrec.config import BackboneConfig
    from idgenrec.recommender.samples import PromptEncoder, collate, encode_samples, training_samples

    config = BackboneConfig(profile="offline", encoder_layers=1, decoder_layers=1)
    dataset = planted_dataset()
    tokenizer = build_tokenizer(config, vocabulary_corpus(dataset))
    recommender = build_seq2seq(config, tokenizer, "recommender", seed=0).eval()
    encoder = PromptEncoder(tokenizer, [tokenizer(w, add_special_tokens=False)["input_ids"] for w in WORDS], history_length=5)
    samples = training_samples([dataset.train_sequence(u) for u in range(dataset.num_users)], 5)[:32]
    prompts = encode_samples(encoder, samples, random.Random(0), "first")
    batch = collate(prompts, [encoder.target(s.target) for s in samples], tokenizer.pad_token_id,
                    recommender.config.decoder_start_token_id)
    assert len({len(p.input_ids) for p in prompts}) > 1, "the batch must carry padding"
    scored = batch.labels != -100

    def logits(batch, device: str, precision) -> torch.Tensor:
        model = recommender.to(device)
        with torch.no_grad(), precision:
            out = model(input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device),
                        decoder_input_ids=batch.decoder_input_ids.to(device)).logits
        return out.float().cpu()[scored]

    fp32 = contextlib.nullcontext()
    reference = logits(batch, "cpu", fp32)
    # bf16's own error, from torch's CPU autocast whether or not this CPU has bf16 kernels: 0.0047 mean, 0.025 max
    rounding = (logits(batch, "cpu", torch.autocast("cpu", dtype=torch.bfloat16)) - reference).abs()
    mean_bound, max_bound = 2 * rounding.mean(), 4 * rounding.max()
    unmasked = logits(dataclasses.replace(batch, attention_mask=torch.ones_like(batch.attention_mask)), "cpu", fp32)
    lost_mask = (unmasked - reference).abs()  # 0.0176 mean, 0.25 max
    assert lost_mask.mean() > mean_bound or lost_mask.max() > max_bound
    gap = (logits(batch, "cuda", autocast(torch.device("cuda"), True)) - reference).abs()
    assert gap.mean() < mean_bound and gap.max() < max_bound, (gap.mean().item(), gap.max().item())
