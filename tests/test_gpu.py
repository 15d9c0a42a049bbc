"""The whole method on a CUDA device: skipped where there is none (CI), run on GPU machines.

CPU tests cannot catch a tensor left on the host while the model sits on the GPU; these do.
"""

from __future__ import annotations

import pytest
import torch

from idgenrec.config import PhaseConfig
from test_recommender import THREE_PHASES, WORDS, _tiny_params, planted_dataset, warm_generator_and_ids

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


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
