"""What a recommender training step costs at each depth: the ratio that sizes a schedule.

A shallower backbone trains more epochs in the same time; to compare depths at the same
training compute, a schedule's recommender epochs are scaled by the measured ratio of
steps/s. Every depth trains the same real ML-100k batches (title IDs, the training loop's
own batching and step, bf16 where the CPU has kernels), each from its own fresh weights;
depths alternate over ``--rounds`` so that a host slowing down mid-run hits all alike.

    python -m benchmarks.layer_cost --prepared artifacts/prepared --out benchmarks/results/layer-cost

Writes ``layer-cost.json`` and ``layer-cost.md``. No assertions: a benchmark reports.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path

import torch

import idgenrec  # noqa: F401
from idgenrec.atomic import atomic_write, write_json
from idgenrec.backbone import build_seq2seq
from benchmarks.common import matmul_peaks, output_path, render_peaks, title_id_batches, training_throughput


def steps_per_second(params, tokenizer, batches, depth: tuple[int, int]) -> float:
    """Timed optimisation steps of a fresh ``depth`` = (encoder, decoder) layers recommender.

    ``speed.training_throughput`` times the training loop's own step; every batch is full, so
    steps/s is its samples/s over the batch size.
    """
    backbone = params.backbone.model_copy(update={"encoder_layers": depth[0], "decoder_layers": depth[1]})
    model = build_seq2seq(backbone, tokenizer, "recommender", seed=0)
    throughput = training_throughput(model, batches, params.training.bf16, params.training)
    return throughput["samples_per_s"] / params.training.batch_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--depths", nargs="+", default=["2x2", "1x1"], help="encoder x decoder layers, e.g. 2x2 1x1")
    parser.add_argument("--steps", type=int, default=60, help="Timed steps per depth and round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True, help="Output path without extension.")
    args = parser.parse_args()

    params, _, tokenizer, batches = title_id_batches(args.params, args.prepared, args.steps)
    config = params.training
    depths = [tuple(int(n) for n in depth.split("x")) for depth in args.depths]
    rates: dict[str, list[float]] = {depth: [] for depth in args.depths}
    for _ in range(args.rounds):
        for name, depth in zip(args.depths, depths):
            rates[name].append(steps_per_second(params, tokenizer, batches, depth))
            print(f"{name}: {rates[name][-1]:.2f} steps/s", flush=True)
    base = args.depths[0]
    results = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "peak_flops": matmul_peaks(),
        "batch_size": config.batch_size, "history_length": config.history_length, "bf16": config.bf16,
        "steps": args.steps, "rounds": args.rounds,
        "depths": {name: {"steps_per_s": values, "median": statistics.median(values),
                          "ratio_to_" + base: statistics.median(values) / statistics.median(rates[base])}
                   for name, values in rates.items()},
    }
    write_json(output_path(args.out, ".json"), results)
    lines = [f"### Recommender step cost by depth (ml-100k, batch {config.batch_size}, history {config.history_length})", "",
             f"torch {results['machine']['torch']}, {results['machine']['threads']} threads; matmul peak "
             f"{render_peaks(results['peak_flops'])}. Median of {args.rounds} alternating rounds of {args.steps} steps.", "",
             f"| encoder x decoder layers | steps/s (each round) | median | vs {base} |", "|---|---|---|---|"]
    for name, row in results["depths"].items():
        lines.append(f"| {name} | {', '.join(f'{v:.2f}' for v in row['steps_per_s'])} | {row['median']:.2f} "
                     f"| {row['ratio_to_' + base]:.2f}x |")
    with atomic_write(output_path(args.out, ".md")) as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
