"""What the CPU training-step changes buy: each against the code before it, in one process.

Recommender (the ``params.yaml`` backbone on real ML-100k batches, title IDs, the training
loop's own step through ``speed.training_throughput``), four variants of the same step:

- before: SDPA's math attention kernel and torch's unfused AdamW (what training ran before these changes);
- eager attention: ``backbone.training_kernels``' eager attention, unfused AdamW;
- fused AdamW: the math kernel, ``optim.adamw``;
- library: both (what training runs now).

SASRec (the ``params.yaml`` baseline, real ML-100k): a training epoch with torch's dropout (its
CPU mask comes from ``bernoulli_``) against the library's ``sasrec.dropout``, the same network
otherwise. Variants alternate over ``--rounds``, each from the same fresh weights, so a host
slowing down mid-run hits all alike.

    python -m benchmarks.training_step --prepared artifacts/prepared --out benchmarks/results/training-step

Writes ``training-step.json`` and ``.md``. No assertions: a benchmark reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import atomic_write, write_json
from idgenrec.backbone import build_seq2seq, training_kernels
from idgenrec.models import sasrec
from idgenrec.optim import adamw
from idgenrec.recommender import training
from benchmarks.common import matmul_peaks, output_path, patched, render_peaks, title_id_batches, training_throughput


def math_kernel(device: torch.device, *models) -> contextlib.AbstractContextManager:
    """The training attention before: SDPA restricted to its math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def unfused_adamw(parameters, learning_rate, weight_decay, eps=1e-8) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, eps=eps)


RECOMMENDER_VARIANTS = {
    "before": (math_kernel, unfused_adamw),
    "eager attention": (training_kernels, unfused_adamw),
    "fused AdamW": (math_kernel, adamw),
    "library": (training_kernels, adamw),
}
SASREC_VARIANTS = {"torch dropout": lambda x, p, training: F.dropout(x, p, training), "library": sasrec.dropout}


def recommender_steps_per_second(params, tokenizer, batches, variant: str) -> float:
    kernels, optimizer = RECOMMENDER_VARIANTS[variant]
    model = build_seq2seq(params.backbone, tokenizer, "recommender", seed=0)
    with patched(training, training_kernels=kernels, adamw=optimizer):
        throughput = training_throughput(model, batches, params.training.bf16, params.training)
    return throughput["samples_per_s"] / params.training.batch_size


def sasrec_epoch_seconds(dataset, config, variant: str, epochs: int) -> float:
    """Median seconds of ``epochs`` training epochs (no validation) from the same fresh weights."""
    torch.manual_seed(config.seed)
    model = sasrec.SASRecRecommender(sasrec.SASRecNetwork(dataset.num_items, config), config, dataset.num_items, torch.device("cpu"))
    optimizer = adamw(model.network.parameters(), config.learning_rate, config.weight_decay)
    train = [dataset.train_sequence(user) for user in range(dataset.num_users)]
    rng = np.random.default_rng(config.seed)
    seconds = []
    with patched(sasrec, dropout=SASREC_VARIANTS[variant]):
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            model._train_epoch(train, optimizer, rng, epoch, progress=False)
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def render_markdown(results: dict) -> str:
    depth = results["backbone"]
    return "\n".join([
        f"### Training step on CPU: each change against the code before it (ml-100k, "
        f"{depth['encoder_layers']}+{depth['decoder_layers']} layers, batch {results['batch_size']})", "",
        f"torch {results['machine']['torch']}, {results['machine']['threads']} threads; matmul peak "
        f"{render_peaks(results['peak_flops'])}. Medians of {results['rounds']} alternating rounds, one process.", "",
        "| recommender step | steps/s | speed-up |", "|---|---|---|",
        *(f"| {v} | {results['recommender'][v]['median']:.2f} | {results['recommender'][v]['speedup']:.2f}x |" for v in RECOMMENDER_VARIANTS),
        "", f"| SASRec epoch ({results['sasrec_epochs']} timed per round) | seconds | speed-up |", "|---|---|---|",
        *(f"| {v} | {results['sasrec'][v]['median']:.2f} | {results['sasrec'][v]['speedup']:.2f}x |" for v in SASREC_VARIANTS),
        "", f"`{results['command']}`", "",
    ])


def write_markdown(results: dict, out: Path) -> None:
    with atomic_write(output_path(out, ".md")) as handle:
        handle.write(render_markdown(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=50, help="Timed recommender steps per variant and round.")
    parser.add_argument("--sasrec-epochs", type=int, default=3, help="Timed SASRec epochs per variant and round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True, help="Output path without extension.")
    parser.add_argument("--render", action="store_true", help="Rewrite the .md from the .json without measuring.")
    args = parser.parse_args()
    if args.render:
        write_markdown(json.loads(output_path(args.out, ".json").read_text()), args.out)
        return

    params, dataset, tokenizer, batches = title_id_batches(args.params, args.prepared, args.steps)
    config = params.training

    steps: dict[str, list[float]] = {variant: [] for variant in RECOMMENDER_VARIANTS}
    epochs: dict[str, list[float]] = {variant: [] for variant in SASREC_VARIANTS}
    for _ in range(args.rounds):
        for variant in RECOMMENDER_VARIANTS:
            steps[variant].append(recommender_steps_per_second(params, tokenizer, batches, variant))
            print(f"recommender, {variant}: {steps[variant][-1]:.2f} steps/s", flush=True)
        for variant in SASREC_VARIANTS:
            epochs[variant].append(sasrec_epoch_seconds(dataset, params.sasrec, variant, args.sasrec_epochs))
            print(f"sasrec, {variant}: {epochs[variant][-1]:.2f} s/epoch", flush=True)

    before_steps = statistics.median(steps["before"])
    before_epoch = statistics.median(epochs["torch dropout"])
    results = {
        "command": "python -m benchmarks.training_step " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "render"),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "peak_flops": matmul_peaks(),
        "backbone": {"encoder_layers": params.backbone.encoder_layers, "decoder_layers": params.backbone.decoder_layers},
        "batch_size": config.batch_size, "bf16": config.bf16, "steps": args.steps, "rounds": args.rounds,
        "sasrec_epochs": args.sasrec_epochs,
        "recommender": {variant: {"steps_per_s": values, "median": statistics.median(values),
                                  "speedup": statistics.median(values) / before_steps}
                        for variant, values in steps.items()},
        "sasrec": {variant: {"seconds_per_epoch": values, "median": statistics.median(values),
                             "speedup": before_epoch / statistics.median(values)}
                   for variant, values in epochs.items()},
    }
    write_json(output_path(args.out, ".json"), results)
    write_markdown(results, args.out)
    print(render_markdown(results))


if __name__ == "__main__":
    main()
