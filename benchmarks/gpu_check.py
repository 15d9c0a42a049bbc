"""GPU costs of a profile's model, each variant timed in this one process (ratios, not absolutes).

- recommender training steps: bf16 as the library runs it (flash / memory-efficient attention),
  bf16 with PyTorch's own attention choice (cuDNN on Hopper), and fp32;
- recommendation decoding for a batch of users, bf16 both ways;
- textual-ID generation for the whole catalogue by a briefly warmed-up generator, twice, with
  the top functions of the first run by cumulative time (cProfile).

    python -m benchmarks.gpu_check --params profiles/paper-offline.yaml --prepared artifacts/prepared \
        --out benchmarks/results/gpu-h200

Title IDs feed the recommender (no generator needed); the catalogue's item texts feed the
ID generator. Needs a CUDA device.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import random
import sys
import time
from pathlib import Path

import torch

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import atomic_write, write_json
from idgenrec.backbone import build_seq2seq, prompt_token_limit
from idgenrec.recommender.model import DecodingSettings, IDGenRecModel
from idgenrec.recommender.samples import PromptEncoder, training_samples
from idgenrec.recommender.training import iterate_batches, make_optimizer, optimisation_step
from benchmarks.common import output_path, patched, title_id_setup


def cuda_seconds(work) -> float:
    """Wall seconds of ``work`` with the GPU's queue drained before and after."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    work()
    sync()
    return time.perf_counter() - start


def recommender_setup(params_path: Path, prepared: Path, device: torch.device):
    """(params, dataset, tokenizer, title-ID table, a fresh recommender on ``device``, its prompt encoder, training samples)."""
    params, dataset, tokenizer, table, _ = title_id_setup(params_path, prepared)
    config = params.training
    model = build_seq2seq(params.backbone, tokenizer, "recommender", seed=0).to(device)
    encoder = PromptEncoder(tokenizer, table.token_ids(tokenizer), config.history_length, prompt_token_limit(model))
    samples = training_samples([dataset.train_sequence(u) for u in range(dataset.num_users)], config.history_length)
    return params, dataset, tokenizer, table, model, encoder, samples


@contextlib.contextmanager
def pytorch_attention_choice():
    """bf16 autocast without the library's attention restriction (what PyTorch picks by itself)."""
    def plain_autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
        return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()

    # the two callers of idgenrec.backbone.autocast that this script times
    with patched(sys.modules["idgenrec.recommender.training"], autocast=plain_autocast), \
            patched(sys.modules["idgenrec.recommender.model"], autocast=plain_autocast):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("profiles/paper-offline.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--users", type=int, default=256)
    parser.add_argument("--device", default="cuda", help="cpu only to try the script out")
    parser.add_argument("--out", type=Path, required=True, help="Output path without extension (.json and .md).")
    args = parser.parse_args()
    device = torch.device(args.device)
    params, dataset, tokenizer, table, model, encoder, samples = recommender_setup(args.params, args.prepared, device)
    config = params.training
    results: dict = {"command": " ".join(sys.argv), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
                     "backbone": params.backbone.model_dump(), "history_length": config.history_length,
                     "batch_size": config.batch_size}

    # -- training steps
    batches = list(iterate_batches(encoder, samples, list(range(config.batch_size * (args.steps + 3))), config,
                                   random.Random(0), tokenizer.pad_token_id, model.config.decoder_start_token_id))
    steps: dict[str, float] = {}

    def time_steps(label: str, bf16: bool) -> None:
        settings = config.model_copy(update={"bf16": bf16})
        optimizer, schedule = make_optimizer(model.parameters(), 1e-4, settings, len(batches))
        model.train()
        for batch in batches[:3]:  # warm-up: kernels chosen, memory pooled
            optimisation_step(model, batch, optimizer, schedule, device, settings)
        seconds = cuda_seconds(lambda: [optimisation_step(model, b, optimizer, schedule, device, settings) for b in batches[3:]])
        steps[label] = 1000 * seconds / (len(batches) - 3)
        print(f"training {label}: {steps[label]:.1f} ms/step", flush=True)

    time_steps("bf16 (library: flash / efficient attention)", True)
    with pytorch_attention_choice():
        time_steps("bf16 (PyTorch's choice: cuDNN attention)", True)
    time_steps("fp32", False)
    results["train_ms_per_step"] = steps
    results["train_samples_per_s"] = {k: 1000 * config.batch_size / v for k, v in steps.items()}

    # -- decoding
    model.eval()
    recommender = IDGenRecModel(model, tokenizer, table, DecodingSettings(config.history_length, config.num_beams, bf16=True))
    histories = [dataset.train_sequence(u) for u in range(min(args.users, dataset.num_users))]
    decode: dict[str, float] = {}
    recommender.recommend_with_scores(histories[:8], 10)  # warm-up
    decode["bf16 (library)"] = cuda_seconds(lambda: recommender.recommend_with_scores(histories, 10))
    with pytorch_attention_choice():
        recommender.recommend_with_scores(histories[:8], 10)
        decode["bf16 (PyTorch's choice: cuDNN attention)"] = cuda_seconds(lambda: recommender.recommend_with_scores(histories, 10))
    results["decode_users_per_s"] = {k: len(histories) / v for k, v in decode.items()}
    print("decoding", results["decode_users_per_s"], flush=True)

    # -- textual-ID generation by a warmed-up generator
    from idgenrec.backbone import load_seq2seq
    from idgenrec.ids import make_id_table, warm_up_generator

    generator_dir = Path("/tmp/gpu-check-generator")
    quick = params.model_copy(update={"warmup": params.warmup.model_copy(update={"epochs": 1.0})})
    results["warmup_s"] = cuda_seconds(lambda: warm_up_generator(dataset, quick, generator_dir))
    generator, generator_tokenizer = load_seq2seq(generator_dir)
    generator.to(device)
    profiler = cProfile.Profile()
    profiler.enable()
    first = cuda_seconds(lambda: make_id_table("learned", dataset, generator, generator_tokenizer, params.ids))
    profiler.disable()
    second = cuda_seconds(lambda: make_id_table("learned", dataset, generator, generator_tokenizer, params.ids))
    results["ids_s"] = {"first": first, "second": second, "items": dataset.num_items}
    report = io.StringIO()
    pstats.Stats(profiler, stream=report).sort_stats("cumulative").print_stats(25)
    results["ids_profile_top"] = report.getvalue()
    print(f"IDs: first {first:.1f}s, second {second:.1f}s for {dataset.num_items} items", flush=True)

    write_json(output_path(args.out, ".json"), results)
    lines = [f"# GPU check: {results['device']}", "", f"`{results['command']}` (torch {results['torch']})", "",
             "| training step | ms | samples/s |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {results['train_samples_per_s'][k]:.0f} |" for k, v in steps.items()]
    lines += ["", "| decoding | users/s |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in results["decode_users_per_s"].items()]
    lines += ["", f"Textual IDs for {dataset.num_items} items: {first:.1f} s first, {second:.1f} s second; "
              f"generator warm-up of 1 epoch: {results['warmup_s']:.1f} s.", ""]
    with atomic_write(output_path(args.out, ".md")) as handle:
        handle.write("\n".join(lines))


if __name__ == "__main__":
    main()
